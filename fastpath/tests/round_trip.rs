//! Calls and posts between well-behaved clients and a daemon: many threads and
//! lanes, payloads from empty to the data-area size, ordering, failures.

mod common;

use std::time::Duration;

use common::{BLACKHOLE, DETACH_ME, ECHO, Event, POSTS_SEEN, TestServer, with_timeout};
use trace2e_fastpath::{CallError, Client, ClientConfig, ServerConfig, layout::Geometry};

fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ seed) as u8).collect()
}

#[test]
fn many_threads_many_sizes() {
    let server = TestServer::start(ServerConfig::default());
    let path = server.path.clone();
    with_timeout(Duration::from_secs(120), move || {
        let client = Client::connect(&path).unwrap();
        let max = client.max_payload();
        assert!(max >= 4096 + 128, "must carry PATH_MAX");
        let sizes = [0, 1, 43, 44, 45, 100, 255, 4095, 4096, 4097, max - 1, max];
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let client = client.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..600 {
                        let len = sizes[(i + t) % sizes.len()];
                        let body = payload(i * 8 + t, len);
                        let kind = client.call_into(ECHO, &body, &mut out).unwrap();
                        assert_eq!(kind, ECHO + 1);
                        assert_eq!(out, body, "thread {t} call {i} len {len}");
                        if i % 7 == 0 {
                            client.post(5, &payload(i, sizes[i % sizes.len()])).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn more_threads_than_lanes_share() {
    let config = ServerConfig { geometry: Geometry::new(2, 4, 8192).unwrap(), ..ServerConfig::default() };
    let server = TestServer::start(config);
    let path = server.path.clone();
    with_timeout(Duration::from_secs(120), move || {
        let client = Client::connect(&path).unwrap();
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let body = payload(t * 1000 + i, (i * 37) % 6000);
                        let r = client.call(ECHO, &body).unwrap();
                        assert_eq!(r.payload, body);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn posts_arrive_in_order_before_the_next_call() {
    let server = TestServer::start(ServerConfig::default());
    let path = server.path.clone();
    with_timeout(Duration::from_secs(60), move || {
        let client = Client::connect(&path).unwrap();
        let mut posted = 0u64;
        for round in 0..50 {
            for i in 0..(round % 20) {
                // Deferred posts ring no doorbell; the call after them does.
                if i % 2 == 0 {
                    client.post(9, &payload(i, i * 300)).unwrap();
                } else {
                    client.post_deferred(9, &payload(i, 10)).unwrap();
                }
                posted += 1;
            }
            let r = client.call(POSTS_SEEN, &[]).unwrap();
            assert_eq!(u64::from_le_bytes(r.payload.try_into().unwrap()), posted);
        }
    });
}

/// Not a benchmark: 100k small round trips must all complete and match.
#[test]
fn hundred_thousand_round_trips() {
    let server = TestServer::start(ServerConfig::default());
    let path = server.path.clone();
    with_timeout(Duration::from_secs(300), move || {
        let client = Client::connect(&path).unwrap();
        let mut out = Vec::with_capacity(client.max_payload());
        for i in 0u64..100_000 {
            let kind = client.call_into(ECHO, &i.to_le_bytes(), &mut out).unwrap();
            assert_eq!(kind, ECHO + 1);
            assert_eq!(out, i.to_le_bytes());
        }
    });
}

#[test]
fn too_large_is_refused_locally() {
    let server = TestServer::start(ServerConfig::default());
    let client = Client::connect(&server.path).unwrap();
    let big = vec![0u8; client.max_payload() + 1];
    assert!(matches!(client.call(ECHO, &big), Err(CallError::TooLarge { .. })));
    assert!(matches!(client.post(ECHO, &big), Err(CallError::TooLarge { .. })));
    // The channel is still fine.
    assert_eq!(client.call(ECHO, b"ok").unwrap().payload, b"ok");
}

#[test]
fn unanswered_call_times_out_and_stale_answers_are_skipped() {
    let server = TestServer::start(ServerConfig::default());
    let path = server.path.clone();
    with_timeout(Duration::from_secs(60), move || {
        let config = ClientConfig { call_timeout: Duration::from_millis(200), ..ClientConfig::default() };
        let client = Client::connect_with(&path, config).unwrap();
        assert_eq!(client.call(BLACKHOLE, b"x"), Err(CallError::Timeout));
        // The lane is still usable afterwards.
        for i in 0..100u32 {
            assert_eq!(client.call(ECHO, &i.to_le_bytes()).unwrap().payload, i.to_le_bytes());
        }
    });
}

#[test]
fn detached_client_gets_disconnected() {
    let server = TestServer::start(ServerConfig::default());
    let path = server.path.clone();
    with_timeout(Duration::from_secs(60), move || {
        let client = Client::connect(&path).unwrap();
        assert_eq!(client.call(ECHO, b"a").unwrap().payload, b"a");
        assert_eq!(client.call(DETACH_ME, b""), Err(CallError::Disconnected));
        assert_eq!(client.call(ECHO, b"a"), Err(CallError::Disconnected));
        assert!(!client.is_connected());
    });
}

#[test]
fn daemon_gone_mid_call_is_disconnected() {
    let server = TestServer::start(ServerConfig::default());
    let path = server.path.clone();
    let client = Client::connect(&path).unwrap();
    let id = server.attached();
    let caller = {
        let client = client.clone();
        std::thread::spawn(move || client.call(BLACKHOLE, b"wait"))
    };
    // The call is in flight once the reactor has read it (the only request so far).
    common::wait_until(Duration::from_secs(30), "the call reaches the daemon", || server.handled() == 1);
    drop(server); // stops the reactor and drops every channel
    let r = with_timeout(Duration::from_secs(30), move || caller.join().unwrap());
    assert_eq!(r, Err(CallError::Disconnected), "channel {id}");
}

#[test]
fn peer_credentials_come_from_the_socket() {
    let server = TestServer::start(ServerConfig::default());
    let _client = Client::connect(&server.path).unwrap();
    match server.next_event(Duration::from_secs(10)) {
        Event::Attached { pid, .. } => assert_eq!(pid, std::process::id()),
        other => panic!("{other:?}"),
    }
}
