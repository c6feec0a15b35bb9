//! End to end on one node: a real `trace2ed`, real `trace2e-proc` processes, real files
//! and sockets. Provenance of read-then-write chains, and the three compliance policies.

mod support;

use support::*;
use trace2e_proto::pb::o2m;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn provenance(daemon: &Daemon, path: &std::path::Path) -> Vec<String> {
    rt().block_on(async {
        let mut c = daemon.o2m().await;
        let res = format!("file://{}", path.display());
        c.get_provenance(o2m::ProvenanceRequest { resource: res }).await.unwrap().into_inner().provenance
    })
}

fn set_policy(daemon: &Daemon, resource: &str, confidentiality: Option<o2m::Confidentiality>, integrity: Option<u32>) {
    rt().block_on(async {
        let mut c = daemon.o2m().await;
        c.set_policy(o2m::SetPolicyRequest {
            resource: resource.into(),
            confidentiality: confidentiality.map(|c| c as i32),
            integrity,
        })
        .await
        .unwrap();
    })
}

fn file_id(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn provenance_follows_read_then_write_chains() {
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let (a, b, c) = (d.path("a.txt"), d.path("b.txt"), d.path("c.txt"));
    std::fs::write(&a, b"original data").unwrap();
    assert_ok(&d.proc(&["cp", a.to_str().unwrap(), b.to_str().unwrap()]));
    assert_ok(&d.proc(&["cp", b.to_str().unwrap(), c.to_str().unwrap()]));
    assert_eq!(std::fs::read(&c).unwrap(), b"original data");

    let prov_b = provenance(&d, &b);
    assert!(prov_b.contains(&format!("{}@node-a", file_id(&a))), "{prov_b:?}");
    assert_eq!(prov_b.iter().filter(|r| r.starts_with("process://")).count(), 1, "{prov_b:?}");

    let prov_c = provenance(&d, &c);
    assert!(prov_c.contains(&format!("{}@node-a", file_id(&a))), "{prov_c:?}");
    assert!(prov_c.contains(&format!("{}@node-a", file_id(&b))), "{prov_c:?}");
    // Both copying processes, each a distinct process instance.
    assert_eq!(prov_c.iter().filter(|r| r.starts_with("process://")).count(), 2, "{prov_c:?}");
    // The source file has no provenance of its own.
    assert!(provenance(&d, &a).is_empty());
}

#[test]
fn integrity_protected_file_refuses_data_of_a_low_level_executable_through_an_intermediate_file() {
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    // A second executable: same program, different path, so it can have its own policy.
    let low_exe = d.path("low-proc");
    copy_proc_bin(&low_exe);
    let (src, mid, protected) = (d.path("input.txt"), d.path("mid.txt"), d.path("protected.txt"));
    std::fs::write(&src, b"untrusted").unwrap();
    std::fs::write(&protected, b"trusted content").unwrap();

    // The low-level executable writes the intermediate file.
    assert_ok(&run(d.proc_cmd_with(&low_exe, &["cp", src.to_str().unwrap(), mid.to_str().unwrap()])));

    // trace2e-proc is trusted (level 1), and so are the intermediate and protected files.
    set_policy(&d, &format!("exe://{}", proc_bin().display()), None, Some(1));
    set_policy(&d, &file_id(&mid), None, Some(1));
    set_policy(&d, &file_id(&protected), None, Some(1));

    let out = d.proc(&["cp", mid.to_str().unwrap(), protected.to_str().unwrap()]);
    let err = assert_denied(&out);
    assert!(err.contains("integrity"), "{err}");
    // The offending source is the low-level process, reached through mid.txt's provenance.
    assert!(err.contains("process://"), "{err}");
    assert_eq!(std::fs::read(&protected).unwrap(), b"trusted content");

    // Data that never touched the low-level executable still flows into the protected file.
    let clean = d.path("clean.txt");
    std::fs::write(&clean, b"clean").unwrap();
    set_policy(&d, &file_id(&clean), None, Some(1));
    assert_ok(&d.proc(&["cp", clean.to_str().unwrap(), protected.to_str().unwrap()]));
    assert_eq!(std::fs::read(&protected).unwrap(), b"clean");
}

#[test]
fn secret_data_never_reaches_an_external_peer_but_public_data_does() {
    // The node owns 127.0.0.2 only: 127.0.0.9 is an external peer.
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let (secret, mid, public) = (d.path("secret.txt"), d.path("mid.txt"), d.path("public.txt"));
    std::fs::write(&secret, b"top secret").unwrap();
    std::fs::write(&public, b"hello world").unwrap();
    set_policy(&d, &file_id(&secret), Some(o2m::Confidentiality::Secret), None);

    // Local copies of secret data are fine (same node).
    assert_ok(&d.proc(&["cp", secret.to_str().unwrap(), mid.to_str().unwrap()]));

    let external = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = external.local_addr().unwrap().to_string();
    let (tx, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..2 {
            let mut s = accept_timeout(&external);
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
            got.push(buf);
        }
        let _ = tx.send(got);
    });

    let out = d.proc(&["send", &addr, mid.to_str().unwrap()]);
    let err = assert_denied(&out);
    assert!(err.contains("confidentiality"), "{err}");
    assert!(err.contains(&file_id(&secret)), "the denial names the secret source: {err}");

    assert_ok(&d.proc(&["send", &addr, public.to_str().unwrap()]));
    // A receiver that failed (panicked) drops its sender: an error here, not a hang.
    let got = received.recv_timeout(PATIENCE).expect("the external peer did not receive two connections");
    assert_eq!(got[0], b"", "no secret byte reached the external peer");
    assert_eq!(got[1], b"hello world");
}

#[test]
fn deleted_data_flows_nowhere_but_unrelated_data_does() {
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let (orig, copy, copy2, other, other2) =
        (d.path("orig.txt"), d.path("copy.txt"), d.path("copy2.txt"), d.path("other.txt"), d.path("other2.txt"));
    std::fs::write(&orig, b"personal data").unwrap();
    std::fs::write(&other, b"unrelated").unwrap();
    assert_ok(&d.proc(&["cp", orig.to_str().unwrap(), copy.to_str().unwrap()]));

    let out = d.cli(&["delete", orig.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The copy made before the deletion is derived from it: denied.
    let err = assert_denied(&d.proc(&["cp", copy.to_str().unwrap(), copy2.to_str().unwrap()]));
    assert!(err.contains("deletion"), "{err}");
    assert!(err.contains(&file_id(&orig)), "{err}");
    // The original itself cannot be read, and nothing can be written into it.
    assert_denied(&d.proc(&["cat", orig.to_str().unwrap()]));
    assert_denied(&d.proc(&["write", orig.to_str().unwrap(), "new"]));
    assert_eq!(std::fs::read(&orig).unwrap(), b"personal data");
    // Unrelated data still flows.
    assert_ok(&d.proc(&["cp", other.to_str().unwrap(), other2.to_str().unwrap()]));
}

#[test]
fn audit_trail_lists_grants_and_denials_with_reasons() {
    let d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let (a, b) = (d.path("a.txt"), d.path("b.txt"));
    std::fs::write(&a, b"abc").unwrap();
    assert_ok(&d.proc(&["cp", a.to_str().unwrap(), b.to_str().unwrap()]));
    set_policy(&d, &file_id(&a), None, Some(0));
    assert!(d.cli(&["delete", a.to_str().unwrap()]).status.success());
    assert_denied(&d.proc(&["cat", a.to_str().unwrap()]));

    let records = rt().block_on(async {
        let mut c = d.o2m().await;
        c.query_audit(o2m::AuditQuery { resource: Some(file_id(&a)), decision: None, limit: 0, after: 0 })
            .await
            .unwrap()
            .into_inner()
            .records
    });
    let granted_read = records.iter().any(|r| r.kind == "request" && r.direction == "read" && r.result == "granted");
    let denied_read =
        records.iter().any(|r| r.kind == "request" && r.result == "denied" && r.reason.contains("deletion"));
    assert!(granted_read, "{records:#?}");
    assert!(denied_read, "{records:#?}");
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ascending sequence numbers: {seqs:?}");

    // The CLI filters on the decision.
    let out = d.cli(&["audit", "--decision", "denied", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("deletion"), "{text}");
    assert!(!text.contains("\"granted\""), "{text}");
}

#[test]
fn the_breakdown_times_every_flow_answer_when_enabled() {
    let d = Daemon::start_with("node-a", &["127.0.0.2"], &[], |cmd| {
        cmd.env("TRACE2E_BREAKDOWN", "1");
    });
    let (a, b) = (d.path("a.txt"), d.path("b.txt"));
    std::fs::write(&a, b"timed data").unwrap();
    assert_ok(&d.proc(&["cp", a.to_str().unwrap(), b.to_str().unwrap()]));

    let audit = d.cli_json(&["audit", "--limit", "0", "--format", "json"]);
    let records = audit["records"].as_array().cloned().unwrap_or_default();
    let requests = records.iter().filter(|r| r["kind"] == "request").count() as u64;
    let reports = records.iter().filter(|r| r["kind"] == "report").count() as u64;
    assert!(requests >= 2, "a read and a write at least: {requests}");

    let status = d.cli_json(&["status", "--format", "json"]);
    let stages = status["breakdown"]["stages"].as_array().cloned().unwrap_or_default();
    let stage = |name: &str| {
        let s = stages.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no stage {name}: {status}"));
        (s["total_ns"].as_u64().unwrap(), s["count"].as_u64().unwrap())
    };
    // Each flow request answered once (none had to wait here), and the daemon's whole
    // service covers every request and report at least.
    let (answer_ns, answers) = stage("daemon_to_answer");
    assert_eq!(answers, requests, "{status}");
    assert!(answer_ns > 0);
    let (service_ns, services) = stage("daemon_service");
    assert!(services >= requests + reports, "{services} services for {requests} requests and {reports} reports");
    assert!(service_ns >= answer_ns, "service {service_ns} ns < answers {answer_ns} ns");
}
