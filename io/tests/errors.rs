//! Failure paths: denials, an unreachable or slow daemon, failed reports, configuration.

#[macro_use]
mod support;

use std::io::{ErrorKind, Read, Seek, Write};
use std::time::Duration;

use support::{Event, FakeDaemon, file_target};
use trace2e_io::Direction::{Read as R, Write as W};
use trace2e_io::fs::{self, File};
use trace2e_io::{DaemonUnavailable, Denied, PolicyKind, UnavailableKind};

#[test]
fn a_denied_write_is_not_performed() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-dst.txt");
        std::fs::write(&path, b"original").unwrap();
        let target = file_target(&path);
        daemon.deny("secret-dst", Some(W));

        let mut file = File::options().write(true).open(&path).unwrap();
        let err = file.write(b"overwritten").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        let denied = Denied::of(&err).expect("a Denied inside");
        assert_eq!(denied.policy(), PolicyKind::Integrity);
        assert_eq!(denied.direction(), W);
        assert_eq!(denied.resource().to_string(), format!("{target}@fake-node"));
        assert_eq!(denied.reason(), "denied by the test");
        let via_std = err.get_ref().unwrap().downcast_ref::<Denied>().unwrap();
        assert_eq!(via_std, denied);
        assert!(err.to_string().contains("write denied by the integrity policy"), "{err}");

        assert_eq!(file.write_all(b"x").unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(file.set_len(0).unwrap_err().kind(), ErrorKind::PermissionDenied);
        // Truncating opens are write flows too.
        assert_eq!(fs::write(&path, b"y").unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(File::create(&path).unwrap_err().kind(), ErrorKind::PermissionDenied);
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"original", "content untouched");
        assert!(daemon.flows(&target).is_empty(), "no report for a denied flow");
        // Reads are still allowed.
        daemon.clear();
        assert_eq!(fs::read(&path).unwrap(), b"original");
        assert_eq!(daemon.bytes(&target, R), 8);
    });
}

#[test]
fn a_denied_read_leaves_buffer_and_offset_alone() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cv.txt");
        std::fs::write(&path, b"confidential").unwrap();
        daemon.deny("cv.txt", None);

        let mut file = File::open(&path).unwrap();
        let mut buf = [0u8; 4];
        let err = file.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(Denied::of(&err).unwrap().direction(), R);
        assert_eq!(buf, [0; 4]);
        assert_eq!(file.stream_position().unwrap(), 0);
        assert_eq!(fs::read_to_string(&path).unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert!(serde_json::from_reader::<_, serde_json::Value>(File::open(&path).unwrap()).is_err());
        assert!(daemon.flows(&file_target(&path)).is_empty());
    });
}

#[test]
fn an_unreachable_daemon_fails_closed() {
    isolated!({
        // No daemon on TRACE2E_SOCKET.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();

        let err = File::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        let unavailable = DaemonUnavailable::of(&err).expect("a DaemonUnavailable inside");
        assert_eq!(unavailable.kind(), UnavailableKind::Unreachable);
        assert_eq!(unavailable.operation(), "enroll");
        assert!(unavailable.detail().contains("p2m.sock"), "{unavailable}");
        assert!(Denied::of(&err).is_none());

        assert_eq!(fs::read(&path).unwrap_err().kind(), ErrorKind::NotConnected);
        assert_eq!(fs::write(dir.path().join("g"), b"x").unwrap_err().kind(), ErrorKind::NotConnected);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = trace2e_io::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
    });
}

#[test]
fn an_unreachable_daemon_fails_closed_over_shared_memory() {
    isolated!([("TRACE2E_TRANSPORT", "shm")], {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();
        let err = File::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        let unavailable = DaemonUnavailable::of(&err).expect("a DaemonUnavailable inside");
        assert_eq!(unavailable.kind(), UnavailableKind::Unreachable);
        assert!(unavailable.detail().contains("p2m.sock"), "{unavailable}");
        assert_eq!(fs::read(&path).unwrap_err().kind(), ErrorKind::NotConnected);
    });
}

#[test]
fn a_daemon_that_dies_stops_io_and_one_that_starts_late_is_found() {
    isolated!([("TRACE2E_TIMEOUT_MS", "300")], {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();
        // Not up yet: failures are not cached, and a process that never attached does
        // not wait for a daemon.
        assert_eq!(File::open(&path).unwrap_err().kind(), ErrorKind::NotConnected);

        let mut daemon = FakeDaemon::start_from_env();
        let mut file = File::open(&path).unwrap();
        let mut buf = [0u8; 2];
        file.read_exact(&mut buf).unwrap();

        // Once attached, a daemon that goes away is waited for, up to TRACE2E_TIMEOUT_MS.
        daemon.stop();
        let err = file.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
        let unavailable = DaemonUnavailable::of(&err).unwrap();
        assert_eq!(unavailable.kind(), UnavailableKind::Unreachable, "{unavailable}");
        assert!(unavailable.detail().ends_with("; the daemon did not come back within 300 ms"), "{unavailable}");
        assert_eq!(file.stream_position().unwrap(), 2, "the read was not performed");
        drop(file); // unenroll fails: logged, no panic
    });
}

#[test]
fn a_failed_report_does_not_lose_data() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"precious").unwrap();
        daemon.fail_reports(true);
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        fs::write(&path, b"written").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"written");
        assert!(daemon.events().iter().all(|e| !matches!(e, Event::Report { .. })));
    });
}

#[test]
fn a_slow_daemon_times_out() {
    isolated!([("TRACE2E_TIMEOUT_MS", "300")], {
        let daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();
        let mut file = File::open(&path).unwrap();
        daemon.stall_requests(Some(Duration::from_secs(30)));
        // The stall (30 s) outlasts the deadline (300 ms): only the deadline can end the
        // read with an error, and the child's own timeout guards against a hang.
        let err = file.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        let unavailable = DaemonUnavailable::of(&err).unwrap();
        assert_eq!(unavailable.kind(), UnavailableKind::TimedOut, "{err}");
        assert_eq!(unavailable.operation(), "request", "{err}");
        assert_eq!(file.stream_position().unwrap(), 0);
    });
}

#[test]
fn an_unknown_transport_is_a_clear_error() {
    isolated!([("TRACE2E_TRANSPORT", "carrier-pigeon")], {
        let _daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let err = File::open(dir.path().join("f")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        let unavailable = DaemonUnavailable::of(&err).unwrap();
        assert_eq!(unavailable.kind(), UnavailableKind::Misconfigured);
        assert!(err.to_string().contains("TRACE2E_TRANSPORT=\"carrier-pigeon\""), "{err}");
    });
}

#[test]
fn an_invalid_timeout_is_a_clear_error() {
    isolated!([("TRACE2E_TIMEOUT_MS", "soon")], {
        let _daemon = FakeDaemon::start_from_env();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let err = File::open(dir.path().join("f")).unwrap_err();
        assert_eq!(DaemonUnavailable::of(&err).unwrap().kind(), UnavailableKind::Misconfigured);
        assert!(err.to_string().contains("TRACE2E_TIMEOUT_MS"), "{err}");
    });
}

#[test]
fn an_invalid_bind_address_fails_connect() {
    isolated!([("TRACE2E_BIND_ADDR", "not-an-ip")], {
        let _daemon = FakeDaemon::start_from_env();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = trace2e_io::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("TRACE2E_BIND_ADDR"), "{err}");
    });
}
