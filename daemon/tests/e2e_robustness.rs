//! End to end: bad and dying clients never hurt the daemon or the others.
//! A client killed mid-flow releases its reservations; a client that goes quiet right
//! after its I/O still has its posted report applied; garbage and oversized messages get
//! errors; a client that lies about an fd is refused; the daemon keeps serving.

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::cluster::file_id;
use support::*;
use trace2e_proto::pb::p2m::{self, p2m_client::P2mClient};

async fn p2m_client(socket: &std::path::Path) -> P2mClient<tonic::transport::Channel> {
    P2mClient::new(uds_channel(socket).await)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_client_killed_mid_flow_releases_its_reservations() {
    // A long lease and reservation timeout: only the kill can release in time.
    let d = Daemon::start("node-a", &["127.0.0.2"], &["--lease-ms", "600000", "--reservation-timeout-ms", "300000"]);
    let (f, out_file) = (d.path("shared.txt"), d.path("out.txt"));
    std::fs::write(&f, b"shared").unwrap();

    let mut child_cmd = std::process::Command::new(child_bin());
    child_cmd.arg("hold-grant").arg(&d.p2m_grpc).arg(&f);
    let (mut child, line) = spawn_until_line_containing(child_cmd, "granted ");
    let grant: u64 = line.strip_prefix("granted ").and_then(|g| g.parse().ok()).unwrap_or_else(|| panic!("{line}"));

    // Another process wants to read the file: it must wait for the writer's reservation.
    let mut reader = d.proc_cmd(&["cp", f.to_str().unwrap(), out_file.to_str().unwrap()]);
    reader.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut reader = reader.spawn().unwrap();
    // The reader has opened (enrolled) the file: the holder's file and the reader's are the
    // two enrolled, and its next step is the read that needs the reservation. (The daemon
    // does not show a queued request, so its arrival before the kill is not observed; the
    // audit order below shows that the read was granted only after the holder's grant
    // ended.)
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = d.cli_json(&["status", "--format", "json"]);
        if status["enrolled"] == 2 {
            break;
        }
        assert!(reader.try_wait().unwrap().is_none(), "the reader ended while the writer held the file");
        assert!(Instant::now() < deadline, "the reader never opened the file: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(reader.try_wait().unwrap().is_none(), "the reader read while the writer held the file");

    child.kill().unwrap();
    child.wait().unwrap();
    let status = wait_timeout(&mut reader).expect("reader still blocked after the holder died");
    assert!(status.success(), "reader failed after the holder died");
    assert_eq!(std::fs::read(&out_file).unwrap(), b"shared");

    // The dead client's grant was ended (expired: assumed performed) exactly once, when
    // it exited, and the reader's read was granted after that.
    let audit = d.cli_json(&["audit", "--limit", "0", "--format", "json"]);
    let records = audit["records"].as_array().unwrap();
    let of_grant: Vec<&serde_json::Value> = records.iter().filter(|r| r["grant"] == grant).collect();
    let kinds: Vec<&str> = of_grant.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["request", "expired"], "{of_grant:?}");
    let expired = of_grant[1];
    let shared = format!("{}@node-a", file_id(&f));
    assert_eq!(expired["destination"], shared, "{expired}");
    let holder = expired["process"].as_str().unwrap();
    let exits: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "exit" && r["process"] == holder).collect();
    assert_eq!(exits.len(), 1, "{records:?}");
    let read = records
        .iter()
        .find(|r| r["kind"] == "request" && r["result"] == "granted" && r["source"] == shared)
        .unwrap_or_else(|| panic!("the reader's read is not audited: {records:?}"));
    assert!(read["seq"].as_u64() > expired["seq"].as_u64(), "read {read} granted before the hold ended {expired}");
}

#[test]
fn a_posted_report_is_applied_while_its_client_stays_quiet() {
    // A lease far beyond the test's patience: only the channel's drain timer can apply the
    // report. No linger: the channel thread sleeps right after answering, before the
    // client has posted its report.
    let d = Daemon::start("node-a", &["127.0.0.2"], &["--lease-ms", "600000", "--shm-linger-us", "0"]);
    let f = d.path("quiet.txt");
    std::fs::write(&f, b"quiet").unwrap();
    let child_cmd = d.proc_cmd_with(&child_bin(), &["read-then-wait", f.to_str().unwrap()]);
    let (mut child, line) = spawn_until_line_containing(child_cmd, "read ");
    assert!(line.ends_with("read 5"), "{line}");

    let deadline = std::time::Instant::now() + PATIENCE;
    let reported = loop {
        let audit = d.cli_json(&["audit", "--limit", "0", "--format", "json"]);
        let records = audit["records"].as_array().cloned().unwrap_or_default();
        let kinds: Vec<String> = records.iter().filter_map(|r| r["kind"].as_str().map(str::to_owned)).collect();
        if kinds.iter().any(|k| k == "report") || std::time::Instant::now() >= deadline {
            break kinds;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reported.iter().any(|k| k == "report"), "the posted report was never applied: {reported:?}");
    assert!(!reported.iter().any(|k| k == "expired"), "{reported:?}");
}

#[test]
fn garbage_and_oversized_messages_get_errors_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    // Garbage instead of the shared-memory handshake.
    for _ in 0..3 {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
        let s = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::connect(&s, &SocketAddrUnix::new(&d.p2m).unwrap()).unwrap();
        let _ = rustix::net::send(&s, b"\xff\xfe not a hello at all", rustix::net::SendFlags::NOSIGNAL);
        let _ = rustix::net::send(&s, &[0u8; 60_000], rustix::net::SendFlags::NOSIGNAL);
    }
    // Raw garbage on the gRPC sockets.
    for socket in [&d.p2m_grpc, &d.o2m] {
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = s.write_all(b"\x00\x01garbage that is not HTTP/2 at all\r\n\r\n\xff\xfe");
        let mut buf = [0u8; 256];
        let _ = std::io::Read::read(&mut s, &mut buf); // the daemon answers or closes; it must not hang
    }
    rt().block_on(async {
        let mut c = p2m_client(&d.p2m_grpc).await;
        // Oversized: a 1 MiB path.
        let huge = format!("/{}", "x".repeat(1 << 20));
        let err = c
            .enroll(p2m::EnrollRequest {
                fd: 0,
                target: Some(p2m::enroll_request::Target::File(p2m::FileTarget { path: huge })),
            })
            .await
            .unwrap_err();
        // The server refuses to decode a message over its limit (MAX_MESSAGE_BYTES, 16 KiB,
        // far above any valid P2M message): tonic's answer to that is OutOfRange, before
        // the daemon ever sees the path.
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        assert!(err.message().contains("the limit is: 16384 bytes"), "{err:?}");
        // Malformed: no target, unknown direction, grant 0, unknown fd.
        let err = c.enroll(p2m::EnrollRequest { fd: 1, target: None }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let err = c.request(p2m::IoRequest { fd: 1, direction: 77 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let err = c.report(p2m::IoReport { grant: 0, ok: true, bytes: 1 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let err = c.report(p2m::IoReport { grant: 12345, ok: true, bytes: 1 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
        let err = c.request(p2m::IoRequest { fd: 999, direction: p2m::Direction::Read as i32 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    });
    assert!(d.alive(), "daemon died; log:\n{}", d.log());
    // Everyone else is still served.
    let (a, b) = (d.path("a"), d.path("b"));
    std::fs::write(&a, b"still works").unwrap();
    assert_ok(&d.proc(&["cp", a.to_str().unwrap(), b.to_str().unwrap()]));
    assert_eq!(std::fs::read(&b).unwrap(), b"still works");
}

#[test]
fn a_client_lying_about_an_fd_is_refused() {
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let real = d.path("real.txt");
    std::fs::write(&real, b"x").unwrap();
    let file = std::fs::File::open(&real).unwrap();
    rt().block_on(async {
        let mut c = p2m_client(&d.p2m_grpc).await;
        let lie = p2m::EnrollRequest {
            fd: file.as_raw_fd(),
            target: Some(p2m::enroll_request::Target::File(p2m::FileTarget { path: "/etc/passwd".into() })),
        };
        let err = c.enroll(lie).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("/etc/passwd"), "{err:?}");
        // The same fd claimed as a TCP stream: refused too.
        let lie = p2m::EnrollRequest {
            fd: file.as_raw_fd(),
            target: Some(p2m::enroll_request::Target::Stream(p2m::StreamTarget {
                local: "127.0.0.1:1".into(),
                peer: "127.0.0.1:2".into(),
            })),
        };
        assert_eq!(c.enroll(lie).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        // The truth is accepted.
        let truth = p2m::EnrollRequest {
            fd: file.as_raw_fd(),
            target: Some(p2m::enroll_request::Target::File(p2m::FileTarget { path: real.display().to_string() })),
        };
        let resource = c.enroll(truth).await.unwrap().into_inner().resource;
        assert_eq!(resource, format!("file://{}", real.display()));
    });
}

#[test]
fn sigterm_stops_the_daemon_and_removes_its_sockets() {
    let mut d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    assert!(!d.p2m.exists() && !d.p2m_grpc.exists() && !d.o2m.exists(), "sockets left behind");
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let out = run({
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trace2ed"));
        cmd.args(["--node", "other", "--p2m-socket"]).arg(&d.p2m).arg("--o2m-socket").arg(d.path("o2.sock"));
        cmd.arg("--data-dir").arg(d.path("other-data"));
        cmd
    });
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
}

#[test]
fn garbage_over_shared_memory_gets_errors_and_others_are_served() {
    use trace2e_proto::wire::{WireResponse, kind};
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let client = trace2e_fastpath::Client::connect(&d.p2m).expect("attach over shared memory");
    // Well-framed messages with meaningless contents: each gets an error, not a crash.
    for (k, payload) in [
        (999u16, &b"unknown kind"[..]),
        (kind::REQUEST, &[1u8][..]),
        (kind::ENROLL, &[3, 0, 0, 0, 1, b'r', b'e', b'l'][..]),
        (kind::REPORT, &[0u8; 17][..]),
    ] {
        let r = client.call(k, payload).expect("the daemon answers");
        match WireResponse::decode(r.kind, &r.payload).unwrap() {
            WireResponse::Error { .. } => {}
            other => panic!("expected an error for kind {k}, got {other:?}"),
        }
    }
    // A lie over shared memory is refused like over gRPC.
    let real = d.path("real.txt");
    std::fs::write(&real, b"x").unwrap();
    let file = std::fs::File::open(&real).unwrap();
    let mut buf = Vec::new();
    let lie = trace2e_proto::wire::WireRequest::Enroll {
        fd: trace2e_proto::Fd(file.as_raw_fd()),
        target: trace2e_proto::wire::EnrollTarget::File("/etc/passwd".into()),
    };
    let k = lie.encode(&mut buf);
    let r = client.call(k, &buf).unwrap();
    match WireResponse::decode(r.kind, &r.payload).unwrap() {
        WireResponse::Error { code, message } => {
            assert_eq!(code, trace2e_proto::wire::ErrorCode::PermissionDenied);
            assert!(message.contains("/etc/passwd"), "{message}");
        }
        other => panic!("a lie was accepted: {other:?}"),
    }
    // Posted garbage has nobody to answer to; the channel keeps working: the truth about
    // the same fd is enrolled as the real file.
    client.post(kind::REPORT, b"junk").unwrap();
    let truth = trace2e_proto::wire::WireRequest::Enroll {
        fd: trace2e_proto::Fd(file.as_raw_fd()),
        target: trace2e_proto::wire::EnrollTarget::File(real.clone()),
    };
    buf.clear();
    let k = truth.encode(&mut buf);
    let r = client.call(k, &buf).expect("the daemon answers after posted garbage");
    match WireResponse::decode(r.kind, &r.payload).unwrap() {
        WireResponse::Enrolled(resource) => assert_eq!(resource, file_id(&real)),
        other => panic!("the truth was not enrolled: {other:?}"),
    }
    // Everyone else is still served.
    let (a, b) = (d.path("a"), d.path("b"));
    std::fs::write(&a, b"fine").unwrap();
    assert_ok(&d.proc(&["cp", a.to_str().unwrap(), b.to_str().unwrap()]));
}
