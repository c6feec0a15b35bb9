//! `trace2e-test-child`: the client processes of the daemon's end-to-end tests that do
//! something no real tool does (hold a grant without reporting, go quiet after an I/O).
//! Only the tests run it; it is an example so that the test harness never lists these
//! modes as tests of their own.
//!
//! ```text
//! trace2e-test-child hold-grant P2M_GRPC_SOCKET FILE
//!     enroll FILE for writing over P2M gRPC, obtain a grant, print `granted GRANT`, and never
//!     report (wait to be killed)
//! trace2e-test-child read-then-wait FILE
//!     one mediated read of FILE through trace2e-io (TRACE2E_SOCKET), print `read N`,
//!     then wait to be killed without touching the daemon again
//! trace2e-test-child read-many DIR THREADS READS
//!     THREADS threads, thread t reading its 64-byte DIR/in<t>.txt READS times through
//!     trace2e-io, print `done THREADS*READS`, then wait to be killed
//! trace2e-test-child send-many ADDR COUNT...
//!     connect to ADDR through trace2e-io and write one byte at a time: until COUNT
//!     writes in all for each COUNT in turn, printing `sent COUNT` and then waiting for a
//!     line on stdin before going on; exits at the end
//! trace2e-test-child script
//!     a long-lived process driven from stdin, one command a line, one answer a line
//!     on stdout (`ok N`, `denied MESSAGE`, `unavailable MESSAGE` or `error MESSAGE`):
//!       open NAME PATH      open PATH for reading, as NAME (N = 0)
//!       create NAME PATH    create or truncate PATH for writing, as NAME (N = 0)
//!       connect NAME ADDR   connect to ADDR over TCP, as NAME (N = 0)
//!       read NAME           one read of up to 64 KiB from NAME, kept (N = bytes read)
//!       write NAME          write everything read so far to NAME (N = bytes written)
//!       close NAME          drop NAME (N = 0)
//!     it exits 0 at the end of its input
//! ```
//!
//! Exit status 2 on bad arguments, 1 (with a message) when a step fails.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use trace2e_proto::pb::p2m::{self, p2m_client::P2mClient};

/// Longer than any test waits: the test kills the child before.
const FOREVER: Duration = Duration::from_secs(600);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["hold-grant", socket, file] => hold_grant(socket, file),
        ["read-then-wait", file] => read_then_wait(file),
        ["script"] => script(),
        ["send-many", addr, ref counts @ ..] if !counts.is_empty() => {
            match counts.iter().map(|c| c.parse::<u64>()).collect::<std::result::Result<Vec<_>, _>>() {
                Ok(counts) => send_many(addr, &counts),
                Err(_) => Err("every COUNT is a number".into()),
            }
        }
        ["read-many", dir, threads, reads] => match (threads.parse(), reads.parse()) {
            (Ok(threads), Ok(reads)) => read_many(dir, threads, reads),
            _ => Err("THREADS and READS are numbers".into()),
        },
        _ => {
            eprintln!("usage: see the doc of daemon/examples/trace2e-test-child.rs");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace2e-test-child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn announce(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn hold_grant(socket: &str, path: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        // tonic connects to `unix:` endpoints itself.
        let channel = tonic::transport::Endpoint::from_shared(format!("unix://{socket}"))?.connect().await?;
        let mut client = P2mClient::new(channel);
        let fd = file.as_raw_fd();
        let target = p2m::enroll_request::Target::File(p2m::FileTarget { path: path.to_owned() });
        client.enroll(p2m::EnrollRequest { fd, target: Some(target) }).await?;
        let decision =
            client.request(p2m::IoRequest { fd, direction: p2m::Direction::Write as i32 }).await?.into_inner();
        let Some(p2m::io_decision::Decision::Grant(grant)) = decision.decision else {
            return Err(format!("expected a grant, got {decision:?}").into());
        };
        announce(&format!("granted {grant}"))?;
        tokio::time::sleep(FOREVER).await;
        // The file stays open (enrolled) until we are killed.
        drop(file);
        Ok(())
    })
}

fn read_then_wait(path: &str) -> Result<()> {
    let mut file = trace2e_io::fs::File::open(path)?;
    let mut buf = [0u8; 64];
    let n = file.read(&mut buf)?;
    announce(&format!("read {n}"))?;
    std::thread::sleep(FOREVER);
    Ok(())
}

fn read_many(dir: &str, threads: usize, reads: usize) -> Result<()> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let path = std::path::Path::new(dir).join(format!("in{t}.txt"));
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut file = trace2e_io::fs::File::open(&path)?;
                let mut buf = [0u8; 64];
                for _ in 0..reads {
                    file.rewind()?;
                    let n = file.read(&mut buf)?;
                    if n != 64 {
                        return Err(std::io::Error::other(format!("read {n} bytes of {}, not 64", path.display())));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a reader thread panicked")??;
    }
    announce(&format!("done {}", threads * reads))?;
    std::thread::sleep(FOREVER);
    Ok(())
}

/// What `script` holds open, by name.
enum Held {
    File(trace2e_io::fs::File),
    Stream(trace2e_io::net::TcpStream),
}

impl Held {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Held::File(f) => f.read(buf),
            Held::Stream(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Held::File(f) => f.write_all(data),
            Held::Stream(s) => s.write_all(data),
        }
    }
}

fn script() -> Result<()> {
    let mut held: std::collections::HashMap<String, Held> = std::collections::HashMap::new();
    let mut data: Vec<u8> = Vec::new();
    for line in std::io::stdin().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer: std::io::Result<usize> = match words[..] {
            ["open", name, path] => trace2e_io::fs::File::open(path).map(|f| {
                held.insert(name.to_owned(), Held::File(f));
                0
            }),
            ["create", name, path] => trace2e_io::fs::File::create(path).map(|f| {
                held.insert(name.to_owned(), Held::File(f));
                0
            }),
            ["connect", name, addr] => trace2e_io::net::TcpStream::connect(addr).map(|s| {
                held.insert(name.to_owned(), Held::Stream(s));
                0
            }),
            ["read", name] => match held.get_mut(name) {
                Some(h) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    h.read(&mut buf).inspect(|&n| data.extend_from_slice(&buf[..n]))
                }
                None => Err(std::io::Error::other(format!("nothing named {name}"))),
            },
            ["write", name] => match held.get_mut(name) {
                Some(h) => h.write_all(&data).map(|()| data.len()),
                None => Err(std::io::Error::other(format!("nothing named {name}"))),
            },
            ["close", name] => match held.remove(name) {
                Some(_) => Ok(0),
                None => Err(std::io::Error::other(format!("nothing named {name}"))),
            },
            _ => Err(std::io::Error::other(format!("unknown command {line:?}"))),
        };
        let reply = match answer {
            Ok(n) => format!("ok {n}"),
            Err(e) if trace2e_io::Denied::of(&e).is_some() => format!("denied {e}"),
            Err(e) if trace2e_io::DaemonUnavailable::of(&e).is_some() => format!("unavailable {e}"),
            Err(e) => format!("error {e}"),
        };
        announce(&reply)?;
    }
    Ok(())
}

fn send_many(addr: &str, counts: &[u64]) -> Result<()> {
    let mut stream = trace2e_io::net::TcpStream::connect(addr)?;
    let mut sent = 0;
    let mut go = std::io::stdin().lines();
    for &count in counts {
        while sent < count {
            stream.write_all(b"x")?;
            sent += 1;
        }
        announce(&format!("sent {count}"))?;
        go.next().transpose()?;
    }
    Ok(())
}
