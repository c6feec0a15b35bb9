//! Test support: a fake P2M daemon and a runner that isolates each scenario in its own
//! process (the client is process-global, so each scenario needs a fresh process).
//!
//! The fake daemon records every enroll, unenroll, request and report, grants every flow
//! except those configured to be denied, and can be told to stall requests or fail
//! reports.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use trace2e_proto::pb::p2m::{self, p2m_server::P2m, p2m_server::P2mServer};
use trace2e_proto::{Direction, PolicyKind};

/// What the fake daemon saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Enroll {
        fd: i32,
        target: String,
    },
    Unenroll {
        fd: i32,
    },
    /// `target` is what the fd was enrolled as at the time (None: not enrolled).
    Request {
        fd: i32,
        target: Option<String>,
        direction: Direction,
        granted: bool,
    },
    /// The flow a grant was for, and its outcome.
    Report {
        target: String,
        direction: Direction,
        ok: bool,
        bytes: u64,
    },
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    enrolled: HashMap<i32, String>,
    grants: HashMap<u64, (String, Direction)>,
    next_grant: u64,
    /// (target substring, direction or both)
    deny: Vec<(String, Option<Direction>)>,
    fail_reports: bool,
    stall_requests: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Inner>>);

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

#[tonic::async_trait]
impl P2m for Recorder {
    async fn enroll(&self, request: Request<p2m::EnrollRequest>) -> Result<Response<p2m::EnrollResponse>, Status> {
        let r = request.into_inner();
        let target = match r.target {
            Some(p2m::enroll_request::Target::File(f)) => format!("file://{}", f.path),
            Some(p2m::enroll_request::Target::Stream(s)) => format!("tcp://{}/{}", s.local, s.peer),
            None => return Err(Status::invalid_argument("no target")),
        };
        self.with(|i| {
            i.events.push(Event::Enroll { fd: r.fd, target: target.clone() });
            i.enrolled.insert(r.fd, target.clone());
        });
        Ok(Response::new(p2m::EnrollResponse { resource: target }))
    }

    async fn unenroll(
        &self,
        request: Request<p2m::UnenrollRequest>,
    ) -> Result<Response<p2m::UnenrollResponse>, Status> {
        let fd = request.into_inner().fd;
        self.with(|i| {
            i.events.push(Event::Unenroll { fd });
            i.enrolled.remove(&fd);
        });
        Ok(Response::new(p2m::UnenrollResponse {}))
    }

    async fn request(&self, request: Request<p2m::IoRequest>) -> Result<Response<p2m::IoDecision>, Status> {
        let r = request.into_inner();
        let direction = Direction::try_from(r.direction).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(stall) = self.with(|i| i.stall_requests) {
            tokio::time::sleep(stall).await;
        }
        let decision = self.with(|i| {
            let target = i.enrolled.get(&r.fd).cloned();
            let Some(t) = target.clone() else {
                i.events.push(Event::Request { fd: r.fd, target: None, direction, granted: false });
                return Err(Status::failed_precondition(format!("fd {} is not enrolled", r.fd)));
            };
            let denied = i.deny.iter().any(|(pat, d)| t.contains(pat.as_str()) && d.is_none_or(|d| d == direction));
            i.events.push(Event::Request { fd: r.fd, target, direction, granted: !denied });
            if denied {
                Ok(p2m::io_decision::Decision::Denial(p2m::Denial {
                    policy: p2m::PolicyKind::from(PolicyKind::Integrity) as i32,
                    resource: format!("{t}@fake-node"),
                    reason: "denied by the test".into(),
                }))
            } else {
                i.next_grant += 1;
                i.grants.insert(i.next_grant, (t, direction));
                Ok(p2m::io_decision::Decision::Grant(i.next_grant))
            }
        })?;
        Ok(Response::new(p2m::IoDecision { decision: Some(decision) }))
    }

    async fn report(&self, request: Request<p2m::IoReport>) -> Result<Response<p2m::ReportResponse>, Status> {
        let r = request.into_inner();
        self.with(|i| {
            if i.fail_reports {
                return Err(Status::internal("reports fail in this test"));
            }
            let (target, direction) = i.grants.remove(&r.grant).ok_or_else(|| Status::not_found("unknown grant"))?;
            i.events.push(Event::Report { target, direction, ok: r.ok, bytes: r.bytes });
            Ok(Response::new(p2m::ReportResponse {}))
        })
    }
}

/// A fake daemon serving P2M on a Unix socket, on its own runtime.
pub struct FakeDaemon {
    pub recorder: Recorder,
    pub socket: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeDaemon {
    /// Serves on `path`.
    pub fn start(path: &Path) -> FakeDaemon {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let recorder = Recorder::default();
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(path).unwrap()
        };
        let service = P2mServer::new(recorder.clone());
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        FakeDaemon { recorder, socket: path.to_owned(), runtime: Some(runtime) }
    }

    /// Serves on `$TRACE2E_SOCKET`, where the client will look for it.
    pub fn start_from_env() -> FakeDaemon {
        Self::start(Path::new(&std::env::var_os("TRACE2E_SOCKET").expect("TRACE2E_SOCKET is set by the runner")))
    }

    /// Kills the daemon: its connections close, its socket disappears.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn events(&self) -> Vec<Event> {
        self.recorder.with(|i| i.events.clone())
    }

    pub fn clear(&self) {
        self.recorder.with(|i| i.events.clear());
    }

    /// Denies flows on targets containing `pattern` (in `direction`, or both).
    pub fn deny(&self, pattern: &str, direction: Option<Direction>) {
        self.recorder.with(|i| i.deny.push((pattern.to_owned(), direction)));
    }

    pub fn fail_reports(&self, fail: bool) {
        self.recorder.with(|i| i.fail_reports = fail);
    }

    pub fn stall_requests(&self, stall: Option<Duration>) {
        self.recorder.with(|i| i.stall_requests = stall);
    }

    /// Reported flows on `target` (exact): (direction, ok, bytes).
    pub fn flows(&self, target: &str) -> Vec<(Direction, bool, u64)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Report { target: t, direction, ok, bytes } if t == target => Some((direction, ok, bytes)),
                _ => None,
            })
            .collect()
    }

    /// Total bytes reported as successfully moved in `direction` on `target`.
    pub fn bytes(&self, target: &str, direction: Direction) -> u64 {
        self.flows(target).into_iter().filter(|(d, ok, _)| *d == direction && *ok).map(|(_, _, b)| b).sum()
    }

    /// Events about `target`'s fds: enrolls of it, requests and reports on it.
    pub fn enrolls_of(&self, target: &str) -> Vec<i32> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Enroll { fd, target: t } if t == target => Some(fd),
                _ => None,
            })
            .collect()
    }

    pub fn unenrolls(&self) -> Vec<i32> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Unenroll { fd } => Some(fd),
                _ => None,
            })
            .collect()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The file identifier the client enrolls for `path`.
pub fn file_target(path: &Path) -> String {
    format!("file://{}", std::fs::canonicalize(path).unwrap().display())
}

/// The stream identifier the client enrolls for `s`.
pub fn stream_target(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> String {
    format!("tcp://{local}/{peer}")
}

const SCENARIO_VAR: &str = "TRACE2E_TEST_SCENARIO";
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `body` in a fresh child process (this test binary, re-executed with only this
/// test selected), with `TRACE2E_SOCKET` (and, for the gRPC transport the fake daemon
/// speaks, `TRACE2E_GRPC_SOCKET`) pointing at a fresh socket path in a temporary
/// directory plus `env`. Fails if the child fails, does not run `body`, or outlives
/// [`CHILD_TIMEOUT`].
///
/// `name` is the test's function name; use the [`isolated!`] macro to get it right.
pub fn run_isolated(name: &str, env: &[(&str, &str)], body: impl FnOnce()) {
    let marker = format!("trace2e-scenario-ran:{name}");
    if std::env::var(SCENARIO_VAR).as_deref() == Ok(name) {
        body();
        println!("{marker}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO_VAR, name)
        .env("TRACE2E_SOCKET", dir.path().join("p2m.sock"))
        // The fake daemon speaks P2M over gRPC; serve it where the gRPC transport looks.
        .env("TRACE2E_TRANSPORT", "grpc")
        .env("TRACE2E_GRPC_SOCKET", dir.path().join("p2m.sock"))
        .env_remove("TRACE2E_BIND_ADDR")
        .env_remove("TRACE2E_TIMEOUT_MS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!("--- child stdout ---\n{out}\n--- child stderr ---\n{err}");
    match status {
        None => panic!("scenario {name} did not finish within {CHILD_TIMEOUT:?}\n{report}"),
        Some(s) if !s.success() => panic!("scenario {name} failed ({s})\n{report}"),
        Some(_) if !out.contains(&marker) => {
            panic!("scenario {name} did not run (wrong test name?)\n{report}")
        }
        Some(_) => {}
    }
}

/// `isolated!({ body })` or `isolated!([("VAR", "value")], { body })`: runs the body of
/// the enclosing `#[test]` in its own process (see [`run_isolated`]).
macro_rules! isolated {
    ($body:block) => {
        isolated!([], $body)
    };
    ([$($env:expr),* $(,)?], $body:block) => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap();
        let name = path.split_once("::").map_or(path, |(_, rest)| rest);
        $crate::support::run_isolated(name, &[$($env),*], || $body)
    }};
}
