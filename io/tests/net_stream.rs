//! Mediated TCP: enrollment of both ends, flows, readiness before request, bind address.

#[macro_use]
mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::{Event, FakeDaemon, stream_target};
use trace2e_io::Direction::{Read as R, Write as W};
use trace2e_io::net::{Shutdown, TcpListener, TcpStream};

#[test]
fn echo_over_loopback_enrolls_both_ends_and_mediates_each_side() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, peer) = listener.accept().unwrap();
            assert_eq!(stream.peer_addr().unwrap(), peer);
            let mut buf = [0u8; 1024];
            loop {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).unwrap();
            }
            (stream.local_addr().unwrap(), stream.peer_addr().unwrap())
        });

        let mut client = TcpStream::connect(addr).unwrap();
        let (c_local, c_peer) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        client.set_nodelay(true).unwrap();
        assert!(client.nodelay().unwrap());
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let (s_local, s_peer) = server.join().unwrap();

        let c_target = stream_target(c_local, c_peer);
        let s_target = stream_target(s_local, s_peer);
        assert_eq!(s_target, stream_target(c_peer, c_local), "the server's end mirrors the client's");
        assert_eq!(daemon.enrolls_of(&c_target), vec![client.as_raw_fd()]);
        assert_eq!(daemon.enrolls_of(&s_target).len(), 1);
        assert_eq!(daemon.bytes(&c_target, W), 4);
        assert_eq!(daemon.bytes(&c_target, R), 4);
        assert_eq!(daemon.bytes(&s_target, R), 4);
        assert_eq!(daemon.bytes(&s_target, W), 4);
        // End of stream is a read of 0 bytes on both sides.
        assert_eq!(daemon.flows(&s_target).last(), Some(&(R, true, 0)));
        assert_eq!(daemon.flows(&c_target).last(), Some(&(R, true, 0)));
        assert_eq!(daemon.unenrolls().len(), 1, "the server's stream was dropped");
    });
}

/// Waits until thread `tid` of this process is blocked in `poll(2)` (or `ppoll`), as
/// `/proc` shows it; fails the test after 30 s.
fn wait_until_in_poll(tid: libc::pid_t) {
    let syscall = format!("/proc/self/task/{tid}/syscall");
    let polls = [
        libc::SYS_ppoll,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll,
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = std::fs::read_to_string(&syscall).unwrap();
        let number = line.split_whitespace().next().and_then(|n| n.parse::<libc::c_long>().ok());
        if number.is_some_and(|n| polls.contains(&n)) {
            return;
        }
        assert!(Instant::now() < deadline, "the reader never blocked in poll: {syscall} says {line:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_blocking_read_waits_for_data_before_requesting() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let target = stream_target(client.local_addr().unwrap(), client.peer_addr().unwrap());

        // Nothing to read: the read timeout expires while polling, no flow is requested.
        client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(client.read_timeout().unwrap(), Some(Duration::from_millis(100)));
        let err = (&client).read(&mut [0u8; 8]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
        assert!(!daemon.events().iter().any(|e| matches!(e, Event::Request { .. })), "{:?}", daemon.events());

        // A peer that writes later: the request comes only once the data is there. The
        // peer writes once the reader is blocked in poll(2) with no flow requested yet.
        client.set_read_timeout(None).unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            let mut buf = [0u8; 8];
            let n = (&client).read(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        let tid = tid_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        wait_until_in_poll(tid);
        assert!(!daemon.events().iter().any(|e| matches!(e, Event::Request { .. })), "{:?}", daemon.events());
        peer.write_all(b"late").unwrap();
        let read = reader.join().unwrap();
        assert!(!read.is_empty() && read.len() <= 4, "{read:?}");
        assert_eq!(read[..], b"late"[..read.len()]);
        let n = read.len();
        let requests = daemon.events().iter().filter(|e| matches!(e, Event::Request { .. })).count();
        assert_eq!(requests, 1);
        assert_eq!(daemon.flows(&target), vec![(R, true, n as u64)]);
    });
}

#[test]
fn nonblocking_reads_ask_at_once_and_report_would_block_as_a_failed_flow() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_peer, _) = listener.accept().unwrap();
        let target = stream_target(client.local_addr().unwrap(), client.peer_addr().unwrap());
        client.set_nonblocking(true).unwrap();
        assert_eq!(client.read(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert_eq!(daemon.flows(&target), vec![(R, false, 0)]);
    });
}

#[test]
fn clones_peeks_and_escapes() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        let (server, _) = listener.incoming().next().unwrap().map(|s| (s, ())).unwrap();
        let target = stream_target(client.local_addr().unwrap(), client.peer_addr().unwrap());

        let clone = client.try_clone().unwrap();
        assert_eq!(daemon.enrolls_of(&target), vec![client.as_raw_fd(), clone.as_raw_fd()]);
        (&server).write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(clone.peek(&mut buf).unwrap(), 3);
        (&client).read_exact(&mut buf).unwrap();
        assert_eq!(daemon.flows(&target), vec![(R, true, 3), (R, true, 3)]);
        let cfd = clone.as_raw_fd();
        drop(clone);
        assert_eq!(daemon.unenrolls(), vec![cfd]);
        client.set_ttl(42).unwrap();
        assert_eq!(client.ttl().unwrap(), 42);
        assert!(client.take_error().unwrap().is_none());
        assert!(format!("{client:?}").contains("peer"));

        let fd = client.as_raw_fd();
        let mut raw = client.into_std();
        assert_eq!(daemon.unenrolls(), vec![cfd, fd]);
        let before = daemon.events().len();
        raw.write_all(b"unmediated").unwrap();
        assert_eq!(daemon.events().len(), before);
    });
}

#[test]
fn bind_addr_sets_the_local_end_of_outgoing_connections() {
    isolated!([("TRACE2E_BIND_ADDR", "127.0.0.2")], {
        let daemon = FakeDaemon::start_from_env();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for client in
            [TcpStream::connect(addr).unwrap(), TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap()]
        {
            let (server, peer) = listener.accept().unwrap();
            assert_eq!(client.local_addr().unwrap().ip().to_string(), "127.0.0.2");
            assert_eq!(peer.ip().to_string(), "127.0.0.2");
            let target = stream_target(client.local_addr().unwrap(), addr);
            assert_eq!(daemon.enrolls_of(&target), vec![client.as_raw_fd()]);
            drop(server);
        }
        // Another family than the destination's is refused clearly.
        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            let err = TcpStream::connect(v6.local_addr().unwrap()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    });
}

#[test]
fn a_denied_stream_write_sends_nothing() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        daemon.deny("tcp://", Some(W));
        let err = client.write_all(b"secret").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(trace2e_io::Denied::of(&err).is_some());
        drop(client);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    });
}
