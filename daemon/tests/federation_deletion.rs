//! Federation, scenario 3: deletion across nodes. node-a deletes its original: reads and
//! writes of data derived from it are denied on node-a, node-b and node-c — copies made
//! before the deletion included — while unrelated data still flows.

mod support;

use support::cluster::*;
use support::*;

#[test]
fn nothing_derived_from_a_deleted_original_flows_anywhere() {
    let cluster = Cluster::start(NODES, &[]);
    let (a, b, c) = (cluster.daemon("node-a"), cluster.daemon("node-b"), cluster.daemon("node-c"));
    let original = a.path("original.txt");
    let local = a.path("local-copy.txt");
    let (at_b, at_c) = (b.path("copy.txt"), c.path("copy.txt"));
    assert_ok(&cluster.proc("node-a", &["write", original.to_str().unwrap(), "to be forgotten"]));
    assert_ok(&cluster.proc("node-a", &["cp", original.to_str().unwrap(), local.to_str().unwrap()]));
    let (s, r) = cluster.transfer("node-a", &original, "node-b", &at_b);
    assert_ok(&s);
    assert_ok(&r);
    let (s, r) = cluster.transfer("node-b", &at_b, "node-c", &at_c);
    assert_ok(&s);
    assert_ok(&r);
    let unrelated = c.path("unrelated.txt");
    assert_ok(&cluster.proc("node-c", &["write", unrelated.to_str().unwrap(), "fresh"]));

    // A process on node-b that already holds data derived from the original, and waits to
    // send it to node-c.
    let (loaded, go) = (b.path("loaded"), b.path("go"));
    let mut holder = cluster
        .duplex_cmd("node-b", &["listen", &format!("{}:0", cluster.ip("node-b")), &format!("load={}", at_b.display())]);
    holder.args([format!("touch={}", loaded.display()), format!("wait={}", go.display()), "put".into()]);
    let (holder, line) = spawn_until_line(holder);
    let addr = line.strip_prefix("listening on ").unwrap().to_owned();
    let reader = cluster.duplex_cmd("node-c", &["connect", &addr, &format!("recv={}", c.path("late.txt").display())]);
    let reader = spawn_piped(reader);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !loaded.exists() {
        assert!(std::time::Instant::now() < deadline, "the holder never loaded its data");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let out = a.cli(&["delete", original.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let original_id = format!("{}@node-a", file_id(&original));

    // The peers know without asking: the deletion was broadcast.
    for node in ["node-b", "node-c"] {
        let tombstones = cluster.audit(node).into_iter().filter(|r| r["kind"] == "remote_delete").count();
        assert_eq!(tombstones, 1, "{node}");
    }

    // Reads of derived data, on every node.
    for (node, copy) in [("node-a", &local), ("node-b", &at_b), ("node-c", &at_c)] {
        let out = cluster.proc(node, &["cp", copy.to_str().unwrap(), copy.with_extension("again").to_str().unwrap()]);
        let err = assert_denied(&out);
        assert!(err.contains("deletion") && err.contains(&original_id), "{node}: {err}");
    }
    // Nothing flows into the deleted original.
    let err = assert_denied(&cluster.proc("node-a", &["write", original.to_str().unwrap(), "again"]));
    assert!(err.contains("deletion"), "{err}");
    // A write of data read before the deletion.
    std::fs::write(&go, b"").unwrap();
    let held = wait_output(holder);
    let err = assert_denied(&held);
    assert!(err.contains("denied put") && err.contains(&original_id), "{err}");
    let _ = wait_output(reader);
    assert!(!c.path("late.txt").exists());

    // Unrelated data still flows, locally and across nodes.
    let (s, r) = cluster.transfer("node-c", &unrelated, "node-a", &a.path("unrelated.txt"));
    assert_ok(&s);
    assert_ok(&r);
    assert_eq!(std::fs::read(a.path("unrelated.txt")).unwrap(), b"fresh");
}

fn spawn_piped(mut cmd: std::process::Command) -> std::process::Child {
    use std::process::Stdio;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap()
}
