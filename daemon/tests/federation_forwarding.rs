//! Federation, scenario 1: data keeps its provenance across nodes. A process on node-a
//! writes a file and sends it to node-b, which saves it and forwards it to node-c; the
//! provenance of node-c's copy names node-a's original file and the processes of node-a
//! and node-b.

mod support;

use support::cluster::*;
use support::*;

#[test]
fn provenance_follows_a_file_from_node_to_node() {
    let cluster = Cluster::start(NODES, &["--m2m-timeout-ms", "2000", "--m2m-cache-ttl-ms", "600000"]);
    let (a, b, c) = (cluster.daemon("node-a"), cluster.daemon("node-b"), cluster.daemon("node-c"));
    let original = a.path("original.txt");
    let at_b = b.path("from-a.txt");
    let at_c = c.path("from-b.txt");
    assert_ok(&cluster.proc("node-a", &["write", original.to_str().unwrap(), "payload from node-a"]));

    let (sent, received) = cluster.transfer("node-a", &original, "node-b", &at_b);
    assert_ok(&sent);
    assert_ok(&received);
    let (sent, received) = cluster.transfer("node-b", &at_b, "node-c", &at_c);
    assert_ok(&sent);
    assert_ok(&received);
    assert_eq!(std::fs::read(&at_c).unwrap(), b"payload from node-a");

    let prov = cluster.provenance("node-c", at_c.to_str().unwrap());
    let has = |s: &str| prov.iter().any(|r| r == s);
    assert!(has(&format!("{}@node-a", file_id(&original))), "{prov:?}");
    assert!(has(&format!("{}@node-b", file_id(&at_b))), "{prov:?}");
    let processes =
        |node: &str| prov.iter().filter(|r| r.starts_with("process://") && r.ends_with(&format!("@{node}"))).count();
    // node-a: the writer and the sender; node-b: the receiver and the forwarder; node-c:
    // the receiver.
    assert_eq!((processes("node-a"), processes("node-b"), processes("node-c")), (2, 2, 1), "{prov:?}");
    // The streams each node received on are in it too.
    assert!(
        prov.iter().any(|r| r.starts_with(&format!("tcp://{}:", cluster.ip("node-b"))) && r.ends_with("@node-b")),
        "{prov:?}"
    );
    assert!(
        prov.iter().any(|r| r.starts_with(&format!("tcp://{}:", cluster.ip("node-c"))) && r.ends_with("@node-c")),
        "{prov:?}"
    );

    // Both sides audited the remote decisions. Each sender wrote its 19-byte file to its
    // stream in one write: node-b recorded one flow from node-a, node-c one from node-b.
    // node-a, the owner, was asked once for each flow of data derived from its file: on
    // node-b the receiver's read of the stream and its write of from-a.txt, the
    // forwarder's read of it and its write to the stream to node-c; on node-c the
    // receiver's read and write. Six flows with six different destinations, so no answer
    // could be reused for another (and the long cache TTL keeps a slow machine from
    // asking again for a repeated flow, such as a read at end of stream).
    let kinds = |node: &str, kind: &str| cluster.audit(node).into_iter().filter(|r| r["kind"] == kind).count();
    assert_eq!(kinds("node-b", "remote_flow"), 1);
    assert_eq!(kinds("node-c", "remote_flow"), 1);
    let checks: Vec<serde_json::Value> =
        cluster.audit("node-a").into_iter().filter(|r| r["kind"] == "remote_check").collect();
    assert_eq!(checks.len(), 6, "{checks:#?}");
    let asked_by = |node: &str| checks.iter().filter(|r| r["reason"] == format!("asked by {node}")).count();
    assert_eq!((asked_by("node-b"), asked_by("node-c")), (4, 2), "{checks:#?}");
    assert!(checks.iter().all(|r| r["result"] == "granted"), "{checks:#?}");
}

#[test]
fn nodes_speak_mutual_tls_when_configured() {
    let certs = make_certificates(&["node-a", "node-b"]);
    let dir = certs.path().to_owned();
    let cluster = Cluster::start_with(&NODES[..2], &[], |name| tls_flags(&dir, name));
    let (a, b) = (cluster.daemon("node-a"), cluster.daemon("node-b"));
    let original = a.path("original.txt");
    let at_b = b.path("copy.txt");
    assert_ok(&cluster.proc("node-a", &["write", original.to_str().unwrap(), "over TLS"]));
    let (sent, received) = cluster.transfer("node-a", &original, "node-b", &at_b);
    assert_ok(&sent);
    assert_ok(&received);
    // node-b asked node-a about its file over TLS, and recorded the flow node-a reported.
    let prov = cluster.provenance("node-b", at_b.to_str().unwrap());
    assert!(prov.contains(&format!("{}@node-a", file_id(&original))), "{prov:?}");
    assert!(cluster.audit("node-a").iter().any(|r| r["kind"] == "remote_check"));
    let log = cluster.daemon("node-a").log();
    // Without the colour escapes (ESC [ ... m).
    let plain: String = log
        .split('\x1b')
        .enumerate()
        .map(|(i, part)| if i == 0 { part } else { part.split_once('m').map_or(part, |(_, rest)| rest) })
        .collect();
    assert!(plain.contains("tls=true"), "{plain}");
}
