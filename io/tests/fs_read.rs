//! Mediated file reads: enrollment, one flow per read, generic consumers, fd lifecycle.

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, IoSliceMut, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use support::{Event, FakeDaemon, file_target};
use trace2e_io::Direction::{Read as R, Write as W};
use trace2e_io::fs::{self, File};

#[test]
fn open_and_read_enroll_request_and_report() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.txt");
        std::fs::write(&path, b"hello world").unwrap();
        let target = file_target(&path);

        let mut file = File::open(&path).unwrap();
        let fd = file.as_raw_fd();
        let mut buf = [0u8; 5];
        assert_eq!(file.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf, b"hello");
        let mut rest = [0u8; 64];
        assert_eq!(file.read(&mut rest).unwrap(), 6);
        assert_eq!(file.read(&mut rest).unwrap(), 0, "end of file");

        assert_eq!(
            daemon.events(),
            vec![
                Event::Enroll { fd, target: target.clone() },
                Event::Request { fd, target: Some(target.clone()), direction: R, granted: true },
                Event::Report { target: target.clone(), direction: R, ok: true, bytes: 5 },
                Event::Request { fd, target: Some(target.clone()), direction: R, granted: true },
                Event::Report { target: target.clone(), direction: R, ok: true, bytes: 6 },
                Event::Request { fd, target: Some(target.clone()), direction: R, granted: true },
                Event::Report { target: target.clone(), direction: R, ok: true, bytes: 0 },
            ]
        );
        drop(file);
        assert_eq!(daemon.events().last(), Some(&Event::Unenroll { fd }));
    });
}

#[test]
fn files_enroll_by_canonical_path() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("real.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.txt"), dir.path().join("link.txt")).unwrap();
        let _a = File::open(dir.path().join("sub/../real.txt")).unwrap();
        let _b = File::open(dir.path().join("link.txt")).unwrap();
        let target = file_target(&dir.path().join("real.txt"));
        assert!(target.starts_with("file:///"));
        assert_eq!(daemon.enrolls_of(&target).len(), 2, "{:?}", daemon.events());
    });
}

#[test]
fn whole_file_helpers_are_mediated() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let target = file_target(&path);

        assert_eq!(fs::read(&path).unwrap(), data);
        assert_eq!(daemon.bytes(&target, R), data.len() as u64);
        let flows = daemon.flows(&target).len();
        assert!(flows <= 3, "read_to_end is sized to the file: {flows} flows");

        daemon.clear();
        std::fs::write(&path, "text ✓").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "text ✓");
        assert_eq!(daemon.bytes(&target, R), "text ✓".len() as u64);

        daemon.clear();
        let mut s = String::new();
        File::open(&path).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "text ✓");
        assert_eq!(daemon.bytes(&target, R), s.len() as u64);
        assert!(daemon.flows(&target).iter().all(|(d, ok, _)| *d == R && *ok));
    });
}

#[test]
fn generic_consumers_are_mediated() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let target = file_target(&path);

        // BufReader::lines: read_line bypassed mediation in the prototype.
        let lines: Vec<String> = BufReader::new(File::open(&path).unwrap()).lines().map(Result::unwrap).collect();
        assert_eq!(lines, ["one", "two", "three"]);
        assert_eq!(daemon.bytes(&target, R), 14);

        daemon.clear();
        let mut out = Vec::new();
        assert_eq!(std::io::copy(&mut File::open(&path).unwrap(), &mut out).unwrap(), 14);
        assert_eq!(daemon.bytes(&target, R), 14);

        daemon.clear();
        let json = dir.path().join("v.json");
        std::fs::write(&json, r#"{"name":"cv","pages":[1,2]}"#).unwrap();
        let v: serde_json::Value = serde_json::from_reader(File::open(&json).unwrap()).unwrap();
        assert_eq!(v["pages"][1], 2);
        assert_eq!(daemon.bytes(&file_target(&json), R), 27);

        // Through a shared reference, as std allows.
        daemon.clear();
        let file = File::open(&path).unwrap();
        let mut s = String::new();
        (&file).read_to_string(&mut s).unwrap();
        assert_eq!(daemon.bytes(&target, R), 14);
    });
}

#[test]
fn vectored_and_positional_reads_are_one_flow_each() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.txt");
        std::fs::write(&path, b"abcdefgh").unwrap();
        let target = file_target(&path);
        let mut file = File::open(&path).unwrap();

        let (mut a, mut b) = ([0u8; 3], [0u8; 3]);
        let n = file.read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)]).unwrap();
        assert_eq!((n, &a, &b), (6, b"abc", b"def"));
        let mut c = [0u8; 2];
        assert_eq!(file.read_at(&mut c, 1).unwrap(), 2);
        assert_eq!(&c, b"bc");
        // Seeking is not a flow.
        file.seek(SeekFrom::Start(7)).unwrap();
        assert_eq!(daemon.flows(&target), vec![(R, true, 6), (R, true, 2)]);
    });
}

#[test]
fn drop_unenrolls_before_the_fd_is_reused() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&pa, b"aaaa").unwrap();
        std::fs::write(&pb, b"bbbbbbbb").unwrap();

        let a = File::open(&pa).unwrap();
        let fd = a.as_raw_fd();
        drop(a);
        let mut b = File::open(&pb).unwrap();
        assert_eq!(b.as_raw_fd(), fd, "the kernel reuses the lowest free fd");
        let mut buf = Vec::new();
        b.read_to_end(&mut buf).unwrap();

        let (ta, tb) = (file_target(&pa), file_target(&pb));
        let events = daemon.events();
        assert_eq!(
            &events[..3],
            &[
                Event::Enroll { fd, target: ta.clone() },
                Event::Unenroll { fd },
                Event::Enroll { fd, target: tb.clone() },
            ]
        );
        assert_eq!(daemon.bytes(&tb, R), 8);
        assert!(daemon.flows(&ta).is_empty());
    });
}

#[test]
fn try_clone_and_from_std_enroll() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::write(&path, b"0123456789").unwrap();
        let target = file_target(&path);

        let file = File::from_std(std::fs::File::open(&path).unwrap()).unwrap();
        let mut clone = file.try_clone().unwrap();
        assert_ne!(file.as_raw_fd(), clone.as_raw_fd());
        assert_eq!(daemon.enrolls_of(&target), vec![file.as_raw_fd(), clone.as_raw_fd()]);
        let mut buf = [0u8; 4];
        clone.read_exact(&mut buf).unwrap();
        let cfd = clone.as_raw_fd();
        drop(clone);
        assert_eq!(daemon.unenrolls(), vec![cfd]);

        // The escape unenrolls; reads through the std file are not seen.
        let ffd = file.as_raw_fd();
        let mut std_file = file.into_std();
        assert_eq!(daemon.unenrolls(), vec![cfd, ffd]);
        let before = daemon.events().len();
        std_file.read_to_end(&mut Vec::new()).unwrap();
        assert_eq!(daemon.events().len(), before);
        assert!(format!("{:?}", File::open(&path).unwrap()).contains("path"));
    });
}

#[test]
fn works_from_inside_tokio_runtimes() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.txt");
        std::fs::write(&path, b"inside").unwrap();
        let target = file_target(&path);

        let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = current.block_on(async { fs::read_to_string(&path).unwrap() });
        assert_eq!(s, "inside");
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let p = path.clone();
        let s =
            multi.block_on(async move { tokio::spawn(async move { fs::read_to_string(&p).unwrap() }).await.unwrap() });
        assert_eq!(s, "inside");
        assert_eq!(daemon.bytes(&target, R), 12);
        assert_eq!(daemon.bytes(&target, W), 0);
    });
}
