//! Drop-in conformance: the same body, run once with `std::fs`/`std::net` and once with
//! `trace2e_io::fs`/`trace2e_io::net` under an allow-all policy (a fresh daemon), gives the
//! same results — contents, positions, error kinds, generic consumers.

mod support;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

macro_rules! conformance_body {
    ($fs:path, $net:path, $dir:expr) => {{
        use $fs as fs;
        use $net as net;
        let dir: &Path = $dir;
        let mut log: Vec<String> = Vec::new();
        let p = dir.join("a.txt");
        let q = dir.join("b.txt");

        // Free functions.
        fs::write(&p, b"hello\nworld\n").unwrap();
        log.push(format!("read: {:?}", fs::read(&p).map_err(|e| e.kind())));
        log.push(format!("read_to_string: {:?}", fs::read_to_string(&p).map_err(|e| e.kind())));
        log.push(format!("missing: {:?}", fs::read(dir.join("missing")).map_err(|e| e.kind())));

        // File: open options, write, seek, read, append.
        let mut f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&q).unwrap();
        f.write_all(b"0123456789").unwrap();
        log.push(format!("seek start: {:?}", f.seek(SeekFrom::Start(2)).unwrap()));
        let mut buf = [0u8; 4];
        f.read_exact(&mut buf).unwrap();
        log.push(format!("read_exact: {:?}", buf));
        log.push(format!("seek end: {:?}", f.seek(SeekFrom::End(-3)).unwrap()));
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        log.push(format!("tail: {rest:?}"));
        log.push(format!("eof read: {:?}", f.read(&mut buf).unwrap()));
        log.push(format!("len: {}", f.metadata().unwrap().len()));
        f.set_len(5).unwrap();
        drop(f);
        let mut app = fs::OpenOptions::new().append(true).open(&q).unwrap();
        app.write_all(b"++").unwrap();
        drop(app);
        log.push(format!("after append: {:?}", fs::read_to_string(&q).unwrap()));
        log.push(format!("create_new existing: {:?}", fs::File::create_new(&q).map(|_| ()).map_err(|e| e.kind())));
        log.push(format!("open missing: {:?}", fs::File::open(dir.join("nope")).map(|_| ()).map_err(|e| e.kind())));

        // Generic consumers: BufReader lines, io::copy, serde_json::from_reader, &File.
        let lines: Vec<String> = BufReader::new(fs::File::open(&p).unwrap()).lines().map(|l| l.unwrap()).collect();
        log.push(format!("lines: {lines:?}"));
        let mut src = fs::File::open(&p).unwrap();
        let mut dst = fs::File::create(dir.join("c.txt")).unwrap();
        log.push(format!("copy: {:?}", std::io::copy(&mut src, &mut dst).unwrap()));
        drop(dst);
        log.push(format!("copied: {:?}", fs::read(dir.join("c.txt")).unwrap()));
        fs::write(dir.join("j.json"), br#"{"k": [1, 2, 3]}"#).unwrap();
        let v: serde_json::Value = serde_json::from_reader(fs::File::open(dir.join("j.json")).unwrap()).unwrap();
        log.push(format!("json: {v}"));
        let shared = fs::File::open(&p).unwrap();
        let mut by_ref = &shared;
        let mut two = [0u8; 2];
        by_ref.read_exact(&mut two).unwrap();
        log.push(format!("by ref: {two:?}"));

        // TCP: an echo server on loopback, both ends of the same type.
        let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got.to_ascii_uppercase()).unwrap();
            got.len()
        });
        let mut c = net::TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        log.push(format!("nodelay: {:?}", c.nodelay().unwrap()));
        c.write_all(b"ping pong").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echoed = String::new();
        c.read_to_string(&mut echoed).unwrap();
        log.push(format!("echo: {echoed:?}, server got {}", server.join().unwrap()));
        log.push(format!("after eof: {:?}", c.read(&mut buf).unwrap()));
        log.push(format!("refused: {:?}", net::TcpStream::connect(addr).map(|_| ()).map_err(|e| e.kind())));
        log
    }};
}

#[test]
fn trace2e_io_behaves_like_std() {
    let std_dir = tempfile::tempdir().unwrap();
    let expected = conformance_body!(std::fs, std::net, std_dir.path());

    let daemon = support::Daemon::start("node-a", &["127.0.0.1"], &[]);
    // SAFETY: set before any thread of this test binary reads the environment concurrently
    // (this binary has a single test, and the io client reads it lazily on first use).
    unsafe { std::env::set_var("TRACE2E_SOCKET", &daemon.p2m) };
    let t2e_dir = tempfile::tempdir().unwrap();
    let actual = conformance_body!(trace2e_io::fs, trace2e_io::net, t2e_dir.path());
    assert_eq!(actual, expected, "over shared memory");

    // The same over the gRPC baseline transport.
    // SAFETY: as above; no other thread is running mediated I/O now.
    unsafe { std::env::set_var("TRACE2E_TRANSPORT", "grpc") };
    trace2e_io::reset_client_for_benchmarks();
    let grpc_dir = tempfile::tempdir().unwrap();
    let over_grpc = conformance_body!(trace2e_io::fs, trace2e_io::net, grpc_dir.path());
    assert_eq!(over_grpc, expected, "over gRPC");
    let grpc_file = grpc_dir.path().canonicalize().unwrap().join("a.txt");

    // And it really was mediated: the daemon audited reads and writes of our files.
    let audit = daemon.cli_json(&["audit", "--limit", "0", "--format", "json"]).to_string();
    let a = t2e_dir.path().canonicalize().unwrap().join("a.txt");
    assert!(audit.contains(&a.display().to_string()), "no audit record for {}", a.display());
    assert!(audit.contains(&grpc_file.display().to_string()), "no audit record for {}", grpc_file.display());
}
