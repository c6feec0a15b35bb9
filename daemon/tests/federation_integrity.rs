//! Federation, scenario 4: integrity across nodes. A file on node-c with integrity 1
//! refuses data that came through node-b's level-0 executable; the decision is node-b's
//! (the owner of that process), and data that never touched it still flows.

mod support;

use support::cluster::*;
use support::*;

#[test]
fn a_protected_file_refuses_data_from_a_low_level_remote_executable() {
    let cluster = Cluster::start(NODES, &[]);
    let (a, b, c) = (cluster.daemon("node-a"), cluster.daemon("node-b"), cluster.daemon("node-c"));
    let trusted = format!("exe://{}", proc_bin().display());
    // node-b forwards with another executable, left at level 0.
    let low = b.path("low-proc");
    copy_proc_bin(&low);

    let original = a.path("original.txt");
    let (at_b, at_c, clean_at_c) = (b.path("copy.txt"), c.path("copy.txt"), c.path("clean.txt"));
    assert_ok(&cluster.proc("node-a", &["write", original.to_str().unwrap(), "measured"]));
    let (s, r) = cluster.transfer("node-a", &original, "node-b", &at_b);
    assert_ok(&s);
    assert_ok(&r);
    // The same data reaches node-c twice: through the low-level executable, and not.
    let (mut receiver, addr) = cluster.receiver("node-c", &at_c);
    let mut send = cluster.daemon("node-b").proc_cmd_with(&low, &["send", &addr, at_b.to_str().unwrap()]);
    send.env("TRACE2E_BIND_ADDR", cluster.ip("node-b"));
    assert_ok(&run(send));
    assert_ok(&wait_output(std::mem::replace(&mut receiver, spawn_dummy())));
    let (s, r) = cluster.transfer("node-b", &at_b, "node-c", &clean_at_c);
    assert_ok(&s);
    assert_ok(&r);

    // Every owner trusts trace2e-proc and its files at level 1; nobody vouches for low-proc.
    for (node, files) in [("node-a", vec![&original]), ("node-b", vec![&at_b]), ("node-c", vec![&at_c, &clean_at_c])] {
        cluster.cli_ok(node, &["policy", "set", &trusted, "--integrity", "1"]);
        for f in files {
            cluster.cli_ok(node, &["policy", "set", f.to_str().unwrap(), "--integrity", "1"]);
        }
    }
    let protected = c.path("protected.txt");
    std::fs::write(&protected, b"trusted content").unwrap();
    cluster.cli_ok("node-c", &["policy", "set", protected.to_str().unwrap(), "--integrity", "1"]);

    let out = cluster.proc("node-c", &["cp", at_c.to_str().unwrap(), protected.to_str().unwrap()]);
    let err = assert_denied(&out);
    assert!(err.contains("integrity") && err.contains("@node-b") && err.contains("low-proc"), "{err}");
    assert_eq!(std::fs::read(&protected).unwrap(), b"trusted content");
    // node-b decided it, and audited it.
    assert!(cluster.audit("node-b").iter().any(|r| r["kind"] == "remote_check"
        && r["result"] == "denied"
        && r["reason"].as_str().unwrap().contains("integrity")));

    assert_ok(&cluster.proc("node-c", &["cp", clean_at_c.to_str().unwrap(), protected.to_str().unwrap()]));
    assert_eq!(std::fs::read(&protected).unwrap(), b"measured");
}

fn spawn_dummy() -> std::process::Child {
    std::process::Command::new("true").spawn().unwrap()
}
