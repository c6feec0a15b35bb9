//! One engine: local flows, policies, consent, leases, the audit trail.

use super::*;

#[tokio::test]
async fn try_request_decides_at_once_or_takes_nothing() {
    let e = engine();
    let (p, q) = (attach(&e, 1), attach(&e, 2));
    e.enroll(p, Fd(3), file("/a")).unwrap();
    e.enroll(q, Fd(3), file("/a")).unwrap();
    let g = grant_of(&e.try_request(p, Fd(3), Direction::Write).unwrap().expect("decided at once"));
    let recorded = e.audit(&AuditQuery::default()).unwrap().len();
    assert!(e.try_request(q, Fd(3), Direction::Read).unwrap().is_none(), "p's write holds /a");
    assert_eq!(e.audit(&AuditQuery::default()).unwrap().len(), recorded, "a refused try records nothing");
    assert_eq!(e.status().active_grants, 1);
    let waiting = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.request(q, Fd(3), Direction::Read).await })
    };
    // The report must wake a request queued on /a, not one that has not asked yet.
    settle(|| e.reservations.waiting() == 1).await;
    e.report(p, g, IoOutcome { ok: true, bytes: 4 }).unwrap();
    let read = grant_of(&within(waiting).await.unwrap().unwrap());
    e.report(q, read, IoOutcome { ok: true, bytes: 4 }).unwrap();
    assert!(e.provenance(&Resource::Process(q)).contains(&at(&Resource::Process(p))));
    assert!(e.reservations_idle());
}

#[test]
fn the_engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}

#[tokio::test]
async fn enroll_unenroll_and_fd_reuse() {
    let e = engine();
    let p = attach(&e, 1);
    attach(&e, 1); // idempotent
    e.enroll(p, Fd(3), file("/a")).unwrap();
    e.enroll(p, Fd(3), file("/b")).unwrap(); // reused fd
    assert_eq!(e.status().enrolled_fds, 1);
    io(&e, p, 3, Direction::Read, 1).await;
    assert_eq!(e.provenance(&Resource::Process(p)), vec![at(&file("/b"))]);
    let kinds: Vec<AuditKind> = e.audit(&AuditQuery::default()).unwrap().iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::Attach,
            AuditKind::Enroll,
            AuditKind::Unenroll,
            AuditKind::Enroll,
            AuditKind::Request,
            AuditKind::Report
        ]
    );
    e.unenroll(p, Fd(3)).unwrap();
    assert_eq!(e.unenroll(p, Fd(3)), Err(EngineError::NotEnrolled { process: p, fd: Fd(3) }));
    assert_eq!(e.request(p, Fd(3), Direction::Read).await, Err(EngineError::NotEnrolled { process: p, fd: Fd(3) }));
    let stranger = ProcessId { pid: 99, starttime: 1 };
    assert_eq!(e.enroll(stranger, Fd(3), file("/a")), Err(EngineError::UnknownProcess { process: stranger }));
    let exe = Resource::Executable("/bin/x".into());
    assert!(matches!(e.enroll(p, Fd(4), exe), Err(EngineError::NotAFlowEndpoint { .. })));
    assert!(matches!(e.enroll(p, Fd(4), Resource::Process(p)), Err(EngineError::NotAFlowEndpoint { .. })));
}

#[tokio::test]
async fn provenance_follows_read_then_write() {
    let e = engine();
    let p1 = attach(&e, 1);
    e.enroll(p1, Fd(3), file("/file1")).unwrap();
    e.enroll(p1, Fd(4), file("/file2")).unwrap();
    io(&e, p1, 3, Direction::Read, 10).await;
    io(&e, p1, 4, Direction::Write, 4).await;
    io(&e, p1, 4, Direction::Write, 6).await;
    let mut want = vec![at(&file("/file1")), at(&Resource::Process(p1))];
    want.sort();
    assert_eq!(e.provenance(&file("/file2")), want);
    assert!(e.provenance(&file("/unknown")).is_empty());
    let lineage = e.lineage(&file("/file2"));
    assert_eq!(lineage.len(), 2);
    let last = lineage.iter().find(|l| l.destination == at(&file("/file2"))).unwrap();
    assert_eq!((last.flows, last.bytes), (2, 10));
    assert!(last.first_us <= last.last_us);
    assert!(e.reservations_idle());
}

#[tokio::test]
async fn failed_and_empty_reports_do_not_merge() {
    let e = engine();
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/a")).unwrap();
    let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
    e.report(p, g, IoOutcome { ok: false, bytes: 0 }).unwrap();
    let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
    e.report(p, g, IoOutcome { ok: true, bytes: 0 }).unwrap();
    assert!(e.provenance(&Resource::Process(p)).is_empty());
    assert!(e.lineage(&Resource::Process(p)).is_empty());
    let reports = e.audit(&AuditQuery::default()).unwrap();
    let results: Vec<&AuditOutcome> =
        reports.iter().filter(|r| r.kind == AuditKind::Report).map(|r| &r.result).collect();
    assert_eq!(results, [&AuditOutcome::Failed, &AuditOutcome::Ok]);
}

#[tokio::test]
async fn a_report_by_another_process_is_rejected_and_the_grant_kept() {
    let e = engine();
    let (p1, p2) = (attach(&e, 1), attach(&e, 2));
    e.enroll(p1, Fd(3), file("/a")).unwrap();
    let g = grant_of(&ask(&e, p1, 3, Direction::Read).await);
    let ok = IoOutcome { ok: true, bytes: 1 };
    assert_eq!(e.report(p2, g, ok), Err(EngineError::WrongProcess { grant: g, process: p2 }));
    assert_eq!(e.status().active_grants, 1);
    e.report(p1, g, ok).unwrap();
    assert_eq!(e.report(p1, g, ok), Err(EngineError::UnknownGrant { grant: g }));
    assert_eq!(e.report(p1, GrantId(0), ok), Err(EngineError::UnknownGrant { grant: GrantId(0) }));
    assert!(e.reservations_idle());
}

#[tokio::test]
async fn grants_and_denials_are_audited() {
    let e = engine();
    let p = attach(&e, 12);
    e.enroll(p, Fd(3), file("/in")).unwrap();
    e.enroll(p, Fd(4), file("/out")).unwrap();
    e.set_policy(&file("/out"), None, Some(IntegrityLevel(1))).unwrap();
    io(&e, p, 3, Direction::Read, 5).await;
    let denial = denial_of(ask(&e, p, 4, Direction::Write).await);
    assert_eq!(denial.policy, PolicyKind::Integrity);
    assert_eq!(denial.resource, at(&Resource::Process(p)));
    assert_eq!(denial.reason, "integrity 0 of process://12.7@n1 (/bin/app12) is below 1 required by file:///out@n1");

    let all = e.audit(&AuditQuery::default()).unwrap();
    assert!(all.windows(2).all(|w| w[0].seq.0 + 1 == w[1].seq.0) && all[0].seq == AuditSeq(1));
    let read = all.iter().find(|r| r.kind == AuditKind::Request && r.direction == Some(Direction::Read)).unwrap();
    assert_eq!(read.source, Some(at(&file("/in"))));
    assert_eq!(read.destination, Some(at(&Resource::Process(p))));
    assert_eq!(read.result, AuditOutcome::Granted);
    assert!(read.grant.is_some() && read.node == n1() && read.fd == Some(Fd(3)));
    let report = all.iter().find(|r| r.kind == AuditKind::Report).unwrap();
    assert_eq!((report.bytes, report.grant), (5, read.grant));

    let q = AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() };
    let denied = e.audit(&q).unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].result, AuditOutcome::Denied(denial));
    let q = AuditQuery { resource: Some(at(&file("/in"))), ..Default::default() };
    let kinds: Vec<AuditKind> = e.audit(&q).unwrap().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [AuditKind::Enroll, AuditKind::Request, AuditKind::Report]);
    let q = AuditQuery { limit: 2, ..Default::default() };
    assert_eq!(
        e.audit(&q).unwrap().iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        [all.len() as u64 - 1, all.len() as u64]
    );
    assert!(e.reservations_idle(), "a denial releases its reservations");
}

#[tokio::test]
async fn status_counts() {
    let e = engine();
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/a")).unwrap();
    e.enroll(p, Fd(4), file("/b")).unwrap();
    let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
    e.delete(&file("/b")).unwrap();
    denial_of(ask(&e, p, 4, Direction::Write).await);
    let s = e.status();
    assert_eq!((s.processes, s.enrolled_fds, s.active_grants, s.granted, s.denied), (1, 2, 1, 1, 1));
    assert_eq!(s.labelled_resources, 4, "process, exe, /a, /b");
    assert_eq!(s.audit_records, e.audit(&AuditQuery::default()).unwrap().len());
    e.report(p, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
    e.process_exited(p);
    let s = e.status();
    assert_eq!((s.processes, s.enrolled_fds, s.active_grants), (0, 0, 0));
}

#[tokio::test]
async fn operator_policies() {
    let e = engine();
    let before = e.status().labelled_resources;
    assert_eq!(e.policy(&file("/x")), Policy::default());
    assert_eq!(e.status().labelled_resources, before, "policy() inserts nothing");
    let p = e.set_policy(&file("/x"), Some(Confidentiality::Secret), None).unwrap();
    assert_eq!((p.confidentiality, p.integrity), (Confidentiality::Secret, IntegrityLevel(0)));
    let p = e.set_policy(&file("/x"), None, Some(IntegrityLevel(4))).unwrap();
    assert_eq!((p.confidentiality, p.integrity), (Confidentiality::Secret, IntegrityLevel(4)));
    e.delete(&file("/x")).unwrap();
    e.delete(&file("/x")).unwrap();
    assert!(e.policy(&file("/x")).deleted);
    assert!(matches!(e.set_policy(&file("/x"), None, Some(IntegrityLevel(1))), Err(EngineError::Deleted { .. })));
    let exe = Resource::Executable("/usr/bin/server".into());
    assert_eq!(e.set_policy(&exe, None, Some(IntegrityLevel(2))).unwrap().integrity, IntegrityLevel(2));
    assert!(matches!(e.delete(&exe), Err(EngineError::NotAFlowEndpoint { .. })));
    let p = ProcessId { pid: 5, starttime: 5 };
    e.attach_process(ProcessInfo { id: p, exe: "/usr/bin/server".into(), uid: UserId(0) });
    assert_eq!(e.policy(&Resource::Process(p)).integrity, IntegrityLevel(2), "inherited from exe");
    let kinds: Vec<AuditKind> = e.audit(&AuditQuery::default()).unwrap().iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::PolicyChange,
            AuditKind::PolicyChange,
            AuditKind::Delete,
            AuditKind::PolicyChange,
            AuditKind::Attach
        ]
    );
}

#[tokio::test]
async fn a_policy_change_invalidates_cached_decisions() {
    let e = engine();
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/out")).unwrap();
    io(&e, p, 3, Direction::Write, 1).await;
    io(&e, p, 3, Direction::Write, 1).await; // cached
    e.set_policy(&file("/out"), None, Some(IntegrityLevel(1))).unwrap();
    assert_eq!(denial_of(ask(&e, p, 3, Direction::Write).await).policy, PolicyKind::Integrity);
    e.set_policy(&Resource::Executable("/bin/app1".into()), None, Some(IntegrityLevel(1))).unwrap();
    io(&e, p, 3, Direction::Write, 1).await;
}

#[tokio::test]
async fn a_deleted_destination_denies_without_any_provenance() {
    let e = engine();
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/gone")).unwrap();
    e.delete(&file("/gone")).unwrap();
    let d = denial_of(ask(&e, p, 3, Direction::Write).await);
    assert_eq!((d.policy, d.resource), (PolicyKind::Deletion, at(&file("/gone"))));
    // And what was read from a deleted file can go nowhere.
    e.enroll(p, Fd(4), file("/other")).unwrap();
    let q = attach(&e, 2);
    e.enroll(q, Fd(3), file("/src")).unwrap();
    e.enroll(q, Fd(4), file("/dst")).unwrap();
    io(&e, q, 3, Direction::Read, 1).await;
    e.delete(&file("/src")).unwrap();
    let d = denial_of(ask(&e, q, 4, Direction::Write).await);
    assert_eq!((d.policy, d.resource), (PolicyKind::Deletion, at(&file("/src"))));
}

#[tokio::test]
async fn streams_between_local_processes_carry_provenance() {
    let e = engine();
    let (writer, reader) = (attach(&e, 1), attach(&e, 2));
    let a: std::net::SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let b: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
    e.enroll(writer, Fd(3), file("/data")).unwrap();
    e.enroll(writer, Fd(4), Resource::stream(a, b)).unwrap();
    e.enroll(reader, Fd(3), Resource::stream(b, a)).unwrap();
    io(&e, writer, 3, Direction::Read, 8).await;
    io(&e, writer, 4, Direction::Write, 8).await;
    assert!(e.provenance(&Resource::stream(a, b)).is_empty(), "the sender's view is not the destination");
    assert!(e.provenance(&Resource::stream(b, a)).contains(&at(&file("/data"))));
    io(&e, reader, 3, Direction::Read, 8).await;
    let prov = e.provenance(&Resource::Process(reader));
    assert!(prov.contains(&at(&file("/data"))) && prov.contains(&at(&Resource::Process(writer))));
}

#[tokio::test]
async fn secret_data_never_goes_to_an_external_peer() {
    let e = engine();
    let p = attach(&e, 1);
    let stream = Resource::stream("10.0.0.1:4000".parse().unwrap(), "9.9.9.9:443".parse().unwrap());
    e.enroll(p, Fd(3), file("/secret")).unwrap();
    e.enroll(p, Fd(4), stream.clone()).unwrap();
    io(&e, p, 4, Direction::Write, 3).await; // nothing secret yet
    e.set_policy(&file("/secret"), Some(Confidentiality::Secret), None).unwrap();
    io(&e, p, 3, Direction::Read, 3).await; // a local process may read local secrets
    let d = denial_of(ask(&e, p, 4, Direction::Write).await);
    assert_eq!((d.policy, d.resource), (PolicyKind::Confidentiality, at(&file("/secret"))));
    let records = e.audit(&AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() }).unwrap();
    assert_eq!(records[0].external_peer, Some("9.9.9.9:443".parse().unwrap()));
    assert_eq!(records[0].destination, Some(at(&stream)));
    assert!(e.reservations_idle());
}

#[tokio::test]
async fn a_busy_resource_denies_after_the_timeout() {
    let e = engine();
    let (p1, p2) = (attach(&e, 1), attach(&e, 2));
    e.enroll(p1, Fd(3), file("/shared")).unwrap();
    e.enroll(p2, Fd(3), file("/shared")).unwrap();
    let g = grant_of(&ask(&e, p1, 3, Direction::Write).await);
    let d = denial_of(ask(&e, p2, 3, Direction::Read).await);
    assert_eq!((d.policy, d.resource), (PolicyKind::Busy, at(&file("/shared"))));
    e.report(p1, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
    io(&e, p2, 3, Direction::Read, 1).await;
    assert!(e.reservations_idle());
}

#[tokio::test]
async fn leases_expire_and_release() {
    let mut c = config();
    c.lease = Duration::from_millis(500);
    let e = Arc::new(Engine::new(c));
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/a")).unwrap();
    let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
    assert_eq!(e.expire_leases(), 0);
    assert_eq!(until_expired(&e).await, 1);
    assert!(e.reservations_idle());
    assert_eq!(e.provenance(&Resource::Process(p)), vec![at(&file("/a"))], "assumed performed");
    assert_eq!(e.report(p, g, IoOutcome { ok: true, bytes: 1 }), Err(EngineError::UnknownGrant { grant: g }));
    assert!(
        e.audit(&AuditQuery::default()).unwrap().iter().any(|r| r.kind == AuditKind::Expired && r.grant == Some(g))
    );
}

#[tokio::test]
async fn process_exit_ends_grants_and_enrollments() {
    let e = engine();
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/a")).unwrap();
    e.enroll(p, Fd(4), file("/b")).unwrap();
    grant_of(&ask(&e, p, 3, Direction::Read).await);
    e.process_exited(p);
    assert!(e.reservations_idle());
    assert_eq!(e.status().enrolled_fds, 0);
    assert_eq!(e.request(p, Fd(3), Direction::Read).await, Err(EngineError::NotEnrolled { process: p, fd: Fd(3) }));
    let kinds: Vec<AuditKind> =
        e.audit(&AuditQuery { after: AuditSeq(4), ..Default::default() }).unwrap().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [AuditKind::Expired, AuditKind::Unenroll, AuditKind::Unenroll, AuditKind::Exit]);
    // The label keeps the executable: a policy set on it later still applies to the
    // exited process (what a reader of its writes is judged by).
    e.set_policy(&Resource::Executable("/bin/app1".into()), None, Some(IntegrityLevel(3))).unwrap();
    assert_eq!(e.policy(&Resource::Process(p)).integrity, IntegrityLevel(3));
    e.process_exited(p); // idempotent
}

#[tokio::test]
async fn a_cancelled_request_leaks_nothing() {
    let e = engine();
    let (p1, p2) = (attach(&e, 1), attach(&e, 2));
    e.enroll(p1, Fd(3), file("/a")).unwrap();
    e.enroll(p2, Fd(3), file("/a")).unwrap();
    let g = grant_of(&ask(&e, p1, 3, Direction::Write).await);
    let mut pending = Box::pin(e.request(p2, Fd(3), Direction::Write));
    let waiting = std::future::poll_fn(|cx| std::task::Poll::Ready(pending.as_mut().poll(cx).is_pending())).await;
    assert!(waiting, "p1's write holds /a");
    assert_eq!(e.reservations.waiting(), 1);
    drop(pending);
    assert_eq!(e.reservations.waiting(), 0, "the cancelled request left the queue");
    e.report(p1, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
    assert!(e.reservations_idle());
}

fn consent_engine() -> (Arc<Engine>, ProcessId) {
    let e = engine();
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/owned")).unwrap();
    e.set_consent_enforced(&file("/owned"), true).unwrap();
    (e, p)
}

#[tokio::test]
async fn consent_times_out_as_a_denial() {
    let (e, p) = consent_engine();
    let d = denial_of(ask(&e, p, 3, Direction::Read).await);
    assert_eq!((d.policy, d.resource), (PolicyKind::Consent, at(&file("/owned"))));
    assert!(e.pending_consents().is_empty() && e.reservations_idle());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_decision_wakes_the_waiting_flow() {
    let mut c = config();
    c.consent_timeout = Duration::from_secs(20);
    let e = Arc::new(Engine::new(c));
    let p = attach(&e, 1);
    e.enroll(p, Fd(3), file("/owned")).unwrap();
    e.set_consent_enforced(&file("/owned"), true).unwrap();
    let task = tokio::spawn({
        let e = e.clone();
        async move { e.request(p, Fd(3), Direction::Read).await }
    });
    settle(|| !e.pending_consents().is_empty()).await;
    let pending = e.pending_consents();
    let want = ConsentRequest {
        source: at(&file("/owned")),
        destination: ConsentDestination::Resource(at(&Resource::Process(p))),
    };
    assert_eq!(pending, vec![want.clone()]);
    e.decide_consent(&want.source, want.destination.clone(), true);
    let g = grant_of(&within(task).await.unwrap().unwrap());
    e.report(p, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
    // Remembered: the next flow does not wait. Then revoked at node level, but the
    // resource-level decision is more specific and still allows.
    io(&e, p, 3, Direction::Read, 1).await;
    e.decide_consent(&want.source, ConsentDestination::Node(n1()), false);
    io(&e, p, 3, Direction::Read, 1).await;
    e.decide_consent(&want.source, want.destination.clone(), false);
    let d = denial_of(ask(&e, p, 3, Direction::Read).await);
    assert_eq!(d.policy, PolicyKind::Consent);
    assert_eq!(d.reason, "the owner of file:///owned@n1 refused consent for process://1.7@n1");
    let decisions =
        e.audit(&AuditQuery::default()).unwrap().into_iter().filter(|r| r.kind == AuditKind::ConsentDecision);
    assert_eq!(decisions.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_flows_complete_and_release_everything() {
    // A reservation timeout no flow reaches (each holds its claims for one yield), so that
    // every one of the 240 flows must be granted: none may be lost or denied as busy.
    let mut c = config();
    c.reservation_timeout = Duration::from_secs(20);
    let e = Arc::new(Engine::new(c));
    let mut tasks = Vec::new();
    for pid in 1..=8u32 {
        let p = attach(&e, pid);
        for fd in 0..3 {
            e.enroll(p, Fd(fd), file(&format!("/shared{fd}"))).unwrap();
        }
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let dir = if (i + pid) % 3 == 0 { Direction::Write } else { Direction::Read };
                let g = grant_of(&e.request(p, Fd((i % 3) as i32), dir).await.unwrap());
                tokio::task::yield_now().await;
                e.report(p, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
            }
        }));
    }
    within(async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    assert!(e.reservations_idle());
    let s = e.status();
    assert_eq!((s.active_grants, s.granted, s.denied), (0, 8 * 30, 0));
}
