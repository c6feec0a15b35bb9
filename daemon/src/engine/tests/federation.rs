//! Two engines, n1 (10.0.0.1) and n2 (10.0.0.2), peers of each other through the fake
//! federation: streams across nodes, owners' decisions, consent, peers' questions.

use super::*;
use crate::engine::fake_peers::Loopback;

fn n2() -> NodeId {
    NodeId::new("n2").unwrap()
}

const N1_ADDR: &str = "10.0.0.1:4000";
const N2_ADDR: &str = "10.0.0.2:5000";

/// Engines of n1 (10.0.0.1) and n2 (10.0.0.2), peers of each other.
fn pair() -> (Arc<Engine>, Arc<Loopback>, Arc<Engine>, Arc<Loopback>) {
    let make = |me: NodeId, ip: &str, peer: NodeId, peer_ip: &str| {
        let topology =
            Topology::new(me.clone(), vec![ip.parse().unwrap()]).with_peer(peer, vec![peer_ip.parse().unwrap()]);
        let mut c = EngineConfig::new(topology);
        c.reservation_timeout = Duration::from_millis(300);
        c.consent_timeout = Duration::from_millis(300);
        c.m2m_timeout = Duration::from_millis(500);
        c.remote_cache_ttl = Duration::from_secs(60);
        let fed = Loopback::new(me);
        (Arc::new(Engine::with_federation(c, fed.clone())), fed)
    };
    let (e1, f1) = make(n1(), "10.0.0.1", n2(), "10.0.0.2");
    let (e2, f2) = make(n2(), "10.0.0.2", n1(), "10.0.0.1");
    f1.connect(&e2);
    f2.connect(&e1);
    (e1, f1, e2, f2)
}

/// The stream from n1's writer to n2's reader, as each end enrolls it.
fn streams() -> (Resource, Resource) {
    let (a, b) = (N1_ADDR.parse().unwrap(), N2_ADDR.parse().unwrap());
    (Resource::stream(a, b), Resource::stream(b, a))
}

/// n1's process 1 reads 4 bytes of `path` (fd 3) and writes them to n2 over the
/// stream (fd 4); returns it and n2's side of the stream once n2 merged the write.
async fn sent_to_n2(e1: &Engine, f1: &Loopback, e2: &Engine, path: &str) -> (ProcessId, Resource) {
    let writer = attach(e1, 1);
    let (out, inn) = streams();
    e1.enroll(writer, Fd(3), file(path)).unwrap();
    e1.enroll(writer, Fd(4), out).unwrap();
    io(e1, writer, 3, Direction::Read, 4).await;
    io(e1, writer, 4, Direction::Write, 4).await;
    settle(|| f1.count("update") == 1 && e2.status().remote_reservations == 0).await;
    (writer, inn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_stream_write_carries_provenance_and_repeats_skip_m2m() {
    let (e1, f1, e2, f2) = pair();
    let writer = attach(&e1, 1);
    let (out, inn) = streams();
    e1.enroll(writer, Fd(3), file("/a")).unwrap();
    e1.enroll(writer, Fd(4), out).unwrap();
    io(&e1, writer, 3, Direction::Read, 4).await;
    io(&e1, writer, 4, Direction::Write, 4).await;
    assert_eq!((f1.count("reserve"), f1.count("check")), (1, 0), "all sources are n1's own");
    // The record of what n2 holds is kept once the update succeeded.
    settle(|| !e1.pushed.lock().is_empty()).await;
    let at1 = |r: &Resource| r.clone().at(&n1());
    let prov = e2.provenance(&inn);
    assert!(prov.contains(&at1(&file("/a"))) && prov.contains(&at1(&Resource::Process(writer))), "{prov:?}");

    // Unchanged provenance: the next writes go without any M2M call.
    for _ in 0..5 {
        io(&e1, writer, 4, Direction::Write, 4).await;
    }
    assert_eq!((f1.count("reserve"), f1.count("update")), (1, 1));

    // n2's reader asks n1 once about n1's resources, then reuses the answer.
    let reader = attach(&e2, 2);
    e2.enroll(reader, Fd(3), inn.clone()).unwrap();
    io(&e2, reader, 3, Direction::Read, 4).await;
    io(&e2, reader, 3, Direction::Read, 4).await;
    assert_eq!(f2.count("check"), 1);
    let prov = e2.provenance(&Resource::Process(reader));
    assert!(prov.contains(&at1(&file("/a"))), "{prov:?}");
    assert!(e2.audit(&AuditQuery::default()).unwrap().iter().any(|r| r.kind == AuditKind::RemoteFlow));
    assert!(e1.audit(&AuditQuery::default()).unwrap().iter().any(|r| r.kind == AuditKind::RemoteCheck));

    // New provenance: the full protocol again.
    e1.enroll(writer, Fd(5), file("/b")).unwrap();
    io(&e1, writer, 5, Direction::Read, 1).await;
    io(&e1, writer, 4, Direction::Write, 1).await;
    assert_eq!(f1.count("reserve"), 2);
    settle(|| f1.count("update") == 2 && e2.status().remote_reservations == 0).await;
    assert!(e2.provenance(&inn).contains(&at1(&file("/b"))));
    // A notice from n2 (its policy changed, it restarted): no reuse.
    f2.policy_changed().await;
    io(&e1, writer, 4, Direction::Write, 1).await;
    assert_eq!(f1.count("reserve"), 3);
    settle(|| e2.status().remote_reservations == 0).await;
    assert!(e1.reservations_idle() && e2.reservations_idle());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_decide_for_their_resources_and_unreachable_owners_deny() {
    let (e1, f1, e2, f2) = pair();
    let (writer, inn) = sent_to_n2(&e1, &f1, &e2, "/secret").await;
    let reader = attach(&e2, 2);
    e2.enroll(reader, Fd(3), inn).unwrap();
    e2.enroll(reader, Fd(4), file("/copy")).unwrap();
    io(&e2, reader, 3, Direction::Read, 4).await;

    // n1 marks its file secret and tells n2: n2's process may no longer read it.
    e1.set_policy(&file("/secret"), Some(Confidentiality::Secret), None).unwrap();
    e1.announce_policy_change().await;
    e2.enroll(reader, Fd(5), file("/copy")).unwrap();
    let d = denial_of(ask(&e2, reader, 4, Direction::Write).await);
    assert_eq!((d.policy, d.resource.clone()), (PolicyKind::Confidentiality, file("/secret").at(&n1())));
    // n1 itself still uses it locally.
    e1.enroll(writer, Fd(6), file("/local")).unwrap();
    io(&e1, writer, 6, Direction::Write, 1).await;
    // And n1's writes of it to n2 are denied after n2's side was reserved (new
    // provenance: no shortcut): released.
    e1.enroll(writer, Fd(7), file("/fresh")).unwrap();
    io(&e1, writer, 7, Direction::Read, 1).await;
    let d = denial_of(ask(&e1, writer, 4, Direction::Write).await);
    assert_eq!(d.policy, PolicyKind::Confidentiality);
    settle(|| f1.count("release") == 1 && e2.status().remote_reservations == 0).await;

    // Unreachable owner: a clear denial naming it, nothing held.
    e1.set_policy(&file("/secret"), Some(Confidentiality::Public), None).unwrap();
    f2.set_dead(true);
    let d = denial_of(ask(&e2, reader, 4, Direction::Write).await);
    assert_eq!(d.policy, PolicyKind::Unreachable);
    assert!(d.reason.contains("node n1 unreachable: connection refused"), "{}", d.reason);
    f2.set_dead(false);
    io(&e2, reader, 4, Direction::Write, 1).await;

    // Deletion is broadcast: n2 denies locally, without asking.
    e1.delete(&file("/secret")).unwrap();
    e1.announce_deletion(&file("/secret")).await;
    let checks = f2.count("check");
    let d = denial_of(ask(&e2, reader, 4, Direction::Write).await);
    assert_eq!((d.policy, d.resource), (PolicyKind::Deletion, file("/secret").at(&n1())));
    assert_eq!(f2.count("check"), checks);
    assert!(e1.reservations_idle() && e2.reservations_idle());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_consent_question_waits_for_the_owner() {
    let (e1, f1, e2, _f2) = pair();
    let (_writer, inn) = sent_to_n2(&e1, &f1, &e2, "/owned").await;
    e1.set_consent_enforced(&file("/owned"), true).unwrap();
    let reader = attach(&e2, 2);
    e2.enroll(reader, Fd(3), inn).unwrap();
    let task = tokio::spawn({
        let e2 = e2.clone();
        async move { e2.request(reader, Fd(3), Direction::Read).await }
    });
    settle(|| !e1.pending_consents().is_empty()).await;
    let pending = e1.pending_consents();
    assert_eq!(pending[0].destination, ConsentDestination::Resource(Resource::Process(reader).at(&n2())));
    e1.decide_consent(&pending[0].source, ConsentDestination::Node(n2()), true);
    let g = grant_of(&within(task).await.unwrap().unwrap());
    e2.report(reader, g, IoOutcome { ok: true, bytes: 4 }).unwrap();
}

#[tokio::test]
async fn peers_questions_are_checked() {
    let (e1, _f1, _e2, _f2) = pair();
    let stranger = NodeId::new("n9").unwrap();
    let (out, inn) = streams();
    let w = Resource::Process(ProcessId { pid: 1, starttime: 1 }).at(&n2());
    assert!(matches!(
        e1.remote_reserve(&stranger, RemoteToken(1), out.clone(), w.clone(), vec![]).await,
        Err(EngineError::UnknownPeer { .. })
    ));
    // n1's side of the stream is `out` (local end 10.0.0.1); `inn` is n2's.
    assert!(matches!(
        e1.remote_reserve(&n2(), RemoteToken(1), inn, w.clone(), vec![]).await,
        Err(EngineError::NotOwned { .. })
    ));
    let file_w = file("/x").at(&n1());
    assert!(matches!(
        e1.remote_reserve(&n2(), RemoteToken(1), out.clone(), file_w, vec![]).await,
        Err(EngineError::NotOwned { .. })
    ));
    assert_eq!(
        e1.remote_release(&n2(), RemoteToken(77)),
        Err(EngineError::UnknownReservation { node: n2(), token: RemoteToken(77) })
    );
    assert!(matches!(e1.remote_update(&n2(), RemoteToken(77), true, 1), Err(EngineError::UnknownReservation { .. })));
    let target = RemoteTarget { resource: file("/y").at(&n2()), external_peer: None, policy: Policy::default() };
    let theirs = vec![file("/x").at(&n2())];
    assert!(matches!(e1.check_sources(&n2(), theirs, target).await, Err(EngineError::NotOwned { .. })));
    assert!(matches!(e1.remote_deleted(&n2(), &file("/x").at(&n1())), Err(EngineError::NotOwned { .. })));
    // A reservation whose holder never comes back ends with its lease, assumed performed.
    let mut c = e1.config().clone();
    c.remote_lease = Duration::from_millis(50);
    let e = Engine::new(c);
    let r = e.remote_reserve(&n2(), RemoteToken(5), out.clone(), w.clone(), vec![file("/z").at(&n2())]).await.unwrap();
    assert_eq!(r, Ok(Policy::default()));
    assert!(matches!(
        e.remote_reserve(&n2(), RemoteToken(5), out.clone(), w, vec![]).await,
        Err(EngineError::DuplicateToken { .. })
    ));
    // The hold ends once its 50 ms lease has passed, not before.
    assert_eq!(e.expire_leases(), 0);
    assert_eq!(e.status().remote_reservations, 1);
    assert_eq!(until_expired(&e).await, 1);
    assert!(e.provenance(&out).contains(&file("/z").at(&n2())));
    assert!(e.reservations_idle());
}

#[tokio::test]
async fn peers_questions_create_no_labels() {
    let (e1, _f1, _e2, _f2) = pair();
    let (out, _inn) = streams();
    let before = e1.status().labelled_resources;
    const QUESTIONS: u32 = 100_000;
    for i in 0..QUESTIONS {
        // A source n1 never heard of, judged with the default policy, to a target n1 has
        // never seen.
        let sources = vec![file(&format!("/never-seen/{i}")).at(&n1())];
        let target = RemoteTarget {
            resource: file(&format!("/theirs/{i}")).at(&n2()),
            external_peer: None,
            policy: Policy::default(),
        };
        assert_eq!(e1.check_sources(&n2(), sources, target).await, Ok(None));
        // A reservation of n1's side of the stream by a writer with a provenance n1 has
        // never seen, given up.
        let writer = Resource::Process(ProcessId { pid: i + 1, starttime: 1 }).at(&n2());
        let provenance = vec![file(&format!("/their-source/{i}")).at(&n2())];
        let token = RemoteToken(u64::from(i));
        assert_eq!(e1.remote_reserve(&n2(), token, out.clone(), writer, provenance).await, Ok(Ok(Policy::default())));
        e1.remote_release(&n2(), token).unwrap();
    }
    assert_eq!(e1.status().labelled_resources, before + 1, "only n1's own side of the stream, once");
    // The audit trail still names what was asked about.
    let last = e1.audit(&AuditQuery { limit: 1, ..Default::default() }).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].kind, AuditKind::RemoteCheck);
    assert_eq!(last[0].source, Some(file(&format!("/never-seen/{}", QUESTIONS - 1)).at(&n1())));
    assert_eq!(last[0].destination, Some(file(&format!("/theirs/{}", QUESTIONS - 1)).at(&n2())));
    // A source without a label is judged, not waved through: integrity 0 < 1.
    let target = RemoteTarget {
        resource: file("/strict").at(&n2()),
        external_peer: None,
        policy: Policy { integrity: IntegrityLevel(1), ..Policy::default() },
    };
    let d = e1.check_sources(&n2(), vec![file("/unknown").at(&n1())], target).await.unwrap().expect("denied");
    assert_eq!((d.policy, d.resource), (PolicyKind::Integrity, file("/unknown").at(&n1())));
    // The same unknown source named twice is judged twice, and still labels nothing.
    let twice = vec![file("/unknown").at(&n1()), file("/unknown").at(&n1())];
    let target = RemoteTarget { resource: file("/lax").at(&n2()), external_peer: None, policy: Policy::default() };
    assert_eq!(e1.check_sources(&n2(), twice, target).await, Ok(None));
    assert_eq!(e1.status().labelled_resources, before + 1);
    assert!(e1.reservations_idle());
}
