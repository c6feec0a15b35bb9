//! Federation, scenario 6: two processes on different nodes write and read the same
//! stream (each its end) and their files concurrently, for many rounds. Nothing
//! deadlocks (every wait is bounded) and the provenance at the end is exactly the union
//! it must be.

mod support;

use std::collections::BTreeSet;

use support::cluster::*;
use support::*;

const ROUNDS: &str = "40";

#[test]
fn a_busy_two_way_stream_ends_with_exactly_the_union_of_provenance() {
    let cluster = Cluster::start(&NODES[..2], &[]);
    let (a, b) = (cluster.daemon("node-a"), cluster.daemon("node-b"));
    let (a_in, a_out, b_in, b_out) = (a.path("a-in.txt"), a.path("a-out.txt"), b.path("b-in.txt"), b.path("b-out.txt"));
    std::fs::write(&a_in, b"from a").unwrap();
    std::fs::write(&b_in, b"from b").unwrap();

    let spec = |i: &std::path::Path, o: &std::path::Path| format!("rounds={ROUNDS}:{}:{}", i.display(), o.display());
    let listen_on = format!("{}:0", cluster.ip("node-b"));
    let (listener, line) =
        spawn_until_line(cluster.duplex_cmd("node-b", &["listen", &listen_on, &spec(&b_in, &b_out)]));
    let addr = line.strip_prefix("listening on ").unwrap().to_owned();
    // Meanwhile, each node also copies its input file locally, over and over.
    let copier = |node: &'static str, from: std::path::PathBuf, to: std::path::PathBuf| {
        let cmd = cluster.proc_cmd(node, &["cp", from.to_str().unwrap(), to.to_str().unwrap()]);
        let (program, args): (std::path::PathBuf, Vec<std::ffi::OsString>) =
            (cmd.get_program().into(), cmd.get_args().map(Into::into).collect());
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> =
            cmd.get_envs().filter_map(|(k, v)| Some((k.into(), v?.into()))).collect();
        std::thread::spawn(move || {
            for _ in 0..10 {
                let mut c = std::process::Command::new(&program);
                c.args(&args).envs(envs.iter().cloned());
                assert_ok(&run(c));
            }
        })
    };
    let copy_a = copier("node-a", a_in.clone(), a.path("a-copy.txt"));
    let copy_b = copier("node-b", b_in.clone(), b.path("b-copy.txt"));
    let talker = run(cluster.duplex_cmd("node-a", &["connect", &addr, &spec(&a_in, &a_out)]));
    assert_ok(&talker);
    assert_ok(&wait_output(listener));
    copy_a.join().unwrap();
    copy_b.join().unwrap();
    let rounds: usize = ROUNDS.parse().unwrap();
    assert_eq!(std::fs::read(&a_out).unwrap(), b"from b".repeat(rounds));
    assert_eq!(std::fs::read(&b_out).unwrap(), b"from a".repeat(rounds));

    // Each output holds: both inputs, both processes, both sides of the stream.
    let prov_a: BTreeSet<String> = cluster.provenance("node-a", a_out.to_str().unwrap()).into_iter().collect();
    let prov_b: BTreeSet<String> = cluster.provenance("node-b", b_out.to_str().unwrap()).into_iter().collect();
    assert_eq!(prov_a, prov_b, "both ends converge on the same union");
    let expected_files: BTreeSet<String> =
        [format!("{}@node-a", file_id(&a_in)), format!("{}@node-b", file_id(&b_in))].into();
    let files: BTreeSet<String> = prov_a.iter().filter(|r| r.starts_with("file://")).cloned().collect();
    assert_eq!(files, expected_files, "{prov_a:?}");
    let count = |prefix: &str, node: &str| prov_a.iter().filter(|r| r.starts_with(prefix) && r.ends_with(node)).count();
    assert_eq!(count("process://", "@node-a"), 1, "{prov_a:?}");
    assert_eq!(count("process://", "@node-b"), 1, "{prov_a:?}");
    assert_eq!(count(&format!("tcp://{}:", cluster.ip("node-a")), "@node-a"), 1, "{prov_a:?}");
    assert_eq!(count(&format!("tcp://{}:", cluster.ip("node-b")), "@node-b"), 1, "{prov_a:?}");
    assert_eq!(prov_a.len(), 6, "{prov_a:?}");
    for node in ["node-a", "node-b"] {
        let status = cluster.daemon(node).cli_json(&["status", "--format", "json"]);
        assert_eq!(status["active_grants"], 0, "{node}: {status}");
    }
}
