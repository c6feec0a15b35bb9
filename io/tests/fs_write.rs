//! Mediated file writes: one flow per write, helpers, options, copies.

#[macro_use]
mod support;

use std::io::{BufWriter, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};

use support::{Event, FakeDaemon, file_target};
use trace2e_io::Direction::{Read as R, Write as W};
use trace2e_io::fs::{self, File, OpenOptions};

#[test]
fn create_and_write_enroll_request_and_report() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut file = File::create(&path).unwrap();
        let fd = file.as_raw_fd();
        let target = file_target(&path);
        assert_eq!(file.write(b"hello").unwrap(), 5);
        file.flush().unwrap(); // not a flow
        assert_eq!(
            daemon.events(),
            vec![
                Event::Enroll { fd, target: target.clone() },
                Event::Request { fd, target: Some(target.clone()), direction: W, granted: true },
                Event::Report { target: target.clone(), direction: W, ok: true, bytes: 5 },
            ]
        );
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    });
}

#[test]
fn write_helpers_and_generic_writers_are_mediated() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.txt");

        fs::write(&path, "0123456789").unwrap();
        let target = file_target(&path);
        assert_eq!(daemon.bytes(&target, W), 10);

        daemon.clear();
        let mut w = BufWriter::new(File::create(&path).unwrap());
        for i in 0..100 {
            writeln!(w, "line {i}").unwrap();
        }
        drop(w);
        let expected = std::fs::read(&path).unwrap().len() as u64;
        assert_eq!(daemon.bytes(&target, W), expected);
        // The truncation of the old content, then one flow for BufWriter's one flush.
        assert_eq!(daemon.flows(&target), vec![(W, true, 0), (W, true, expected)]);

        daemon.clear();
        serde_json::to_writer(File::create(&path).unwrap(), &serde_json::json!({"a": [1, 2, 3]})).unwrap();
        assert_eq!(daemon.bytes(&target, W), std::fs::metadata(&path).unwrap().len());

        daemon.clear();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let n = (&file).write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).unwrap();
        assert_eq!(n, 4);
        assert_eq!(file.write_at(b"Z", 0).unwrap(), 1);
        assert_eq!(daemon.flows(&target), vec![(W, true, 4), (W, true, 1)]);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("Zbcd"));
    });
}

#[test]
fn copies_pass_through_the_process() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, dst2) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("dst2"));
        let data = vec![7u8; 100_000];
        std::fs::write(&src, &data).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();

        assert_eq!(fs::copy(&src, &dst).unwrap(), 100_000);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(daemon.bytes(&file_target(&src), R), 100_000);
        assert_eq!(daemon.bytes(&file_target(&dst), W), 100_000);

        let n = std::io::copy(&mut File::open(&src).unwrap(), &mut File::create(&dst2).unwrap()).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(daemon.bytes(&file_target(&dst2), W), 100_000);
    });
}

#[test]
fn open_options_match_std() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opts");

        let mut f = OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).unwrap();
        f.write_all(b"one").unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            OpenOptions::new().create_new(true).write(true).open(&path).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        let mut f = OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(&path).unwrap();
        f.write_all(b"two").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), b"onetwo");
        assert_eq!(File::create_new(&path).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        let f = File::create(&path).unwrap();
        f.set_len(3).unwrap();
        f.sync_all().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 3);
        assert_eq!(daemon.bytes(&file_target(&path), W), 6);
        // Truncating a non-empty file is a write flow of 0 bytes; a new file is not.
        daemon.clear();
        let target = file_target(&path);
        drop(File::create(&path).unwrap());
        assert_eq!(daemon.flows(&target), vec![(W, true, 0)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        daemon.clear();
        drop(File::create(&path).unwrap());
        assert!(daemon.flows(&target).is_empty());
        // Invalid combinations fail as std's do.
        for (write, append, create_new) in [(false, false, false), (true, true, false), (false, true, false)] {
            let ours = OpenOptions::new().write(write).append(append).truncate(true).create_new(create_new).open(&path);
            let std = std::fs::OpenOptions::new()
                .write(write)
                .append(append)
                .truncate(true)
                .create_new(create_new)
                .open(&path);
            assert_eq!(ours.unwrap_err().kind(), std.unwrap_err().kind());
        }
        // Opening a missing file is std's error, and enrolls nothing.
        daemon.clear();
        assert_eq!(File::open(dir.path().join("missing")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        assert!(daemon.events().is_empty());
    });
}
