//! Several `trace2ed` on one host, federated over M2M: each node owns a loopback address,
//! serves M2M on it, and lists the others as peers. Its processes get `TRACE2E_BIND_ADDR`
//! so that their connections leave from their node's address.
//!
//! Ports cannot be chosen by the kernel (peers must know each other's endpoints when
//! they start), and picking a free port, releasing it and binding it later races with
//! every other socket of the machine. Instead every cluster gets loopback addresses of
//! its own (127.0.0.0/8 is all loopback on Linux): `127.A.B.N` with `A` from this test
//! process's pid, `B` a counter of clusters in this process, `N` the node. On its own
//! address each node serves M2M on the fixed port [`M2M_PORT`], below the kernel's
//! ephemeral range (32768–60999), so no socket bound to port 0 can take it and no other
//! cluster uses that address.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output};

use super::*;

/// The three nodes of the federation scenarios (each [`Cluster`] gives them addresses).
pub const NODES: &[&str] = &["node-a", "node-b", "node-c"];

/// The M2M port of every node, on its own address.
pub const M2M_PORT: u16 = 7100;

/// The addresses of a new cluster's nodes (`count` of them), used by no other cluster of
/// this process and, with different pids, of another test process.
fn cluster_addresses(count: usize) -> Vec<String> {
    static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cluster = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    assert!(cluster < 256, "more than 255 clusters in one test process: no addresses left");
    assert!(count < 250, "too many nodes in one cluster");
    // Not 127.0.x.x, which the single-daemon tests and the documentation use.
    let process = 16 + std::process::id() % 200;
    (0..count).map(|n| format!("127.{process}.{cluster}.{}", n + 2)).collect()
}

/// One node of a [`Cluster`].
pub struct Node {
    pub name: String,
    pub ip: String,
    pub m2m_port: u16,
    daemon: Option<Daemon>,
    /// Daemons of this node that were killed (their directories stay).
    dead: Vec<Daemon>,
}

/// Federated daemons, by node name.
pub struct Cluster {
    nodes: BTreeMap<String, Node>,
    extra: Vec<String>,
    /// Flags for one node only.
    own: BTreeMap<String, Vec<String>>,
}

impl Cluster {
    /// Starts one daemon per node name, each on an address of its own and a peer of all
    /// the others, with `extra` flags for all (e.g. short timeouts).
    pub fn start(nodes: &[&str], extra: &[&str]) -> Self {
        Self::start_with(nodes, extra, |_| Vec::new())
    }

    /// As [`Cluster::start`], with flags for each node from `own(name)`.
    pub fn start_with(nodes: &[&str], extra: &[&str], own: impl Fn(&str) -> Vec<String>) -> Self {
        let nodes: BTreeMap<String, Node> = nodes
            .iter()
            .zip(cluster_addresses(nodes.len()))
            .map(|(name, ip)| {
                let node = Node { name: name.to_string(), ip, m2m_port: M2M_PORT, daemon: None, dead: vec![] };
                (name.to_string(), node)
            })
            .collect();
        let own = nodes.keys().map(|n: &String| (n.clone(), own(n))).collect();
        let mut cluster = Self { nodes, extra: extra.iter().map(ToString::to_string).collect(), own };
        let names: Vec<String> = cluster.nodes.keys().cloned().collect();
        // Each is ready (its M2M listener bound) when started; peers connect lazily.
        for name in &names {
            cluster.launch(name);
        }
        cluster
    }

    fn launch(&mut self, name: &str) {
        let peers: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.name != name)
            .flat_map(|n| ["--peer".to_string(), format!("{}={}:{}", n.name, n.ip, n.m2m_port)])
            .collect();
        let node = &self.nodes[name];
        let mut flags = vec!["--m2m-listen".to_string(), format!("{}:{}", node.ip, node.m2m_port)];
        flags.extend(peers);
        flags.extend(self.extra.iter().cloned());
        flags.extend(self.own[name].iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let daemon = Daemon::start(name, &[&node.ip], &flags);
        self.nodes.get_mut(name).unwrap().daemon = Some(daemon);
    }

    /// The running daemon of `name`.
    pub fn daemon(&self, name: &str) -> &Daemon {
        self.nodes[name].daemon.as_ref().unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// The M2M endpoint `name` serves (`IP:PORT`).
    pub fn m2m_endpoint(&self, name: &str) -> std::net::SocketAddr {
        let node = &self.nodes[name];
        format!("{}:{}", node.ip, node.m2m_port).parse().unwrap()
    }

    /// The address `name` owns.
    pub fn ip(&self, name: &str) -> &str {
        &self.nodes[name].ip
    }

    /// Kills `name`'s daemon (SIGKILL: no goodbye to its peers).
    pub fn kill(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).unwrap();
        let mut daemon = node.daemon.take().unwrap();
        daemon.kill();
        node.dead.push(daemon);
    }

    /// Starts `name` again on the same address and M2M port (with empty state).
    pub fn restart(&mut self, name: &str) {
        assert!(self.nodes[name].daemon.is_none(), "{name} is running");
        self.launch(name);
    }

    /// A `trace2e-proc` command on `node` (connections leave from its address).
    pub fn proc_cmd(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = self.daemon(node).proc_cmd(args);
        cmd.env("TRACE2E_BIND_ADDR", self.ip(node));
        cmd
    }

    /// Runs `trace2e-proc` on `node` to completion.
    pub fn proc(&self, node: &str, args: &[&str]) -> Output {
        run(self.proc_cmd(node, args))
    }

    /// A `trace2e-duplex` command on `node`.
    pub fn duplex_cmd(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = self.daemon(node).proc_cmd_with(&duplex_bin(), args);
        cmd.env("TRACE2E_BIND_ADDR", self.ip(node));
        cmd
    }

    /// Starts `trace2e-proc recv` on `node`; returns it and the address it listens on.
    pub fn receiver(&self, node: &str, file: &std::path::Path) -> (Child, String) {
        let cmd = self.proc_cmd(node, &["recv", &format!("{}:0", self.ip(node)), file.to_str().unwrap()]);
        let (child, line) = spawn_until_line(cmd);
        let addr = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
        (child, addr)
    }

    /// `node` sends `file` to a fresh receiver on `to`, which saves it as `saved`.
    pub fn transfer(&self, node: &str, file: &std::path::Path, to: &str, saved: &std::path::Path) -> (Output, Output) {
        let (receiver, addr) = self.receiver(to, saved);
        let sent = self.proc(node, &["send", &addr, file.to_str().unwrap()]);
        if !sent.status.success() {
            // A sender denied before it connected leaves the receiver waiting in accept:
            // give it an empty connection so it ends on its own. (Killing it instead would
            // race with a receiver that is already finishing on the sender's EOF.)
            let _ = std::net::TcpStream::connect(&addr);
        }
        let received = wait_output(receiver);
        (sent, received)
    }

    /// The provenance of `resource` on `node` (via the CLI).
    pub fn provenance(&self, node: &str, resource: &str) -> Vec<String> {
        let v = self.daemon(node).cli_json(&["provenance", resource, "--format", "json"]);
        v["provenance"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
    }

    /// Runs the operator CLI on `node`; panics if it fails.
    pub fn cli_ok(&self, node: &str, args: &[&str]) {
        let out = self.daemon(node).cli(args);
        assert!(out.status.success(), "trace2e {args:?} on {node}: {}", stderr(&out));
    }

    /// Audit records of `node` (JSON objects).
    pub fn audit(&self, node: &str) -> Vec<serde_json::Value> {
        let v = self.daemon(node).cli_json(&["audit", "--format", "json"]);
        v["records"].as_array().unwrap().clone()
    }
}

/// Waits for a spawned child's exit and collects its output.
pub fn wait_output(mut child: Child) -> Output {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out =
        std::thread::spawn(move || stdout.map(|s| std::io::read_to_string(s).unwrap_or_default()).unwrap_or_default());
    let err =
        std::thread::spawn(move || stderr.map(|s| std::io::read_to_string(s).unwrap_or_default()).unwrap_or_default());
    let status = wait_timeout(&mut child).expect("process hung");
    Output { status, stdout: out.join().unwrap().into_bytes(), stderr: err.join().unwrap().into_bytes() }
}

/// `file:///PATH`.
pub fn file_id(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

/// The `trace2e-duplex` example binary (built on demand).
pub fn duplex_bin() -> PathBuf {
    example_bin("trace2e-duplex")
}

/// A CA and one certificate per node in `names` (`deploy/gen-certs.sh`, which needs the
/// openssl CLI). Fails, never skips, when the certificates cannot be made: the TLS tests
/// must run (`.ci/run` installs openssl).
pub fn make_certificates(names: &[&str]) -> tempfile::TempDir {
    let certs = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/gen-certs.sh");
    let mut cmd = Command::new("sh");
    cmd.arg(script).arg(certs.path()).args(names);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "cannot generate certificates with deploy/gen-certs.sh (is the openssl CLI installed? \
         `apt-get install openssl`): {}",
        stderr(&out)
    );
    certs
}

/// The `--m2m-tls-*` flags of node `name`, with certificates from [`make_certificates`].
pub fn tls_flags(dir: &Path, name: &str) -> Vec<String> {
    let file = |f: String| dir.join(f).to_str().unwrap().to_owned();
    vec![
        "--m2m-tls-cert".into(),
        file(format!("{name}.pem")),
        "--m2m-tls-key".into(),
        file(format!("{name}.key")),
        "--m2m-tls-ca".into(),
        file("ca.pem".into()),
    ]
}
