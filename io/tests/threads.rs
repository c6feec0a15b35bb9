//! Many threads sharing the process-global client, and a forked child re-creating it.

#[macro_use]
mod support;

use std::io::{Read, Seek, SeekFrom, Write};

use support::{FakeDaemon, file_target};
use trace2e_io::Direction::{Read as R, Write as W};
use trace2e_io::fs::File;

const THREADS: usize = 8;
const OPS: usize = 200;

#[test]
fn eight_threads_share_the_client() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let shared_path = dir.path().join("shared");
        let shared = File::create(&shared_path).unwrap();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (dir, shared) = (dir.path(), &shared);
                scope.spawn(move || {
                    let path = dir.join(format!("t{t}"));
                    let mut file =
                        File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
                    for i in 0..OPS {
                        file.write_all(&[t as u8; 16]).unwrap();
                        file.seek(SeekFrom::Current(-16)).unwrap();
                        let mut buf = [0u8; 16];
                        file.read_exact(&mut buf).unwrap();
                        assert_eq!(buf, [t as u8; 16], "thread {t} op {i}");
                        (&*shared).write_all(&[b'x'; 4]).unwrap();
                    }
                });
            }
        });
        for t in 0..THREADS {
            let target = file_target(&dir.path().join(format!("t{t}")));
            assert_eq!(daemon.bytes(&target, W), (OPS * 16) as u64);
            assert_eq!(daemon.bytes(&target, R), (OPS * 16) as u64);
            assert_eq!(daemon.flows(&target).len(), 2 * OPS);
        }
        assert_eq!(daemon.bytes(&file_target(&shared_path), W), (THREADS * OPS * 4) as u64);
        assert_eq!(std::fs::metadata(&shared_path).unwrap().len(), (THREADS * OPS * 4) as u64);
    });
}

#[test]
fn a_forked_child_speaks_for_itself() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inherited");
        std::fs::write(&path, b"parent|child").unwrap();
        let target = file_target(&path);
        let mut file = File::open(&path).unwrap();
        let mut buf = [0u8; 7];
        file.read_exact(&mut buf).unwrap();

        // SAFETY: the child only reads through the inherited file (which re-creates the
        // client) and exits with `_exit`, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut rest = [0u8; 5];
            let code = match file.read_exact(&mut rest) {
                Ok(()) if &rest == b"child" => 0,
                _ => 1,
            };
            // SAFETY: terminates the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
        // The child enrolled the inherited fd for itself before its read.
        assert_eq!(daemon.enrolls_of(&target).len(), 2, "{:?}", daemon.events());
        assert_eq!(daemon.flows(&target), vec![(R, true, 7), (R, true, 5)]);
    });
}
