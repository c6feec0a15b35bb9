//! Federation, scenario 5: failures fail closed, promptly, and leak nothing. A flow that
//! needs a dead (or frozen) node's decision is denied with a message naming that node;
//! once it is back, the flow is granted again without restarting anyone else. A denied
//! write to another node's stream leaves nothing reserved: the next read and the next
//! write on that very stream proceed.

mod support;

use support::cluster::*;
use support::*;

/// Short deadlines keep the failure paths fast.
const FLAGS: &[&str] = &["--m2m-timeout-ms", "500", "--consent-timeout-ms", "1000"];

fn expired_on(cluster: &Cluster, node: &str) -> usize {
    cluster.audit(node).into_iter().filter(|r| r["kind"] == "expired").count()
}

#[test]
fn an_unreachable_owner_denies_by_name_until_it_is_back() {
    let mut cluster = Cluster::start(NODES, FLAGS);
    let (b, c) = (cluster.daemon("node-b"), cluster.daemon("node-c"));
    let (original, copy) = (c.path("original.txt"), b.path("from-c.txt"));
    assert_ok(&cluster.proc("node-c", &["write", original.to_str().unwrap(), "owned by node-c"]));
    let (s, r) = cluster.transfer("node-c", &original, "node-b", &copy);
    assert_ok(&s);
    assert_ok(&r);
    let again = |cluster: &Cluster, name: &str| {
        let dst = cluster.daemon("node-b").path(name);
        cluster.proc("node-b", &["cp", copy.to_str().unwrap(), dst.to_str().unwrap()])
    };
    assert_ok(&again(&cluster, "1.txt"));

    // Killed: connection refused, a prompt denial naming node-c.
    cluster.kill("node-c");
    let out = again(&cluster, "2.txt");
    let err = assert_denied(&out);
    assert!(err.contains("node-c") && err.contains("could not be asked"), "{err}");
    assert!(!cluster.daemon("node-b").path("2.txt").exists());

    // Back (with empty state): usable again, nobody else restarted.
    cluster.restart("node-c");
    assert_ok(&again(&cluster, "3.txt"));

    // Frozen: it accepts connections but never answers; the deadline denies.
    let pid = rustix::process::Pid::from_raw(cluster.daemon("node-c").pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let out = again(&cluster, "4.txt");
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let err = assert_denied(&out);
    // Found out by the call's deadline or by HTTP/2 keep-alive, whichever comes first.
    assert!(err.contains("node-c") && err.contains("unreachable"), "{err}");
    assert_ok(&again(&cluster, "5.txt"));
}

#[test]
fn a_denied_write_to_a_remote_stream_leaves_nothing_reserved() {
    let cluster = Cluster::start(&NODES[..2], FLAGS);
    let (a, b) = (cluster.daemon("node-a"), cluster.daemon("node-b"));
    let (secret, public) = (a.path("secret.txt"), a.path("public.txt"));
    assert_ok(&cluster.proc("node-a", &["write", secret.to_str().unwrap(), "secret"]));
    std::fs::write(&public, b"public").unwrap();
    cluster.cli_ok("node-a", &["policy", "set", secret.to_str().unwrap(), "--confidentiality", "secret"]);

    // Denied after node-b's side was reserved: the receiver's read still proceeds (EOF).
    let saved = b.path("saved.txt");
    let (sent, received) = cluster.transfer("node-a", &secret, "node-b", &saved);
    let err = assert_denied(&sent);
    assert!(err.contains("confidentiality"), "{err}");
    assert_ok(&received);
    assert_eq!(std::fs::read(&saved).unwrap(), b"");

    // On one stream: a write denied because its data's owner (node-c) is down, then, once
    // node-c is back, a granted write of the same data, and a read of what came back.
    drop(cluster);
    let mut cluster = Cluster::start(NODES, FLAGS);
    let (a, b, c) = (cluster.daemon("node-a"), cluster.daemon("node-b"), cluster.daemon("node-c"));
    let (original, from_c) = (c.path("original.txt"), a.path("from-c.txt"));
    assert_ok(&cluster.proc("node-c", &["write", original.to_str().unwrap(), "owned by node-c"]));
    let (s, r) = cluster.transfer("node-c", &original, "node-a", &from_c);
    assert_ok(&s);
    assert_ok(&r);
    let (inbox, reply) = (b.path("inbox.txt"), b.path("reply.txt"));
    std::fs::write(&reply, b"ack").unwrap();
    let listen = cluster.duplex_cmd(
        "node-b",
        &[
            "listen",
            &format!("{}:0", cluster.ip("node-b")),
            &format!("recv={}", inbox.display()),
            &format!("send={}", reply.display()),
        ],
    );
    let (listener, line) = spawn_until_line(listen);
    let addr = line.strip_prefix("listening on ").unwrap().to_owned();
    let (loaded, first, go, go2, back) =
        (a.path("loaded"), a.path("first"), a.path("go"), a.path("go2"), a.path("back.txt"));
    let writer = cluster.duplex_cmd(
        "node-a",
        &[
            "connect",
            &addr,
            &format!("load={}", from_c.display()),
            &format!("touch={}", loaded.display()),
            &format!("wait={}", go.display()),
            "put",
            &format!("touch={}", first.display()),
            &format!("wait={}", go2.display()),
            "put",
            &format!("recv={}", back.display()),
        ],
    );
    let writer = {
        let mut w = writer;
        w.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).stdin(std::process::Stdio::null());
        w.spawn().unwrap()
    };
    wait_for(&loaded);
    cluster.kill("node-c");
    std::fs::write(&go, b"").unwrap();
    wait_for(&first);
    cluster.restart("node-c");
    std::fs::write(&go2, b"").unwrap();
    let written = wait_output(writer);
    let err = stderr(&written);
    assert_eq!(written.status.code(), Some(13), "{err}");
    assert!(err.contains("denied put") && err.contains("node-c"), "{err}");
    assert_ok(&wait_output(listener));
    assert_eq!(std::fs::read(&inbox).unwrap(), b"owned by node-c");
    assert_eq!(std::fs::read(&back).unwrap(), b"ack");
    // Released by the writer's node, not by node-b's lease running out.
    assert_eq!(expired_on(&cluster, "node-b"), 0);
    for node in ["node-a", "node-b"] {
        let status = cluster.daemon(node).cli_json(&["status", "--format", "json"]);
        assert_eq!(status["active_grants"], 0, "{node}: {status}");
    }
}

fn wait_for(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
