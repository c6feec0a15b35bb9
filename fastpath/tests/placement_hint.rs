//! The placement hint a worker polls by: `Channel::client_placement` says whether the
//! client thread of a lane last called from the worker's CPU or another one.
//!
//! The threads are pinned to CPUs this process may run on (its affinity mask). The
//! "elsewhere" case needs two of them; on a machine with one it fails, saying so,
//! rather than passing without having checked anything: run it there with
//! `--skip a_client_on_another_cpu_is_elsewhere` (CI machines have two CPUs).

mod common;

use std::time::{Duration, Instant};

use trace2e_fastpath::{Client, Listener, Placement, ServerConfig};

fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE and `set` is a valid cpu_set_t.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// The CPUs this process may run on, in increasing order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(r, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    // SAFETY: `cpu` < CPU_SETSIZE and `set` is a valid cpu_set_t.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Serves one call from a client thread pinned to `client_cpu`, on a worker pinned to
/// `worker_cpu`; returns what `client_placement` said for the call's lane.
fn hint_for(worker_cpu: usize, client_cpu: usize) -> Placement {
    let path = common::socket_path("placement");
    let listener = Listener::bind(&path, ServerConfig::default()).unwrap();
    let path_dir = path.parent().unwrap().to_owned();
    let client = std::thread::spawn(move || {
        assert!(pin_current_thread(client_cpu));
        let client = Client::connect(&path).unwrap();
        client.call(7, b"where am I").unwrap()
    });
    assert!(pin_current_thread(worker_cpu));
    let mut channel = listener.accept().unwrap().attach().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lane = None;
    while lane.is_none() {
        assert!(Instant::now() < deadline, "no call arrived");
        channel.poll_requests(1, |r| lane = Some((r.lane, r.tag))).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let (lane, tag) = lane.unwrap();
    let placement = channel.client_placement(lane);
    channel.respond(lane, tag, 8, b"").unwrap();
    assert_eq!(client.join().unwrap().kind, 8);
    let _ = std::fs::remove_dir_all(path_dir);
    placement
}

#[test]
fn a_client_on_the_workers_cpu_is_here() {
    let cpu = allowed_cpus()[0];
    assert_eq!(hint_for(cpu, cpu), Placement::Here);
}

/// Fails, rather than passes unchecked, where this process may use only one CPU.
#[test]
fn a_client_on_another_cpu_is_elsewhere() {
    let cpus = allowed_cpus();
    assert!(
        cpus.len() >= 2,
        "needs two CPUs, this process may run on {cpus:?} only: \
         run with `--skip a_client_on_another_cpu_is_elsewhere` on such a machine"
    );
    assert_eq!(hint_for(cpus[0], cpus[1]), Placement::Elsewhere);
}
