//! The engine's unit tests: [`local`] for one node, [`federation`] for two engines wired
//! together through the fake federation of [`super::fake_peers`].

mod durability;
mod federation;
mod local;

pub(super) use std::sync::Arc;
pub(super) use std::time::Duration;

pub(super) use trace2e_proto::{
    Confidentiality, Decision, Denial, Direction, Fd, GrantId, IntegrityLevel, IoOutcome, LocalizedResource, NodeId,
    Policy, PolicyKind, ProcessId, Resource,
};

pub(super) use super::{Engine, EngineConfig, EngineError, ProcessInfo};
pub(super) use crate::audit::{AuditKind, AuditOutcome, AuditQuery, AuditSeq, DecisionFilter};
pub(super) use crate::consent::{ConsentDestination, ConsentRequest};
pub(super) use crate::enrollment::UserId;
pub(super) use crate::remote::{Federation, RemoteTarget, RemoteToken};
pub(super) use crate::topology::Topology;

pub(super) fn n1() -> NodeId {
    NodeId::new("n1").unwrap()
}

pub(super) fn config() -> EngineConfig {
    let mut c = EngineConfig::new(Topology::new(n1(), vec!["10.0.0.1".parse().unwrap()]));
    c.reservation_timeout = Duration::from_millis(200);
    c.consent_timeout = Duration::from_millis(300);
    c
}

pub(super) fn engine() -> Arc<Engine> {
    Arc::new(Engine::new(config()))
}

pub(super) fn file(p: &str) -> Resource {
    Resource::file(p).unwrap()
}

pub(super) fn at(r: &Resource) -> LocalizedResource {
    r.clone().at(&n1())
}

pub(super) fn attach(e: &Engine, pid: u32) -> ProcessId {
    let id = ProcessId { pid, starttime: 7 };
    e.attach_process(ProcessInfo { id, exe: format!("/bin/app{pid}").into(), uid: UserId(1000) });
    id
}

/// Fails the test instead of hanging.
pub(super) async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("timed out")
}

pub(super) async fn ask(e: &Engine, p: ProcessId, fd: i32, dir: Direction) -> Decision {
    within(e.request(p, Fd(fd), dir)).await.unwrap()
}

pub(super) fn grant_of(d: &Decision) -> GrantId {
    match d {
        Decision::Grant(g) => *g,
        Decision::Denied(d) => panic!("denied: {d}"),
    }
}

pub(super) fn denial_of(d: Decision) -> Denial {
    match d {
        Decision::Denied(d) => d,
        Decision::Grant(g) => panic!("granted {g}"),
    }
}

/// A granted I/O of `bytes`, reported.
pub(super) async fn io(e: &Engine, p: ProcessId, fd: i32, dir: Direction, bytes: u64) {
    let g = grant_of(&ask(e, p, fd, dir).await);
    e.report(p, g, IoOutcome { ok: true, bytes }).unwrap();
}

/// Waits (bounded by [`within`]) until `cond` holds.
pub(super) async fn settle(cond: impl Fn() -> bool) {
    within(async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// Sweeps leases until one or more expire (bounded by [`within`]); how many did.
pub(super) async fn until_expired(e: &Engine) -> usize {
    within(async {
        loop {
            match e.expire_leases() {
                0 => tokio::time::sleep(Duration::from_millis(5)).await,
                n => return n,
            }
        }
    })
    .await
}
