//! Drop-in conformance: the same body runs against std and against trace2e-io (under an
//! allow-all daemon) and must observe the same results.
//!
//! [`drop_in!`] compiles a body twice, once with `fs`, `net`, `File`, `OpenOptions`,
//! `TcpStream` and `TcpListener` from std and once from trace2e-io; the body returns a
//! log of observations (never paths or ports, which differ between runs). The fake-daemon
//! test is here; a real-daemon test can reuse the macro with a `trace2ed` started instead.

#[macro_use]
mod support;

use support::FakeDaemon;

macro_rules! drop_in {
    ($name:ident, |$dir:ident| $body:block) => {
        mod $name {
            pub mod with_std {
                #[allow(unused_imports)]
                use std::fs::{self, File, OpenOptions};
                #[allow(unused_imports)]
                use std::net::{self, TcpListener, TcpStream};
                #[allow(clippy::nonsensical_open_options)] // deliberately, to compare errors
                pub fn run($dir: &std::path::Path) -> Vec<String> $body
            }
            pub mod with_trace2e {
                #[allow(unused_imports)]
                use trace2e_io::fs::{self, File, OpenOptions};
                #[allow(unused_imports)]
                use trace2e_io::net::{self, TcpListener, TcpStream};
                #[allow(clippy::nonsensical_open_options)] // deliberately, to compare errors
                pub fn run($dir: &std::path::Path) -> Vec<String> $body
            }
        }
    };
}

/// Formats a result without paths: `Ok(value)` or the error kind.
fn seen<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> String {
    match r {
        Ok(v) => format!("{what}: Ok({v:?})"),
        Err(e) => format!("{what}: Err({:?})", e.kind()),
    }
}

drop_in!(files, |dir| {
    use crate::seen;
    use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    let p = dir.join("f.txt");
    let mut log = vec![
        seen("write", fs::write(&p, "one\ntwo\n")),
        seen("read_to_string", fs::read_to_string(&p)),
        seen("read", fs::read(&p).map(|v| v.len())),
        seen("open missing", File::open(dir.join("missing")).map(drop)),
        seen("create_new existing", File::create_new(&p).map(drop)),
        seen("truncate read-only", OpenOptions::new().read(true).truncate(true).open(&p).map(drop)),
        seen("truncate+append", OpenOptions::new().append(true).truncate(true).open(&p).map(drop)),
    ];
    let mut f = OpenOptions::new().read(true).append(true).open(&p).unwrap();
    log.push(seen("append", f.write_all(b"three\n")));
    log.push(seen("seek", f.seek(SeekFrom::Start(4))));
    let mut buf = [0u8; 3];
    log.push(seen("read_exact", f.read_exact(&mut buf).map(|()| buf)));
    log.push(seen("read_at", f.read_at(&mut buf, 0).map(|n| (n, buf))));
    log.push(seen("read_exact past end", f.read_exact(&mut [0u8; 64])));
    let lines: Vec<_> = BufReader::new(File::open(&p).unwrap()).lines().collect::<Result<_, _>>().unwrap();
    log.push(format!("lines: {lines:?}"));
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    log.push(seen("set_len", f.set_len(2)));
    log.push(seen("len", f.metadata().map(|m| m.len())));
    log.push(seen("write to read-only", File::open(&p).unwrap().write(b"x")));
    log.push(seen("copy", fs::copy(&p, dir.join("g.txt"))));
    log.push(seen("read copy", fs::read(dir.join("g.txt"))));
    log.push(seen("invalid utf-8", fs::write(&p, [0xff, 0xfe]).and_then(|()| fs::read_to_string(&p))));
    log
});

drop_in!(streams, |_dir| {
    use crate::seen;
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut log = Vec::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    log.push(seen("write", client.write(b"hello")));
    let mut buf = [0u8; 16];
    log.push(seen("read", server.read(&mut buf).map(|n| buf[..n].to_vec())));
    server.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    log.push(seen("read timeout", server.read(&mut buf)));
    server.set_nonblocking(true).unwrap();
    log.push(seen("read nonblocking", server.read(&mut buf)));
    server.set_nonblocking(false).unwrap();
    client.shutdown(net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    log.push(seen("read_to_end after shutdown", server.read_to_end(&mut rest)));
    log.push(seen("write after shutdown", client.write(b"x")));
    log
});

#[test]
fn trace2e_io_behaves_like_std_under_an_allow_all_daemon() {
    isolated!({
        let daemon = FakeDaemon::start_from_env();
        type Body = fn(&std::path::Path) -> Vec<String>;
        let bodies: [(&str, Body, Body); 2] = [
            ("files", files::with_std::run, files::with_trace2e::run),
            ("streams", streams::with_std::run, streams::with_trace2e::run),
        ];
        for (name, std_run, trace2e_run) in bodies {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let expected = std_run(a.path());
            let before = daemon.events().len();
            let got = trace2e_run(b.path());
            assert_eq!(got, expected, "{name}");
            assert!(daemon.events().len() > before, "{name}: the trace2e run was mediated");
        }
    });
}
