//! A daemon thread and a client in one process, doing round trips.
//!
//! `cargo run --release -p trace2e-fastpath --example ping -- [round_trips] [payload_bytes]`
//!
//! Prints the mean round-trip time. Not a benchmark (no warm-up, no percentiles,
//! both ends in one process); `benches/` has the real measurements.

use std::time::Instant;

use trace2e_fastpath::{Client, Listener, Request, ServeError, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let dir = std::env::temp_dir().join(format!("fastpath-ping-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ping.sock");
    let config = ServerConfig::default();
    let listener = Listener::bind(&path, config)?;
    let daemon = std::thread::spawn(move || {
        let mut channel = listener.accept().expect("accept").attach().expect("attach");
        let mut pong = |req: &Request<'_>, reply: &mut Vec<u8>| {
            reply.extend_from_slice(req.payload);
            Some(req.kind)
        };
        loop {
            match channel.serve(None, &mut pong) {
                Ok(_) => {}
                Err(ServeError::PeerGone) => break,
                Err(e) => panic!("daemon: {e}"),
            }
        }
    });

    let client = Client::connect(&path)?;
    let payload = vec![0x5A; size.min(client.max_payload())];
    let mut out = Vec::with_capacity(client.max_payload());
    let start = Instant::now();
    for _ in 0..n {
        client.call_into(1, &payload, &mut out)?;
    }
    let elapsed = start.elapsed();
    assert_eq!(out, payload);
    println!(
        "{n} round trips of {} B in {elapsed:?}: {:.2} µs each (linger {:?})",
        payload.len(),
        elapsed.as_secs_f64() * 1e6 / n as f64,
        config.linger
    );
    drop(client);
    daemon.join().expect("daemon thread");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
