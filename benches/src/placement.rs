//! CPU placement of the bench process and the daemon (sched_setaffinity), for the benches
//! that compare "daemon on another core" with "daemon and client on one core".
//!
//! On Linux, affinity is per thread and inherited by threads created afterwards. So the
//! bench pins its main thread *before* it creates the trace2e client (whose gRPC runtime
//! threads then inherit the mask), and the daemon is pinned between `fork` and `exec`, so
//! that every thread it starts inherits the mask too.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A set of CPUs (indices below 64, plenty for the machines these benches target).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CpuSet {
    /// Bit `i` set: CPU `i` is in the set.
    bits: u64,
}

impl CpuSet {
    /// The set holding only `cpu`.
    pub fn single(cpu: usize) -> CpuSet {
        assert!(cpu < 64, "CPU index {cpu} out of range");
        CpuSet { bits: 1 << cpu }
    }

    /// The CPUs in the set, ascending.
    pub fn cpus(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.bits & (1 << i) != 0)
    }

    /// The CPUs the calling thread may run on.
    pub fn of_current_thread() -> io::Result<CpuSet> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut bits = 0u64;
        for cpu in 0..64 {
            // SAFETY: `cpu` is below CPU_SETSIZE (1024) and `set` is initialized.
            if unsafe { libc::CPU_ISSET(cpu, &set) } {
                bits |= 1 << cpu;
            }
        }
        Ok(CpuSet { bits })
    }

    fn to_libc(self) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in self.cpus() {
            // SAFETY: `cpu` < 64 < CPU_SETSIZE, `set` is a valid cpu_set_t.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    }

    /// Restricts the calling thread (and the threads it creates from now on) to the set.
    pub fn pin_current_thread(self) -> io::Result<()> {
        let set = self.to_libc();
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes `cmd`'s process start restricted to the set (like `taskset`), so that every
    /// thread it creates inherits the restriction.
    pub fn apply_before_exec(self, cmd: &mut Command) {
        let set = self.to_libc();
        let pre_exec = move || {
            // sched_setaffinity is a plain syscall, safe between fork and exec.
            // SAFETY: `set` is a valid cpu_set_t (copied into the closure) of the size
            // passed; pid 0 is the calling (only) thread of the forked child.
            let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
            if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
        };
        // SAFETY: the closure only makes one async-signal-safe syscall and touches no
        // lock nor allocator, as required between fork and exec.
        unsafe { cmd.pre_exec(pre_exec) };
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.cpus()).finish()
    }
}

/// Where the daemon runs relative to the (pinned) bench process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Bench on one CPU, daemon on another: the shm transport may spin.
    OtherCore,
    /// Bench and daemon restricted to the same CPU: every hand-off is a context switch.
    SameCore,
}

impl Placement {
    /// The bench id suffix (`other-core`, `same-core`).
    pub fn id(self) -> &'static str {
        match self {
            Placement::OtherCore => "other-core",
            Placement::SameCore => "same-core",
        }
    }

    /// `(bench CPUs, daemon CPUs)` out of the CPUs this process may use, or `None` when
    /// the placement is impossible (one CPU only, for [`Placement::OtherCore`]).
    pub fn cpus(self, available: CpuSet) -> Option<(CpuSet, CpuSet)> {
        let mut cpus = available.cpus();
        let first = CpuSet::single(cpus.next()?);
        match self {
            Placement::SameCore => Some((first, first)),
            Placement::OtherCore => Some((first, CpuSet::single(cpus.next()?))),
        }
    }
}
