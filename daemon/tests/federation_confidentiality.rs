//! Federation, scenario 2: the owner keeps the decision. node-a marks its original secret
//! after copies exist on node-b and node-c: node-c's process can no longer send node-c's
//! copy to another node or to an external peer, node-a's own local copies still work, and
//! marking it public again allows the flow.

mod support;

use support::cluster::*;
use support::*;

#[test]
fn a_secret_original_stops_its_remote_copies_until_it_is_public_again() {
    let cluster = Cluster::start(NODES, &[]);
    let (a, b, c) = (cluster.daemon("node-a"), cluster.daemon("node-b"), cluster.daemon("node-c"));
    let original = a.path("original.txt");
    let (at_b, at_c) = (b.path("copy.txt"), c.path("copy.txt"));
    assert_ok(&cluster.proc("node-a", &["write", original.to_str().unwrap(), "classified"]));
    let (s, r) = cluster.transfer("node-a", &original, "node-b", &at_b);
    assert_ok(&s);
    assert_ok(&r);
    let (s, r) = cluster.transfer("node-b", &at_b, "node-c", &at_c);
    assert_ok(&s);
    assert_ok(&r);

    // Before: node-c may pass its copy on.
    let (s, r) = cluster.transfer("node-c", &at_c, "node-b", &b.path("back-1.txt"));
    assert_ok(&s);
    assert_ok(&r);

    cluster.cli_ok("node-a", &["policy", "set", original.to_str().unwrap(), "--confidentiality", "secret"]);
    let original_id = format!("{}@node-a", file_id(&original));

    // To another managed node: denied by node-a's policy, named as such.
    let (sent, _) = cluster.transfer("node-c", &at_c, "node-b", &b.path("back-2.txt"));
    let err = assert_denied(&sent);
    assert!(err.contains("confidentiality") && err.contains(&original_id), "{err}");
    assert!(!b.path("back-2.txt").exists() || std::fs::read(b.path("back-2.txt")).unwrap().is_empty());

    // To an external peer: denied too.
    let external = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = external.local_addr().unwrap().to_string();
    let out = cluster.proc("node-c", &["send", &addr, at_c.to_str().unwrap()]);
    let err = assert_denied(&out);
    assert!(err.contains("confidentiality") && err.contains(&original_id), "{err}");
    // node-b's copy is stopped the same way.
    let out = cluster.proc("node-b", &["send", &addr, at_b.to_str().unwrap()]);
    assert!(assert_denied(&out).contains(&original_id));
    drop(external);

    // node-a's own processes keep using it locally.
    let local = a.path("local-copy.txt");
    assert_ok(&cluster.proc("node-a", &["cp", original.to_str().unwrap(), local.to_str().unwrap()]));
    assert_ok(&cluster.proc("node-a", &["cp", local.to_str().unwrap(), a.path("local-2.txt").to_str().unwrap()]));

    // The owner audited its refusal.
    let refusals =
        cluster.audit("node-a").into_iter().filter(|r| r["kind"] == "remote_check" && r["result"] == "denied").count();
    // Three flows were denied since the policy change (node-c to node-b, node-c to the
    // external peer, node-b to the external peer), each stopped at its first I/O of
    // node-a's data after one question to node-a.
    assert_eq!(refusals, 3, "node-a answered node-c's two questions and node-b's one");

    // Public again: the flow is allowed.
    cluster.cli_ok("node-a", &["policy", "set", original.to_str().unwrap(), "--confidentiality", "public"]);
    let (s, r) = cluster.transfer("node-c", &at_c, "node-b", &b.path("back-3.txt"));
    assert_ok(&s);
    assert_ok(&r);
    assert_eq!(std::fs::read(b.path("back-3.txt")).unwrap(), b"classified");
}
