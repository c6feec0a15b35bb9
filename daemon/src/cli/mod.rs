//! The operator CLI `trace2e`: the human front end of O2M.
//!
//! It owns argument parsing ([`Cli`]), the `RES` argument ([`resource_arg`]), the O2M
//! connection ([`client`]) and what is printed ([`render`]). It holds no decisions: every
//! command is one or two O2M calls to the local daemon. The daemon side is
//! [`crate::operator`].
//!
//! Exit status: 0 on success, 2 on a usage error (reported by clap), 1 on any other error,
//! printed on stderr as one line `trace2e: …`.

pub mod client;
pub mod render;
pub mod resource_arg;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tonic::Code;
use trace2e_proto::pb::o2m;
use trace2e_proto::{Confidentiality, Policy};

use self::client::Daemon;
use self::render::Format;
use self::resource_arg::ResourceArg;
use crate::demo::DemoArgs;

/// The O2M socket used when neither `--socket` nor `TRACE2E_O2M_SOCKET` is given.
pub const DEFAULT_SOCKET: &str = "/run/trace2e/o2m.sock";

const RES_HELP: &str = "\
RES is a resource identifier (file:///PATH, tcp://LOCAL/PEER, process://PID.STARTTIME, \
exe:///PATH) or a plain path, taken as file:// of its canonical form; either may end with \
@NODE (default: the daemon's node).";

/// trace2e operator CLI: policies, deletion, consent, provenance and audit of a trace2e
/// daemon, over its O2M socket.
#[derive(Debug, Parser)]
#[command(name = "trace2e", version, after_help = RES_HELP)]
pub struct Cli {
    /// The daemon's O2M Unix socket.
    #[arg(long, global = true, env = "TRACE2E_O2M_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Deadline of each call to the daemon, in seconds.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the daemon's node, addresses and counters.
    Status(StatusArgs),
    /// Get or set resource policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Mark a resource deleted: nothing derived from it may flow anywhere any more (final).
    Delete(DeleteArgs),
    /// Show where a resource's data comes from: its provenance and lineage edges.
    Provenance(ProvenanceArgs),
    /// Query the audit trail (printed oldest first).
    Audit(AuditArgs),
    /// Enforce consent on a resource, list pending requests, answer them.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Run a self-contained demonstration of trace2e.
    Demo(DemoArgs),
}

/// `trace2e status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `trace2e policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the policies of resources.
    #[command(after_help = RES_HELP)]
    Get {
        /// Resources.
        #[arg(required = true, value_name = "RES", value_parser = ResourceArg::parse)]
        resources: Vec<ResourceArg>,
        /// Output format (json: {"policies": [{resource, confidentiality, integrity, deleted, consent}]}).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Change the policy of a resource (exe:///PATH for every process running PATH).
    #[command(after_help = RES_HELP)]
    Set(PolicySetArgs),
}

/// `trace2e policy set`: at least one change.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
pub struct PolicySetArgs {
    /// The resource.
    #[arg(value_name = "RES", value_parser = ResourceArg::parse)]
    pub resource: ResourceArg,
    /// Where data derived from it may go.
    #[arg(long, value_parser = parse_confidentiality, value_name = "public|secret", group = "change")]
    pub confidentiality: Option<Confidentiality>,
    /// Integrity level: it accepts data only from sources of at least this level.
    #[arg(long, value_name = "N", group = "change")]
    pub integrity: Option<u32>,
}

fn parse_confidentiality(s: &str) -> Result<Confidentiality, String> {
    s.parse()
}

/// `trace2e delete`.
#[derive(Debug, Args)]
#[command(after_help = RES_HELP)]
pub struct DeleteArgs {
    /// The resource.
    #[arg(value_name = "RES", value_parser = ResourceArg::parse)]
    pub resource: ResourceArg,
}

/// `trace2e provenance`.
#[derive(Debug, Args)]
#[command(after_help = RES_HELP)]
pub struct ProvenanceArgs {
    /// The resource.
    #[arg(value_name = "RES", value_parser = ResourceArg::parse)]
    pub resource: ResourceArg,
    /// Output format (json: {"resource", "provenance": [id], "lineage": [{source, destination, time_us, time, bytes}]}).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// A decision filter of `trace2e audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditDecision {
    /// Granted flows only.
    Granted,
    /// Denied flows only.
    Denied,
}

/// `trace2e audit`.
#[derive(Debug, Args)]
#[command(after_help = RES_HELP, args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    /// Check the durable trail instead of querying it.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only records that involve this resource.
    #[arg(long, value_name = "RES", value_parser = ResourceArg::parse)]
    pub resource: Option<ResourceArg>,
    /// Only granted or only denied flows.
    #[arg(long, value_enum)]
    pub decision: Option<AuditDecision>,
    /// At most this many records, the most recent ones (0: no limit).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u64,
    /// Only records after this sequence number.
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub after: u64,
    /// Output format (json: {"records": [{seq, time_us, time, node, kind, process, source,
    /// destination, direction, bytes, result, reason, grant}]}).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `trace2e audit verify`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole durable trail of a data directory (a running daemon's too): every
    /// record intact, in order, none missing, the hash chain matching its checkpoint.
    /// Prints "N records, head H" and exits 0 when intact; names the first altered,
    /// missing or reordered record and exits 1 otherwise.
    Verify {
        /// The daemon's data directory.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

/// `trace2e consent …`.
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Make flows of data derived from a resource wait for the owner's decision.
    #[command(after_help = RES_HELP)]
    Enforce {
        /// The resource (on this node: its owner decides).
        #[arg(value_name = "RES", value_parser = ResourceArg::parse)]
        resource: ResourceArg,
        /// Stop enforcing consent on it.
        #[arg(long)]
        off: bool,
    },
    /// List the flows waiting for a consent decision.
    List,
    /// Grant or deny a source's data to a destination (remembered; decide again to revoke).
    #[command(after_help = RES_HELP)]
    Decide(DecideArgs),
}

/// `trace2e consent decide`: exactly one of `--grant`, `--deny`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("decision").required(true).multiple(false)))]
pub struct DecideArgs {
    /// The source resource whose owner is this node.
    #[arg(value_name = "SOURCE", value_parser = ResourceArg::parse)]
    pub source: ResourceArg,
    /// A destination resource (RES, usually RES@NODE), or node:NAME for every resource of a node.
    #[arg(value_name = "DESTINATION", value_parser = parse_destination)]
    pub destination: String,
    /// Allow the flow.
    #[arg(long, group = "decision")]
    pub grant: bool,
    /// Refuse the flow.
    #[arg(long, group = "decision")]
    pub deny: bool,
}

/// `node:NAME`, checked, or a `RES` argument.
fn parse_destination(s: &str) -> Result<String, String> {
    match s.strip_prefix("node:") {
        Some(name) => name.parse::<trace2e_proto::NodeId>().map(|n| format!("node:{n}")).map_err(|e| e.to_string()),
        None => ResourceArg::parse(s).map(|r| r.id).map_err(|e| e.to_string()),
    }
}

/// Why a command failed (usage errors are clap's and never get here).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No daemon listens on the socket, or it went away.
    #[error(
        "cannot reach the daemon at {}: {cause} (is trace2ed running? set --socket or TRACE2E_O2M_SOCKET)",
        socket.display()
    )]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// What went wrong, in words.
        cause: String,
    },
    /// The daemon did not answer in time.
    #[error("the daemon at {} did not answer within {}s", socket.display(), deadline.as_secs())]
    Timeout {
        /// The socket used.
        socket: PathBuf,
        /// The deadline.
        deadline: Duration,
    },
    /// The daemon refused the request (bad argument, unknown resource, another node's
    /// resource); its message says why.
    #[error("{message}")]
    Refused {
        /// The gRPC code.
        code: Code,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon failed while handling the request.
    #[error("the daemon failed: {message} ({code:?})")]
    Daemon {
        /// The gRPC code.
        code: Code,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon's answer does not make sense (version mismatch?).
    #[error("unexpected answer from the daemon: {0}")]
    BadAnswer(String),
    /// The demo failed.
    #[error("demo: {0}")]
    Demo(String),
    /// `trace2e audit verify` found the trail altered, or could not read it.
    #[error("audit trail NOT intact: {0}")]
    Tampered(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

/// Runs one command, printing its result on stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Demo(args) = &cli.command {
        return crate::demo::run(args).await.map_err(|e| CliError::Demo(e.to_string()));
    }
    if let Command::Audit(AuditArgs { command: Some(AuditCommand::Verify { data_dir }), .. }) = &cli.command {
        let journal = crate::durable::journal_dir(data_dir);
        if !journal.is_dir() {
            return Err(CliError::Tampered(format!("{} holds no journal", data_dir.display())));
        }
        let v = crate::durable::journal::verify(&journal).map_err(|e| CliError::Tampered(e.to_string()))?;
        let from = if v.first_lsn > 0 { format!(" (from record {})", v.first_lsn) } else { String::new() };
        println!("{} records{from}, head {}", v.records, crate::durable::journal::hex(&v.head));
        return Ok(());
    }
    let daemon = Daemon::connect(&cli.socket, Duration::from_secs(cli.timeout)).await?;
    let output = execute(&daemon, cli.command).await?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        // `trace2e audit | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// Runs one command against a connected daemon and returns what to print.
pub async fn execute(daemon: &Daemon, command: Command) -> Result<String, CliError> {
    let mut c = daemon.client();
    match command {
        Command::Status(args) => {
            let status = daemon.call(c.status(o2m::StatusRequest {})).await?;
            Ok(render::status(&status, args.format))
        }
        Command::Policy(PolicyCommand::Get { resources, format }) => {
            let request = o2m::GetPoliciesRequest { resources: resources.iter().map(|r| r.id.clone()).collect() };
            let answer = daemon.call(c.get_policies(request)).await.map_err(|e| note_unresolved(e, &resources))?;
            let policies = answer
                .policies
                .into_iter()
                .map(|p| Ok((p.resource, policy(p.policy)?)))
                .collect::<Result<Vec<_>, CliError>>()?;
            Ok(render::policies(&policies, format))
        }
        Command::Policy(PolicyCommand::Set(args)) => {
            let request = o2m::SetPolicyRequest {
                resource: args.resource.id.clone(),
                confidentiality: args.confidentiality.map(|c| o2m::Confidentiality::from(c) as i32),
                integrity: args.integrity,
            };
            let resource = std::slice::from_ref(&args.resource);
            let answer = daemon.call(c.set_policy(request)).await.map_err(|e| note_unresolved(e, resource))?;
            Ok(render::policies(&[(args.resource.id, policy(answer.policy)?)], Format::Text))
        }
        Command::Delete(args) => {
            let request = o2m::DeleteRequest { resource: args.resource.id.clone() };
            let resource = std::slice::from_ref(&args.resource);
            daemon.call(c.delete(request)).await.map_err(|e| note_unresolved(e, resource))?;
            Ok(format!("deleted {}\n", args.resource))
        }
        Command::Provenance(args) => {
            let request = o2m::ProvenanceRequest { resource: args.resource.id.clone() };
            let resource = std::slice::from_ref(&args.resource);
            let answer = daemon.call(c.get_provenance(request)).await.map_err(|e| note_unresolved(e, resource))?;
            if answer.provenance.is_empty() && answer.lineage.is_empty() {
                warn_unresolved(resource);
            }
            Ok(render::provenance(&answer, args.format))
        }
        Command::Audit(args) => {
            let request = o2m::AuditQuery {
                resource: args.resource.as_ref().map(|r| r.id.clone()),
                decision: args.decision.map(|d| match d {
                    AuditDecision::Granted => "granted".to_owned(),
                    AuditDecision::Denied => "denied".to_owned(),
                }),
                limit: args.limit,
                after: args.after,
            };
            let answer = daemon.call(c.query_audit(request)).await?;
            if answer.records.is_empty() {
                warn_unresolved(args.resource.as_slice());
            }
            Ok(render::audit(&answer.records, args.format))
        }
        Command::Consent(ConsentCommand::Enforce { resource, off }) => {
            let request = o2m::EnforceConsentRequest { resource: resource.id.clone(), enforce: !off };
            let resources = std::slice::from_ref(&resource);
            daemon.call(c.enforce_consent(request)).await.map_err(|e| note_unresolved(e, resources))?;
            Ok(if off {
                format!("consent no longer enforced on {resource}\n")
            } else {
                format!("consent enforced on {resource}\n")
            })
        }
        Command::Consent(ConsentCommand::List) => {
            let answer = daemon.call(c.list_consent_requests(o2m::ListConsentRequestsRequest {})).await?;
            Ok(render::consent_requests(&answer.requests))
        }
        Command::Consent(ConsentCommand::Decide(args)) => {
            let request = o2m::DecideConsentRequest {
                source: args.source.id.clone(),
                destination: args.destination.clone(),
                grant: args.grant,
            };
            let resources = std::slice::from_ref(&args.source);
            daemon.call(c.decide_consent(request)).await.map_err(|e| note_unresolved(e, resources))?;
            let verb = if args.grant { "granted" } else { "denied" };
            Ok(format!("{verb}: {} → {}\n", args.source, args.destination))
        }
        Command::Demo(_) => Err(CliError::BadAnswer("the demo does not talk to a daemon".to_owned())),
    }
}

fn policy(p: Option<o2m::Policy>) -> Result<Policy, CliError> {
    let p = p.ok_or_else(|| CliError::BadAnswer("policy missing".to_owned()))?;
    Policy::try_from(p).map_err(|e| CliError::BadAnswer(e.to_string()))
}

/// The note for paths that did not exist, when the daemon did not know them either.
fn unresolved_note(resources: &[ResourceArg]) -> Option<String> {
    let notes: Vec<String> = resources
        .iter()
        .filter_map(|r| {
            let path = r.unresolved.as_ref()?;
            Some(format!("{} does not exist here; asked about {}", path.display(), r.id))
        })
        .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn warn_unresolved(resources: &[ResourceArg]) {
    if let Some(note) = unresolved_note(resources) {
        eprintln!("trace2e: note: {note}");
    }
}

fn note_unresolved(error: CliError, resources: &[ResourceArg]) -> CliError {
    match (error, unresolved_note(resources)) {
        (CliError::Refused { code: Code::NotFound, message }, Some(note)) => {
            CliError::Refused { code: Code::NotFound, message: format!("{message} (note: {note})") }
        }
        (error, _) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("trace2e").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn policy_set_needs_a_change() {
        let e = parse(&["policy", "set", "file:///x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let cli = parse(&["policy", "set", "exe:///usr/bin/server", "--integrity", "3"]).unwrap();
        let Command::Policy(PolicyCommand::Set(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.resource.id, "exe:///usr/bin/server");
        assert_eq!(args.integrity, Some(3));
        assert_eq!(args.confidentiality, None);
        let cli = parse(&["policy", "set", "file:///x", "--confidentiality", "secret"]).unwrap();
        let Command::Policy(PolicyCommand::Set(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.confidentiality, Some(Confidentiality::Secret));
        assert_eq!(parse(&["policy", "set", "file:///x", "--confidentiality", "top"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn bad_resources_are_usage_errors() {
        let e = parse(&["delete", "ftp:///x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("unknown scheme"), "{e}");
    }

    #[test]
    fn consent_decide_needs_exactly_one_answer() {
        assert!(parse(&["consent", "decide", "file:///x", "node:node-b"]).is_err());
        assert!(parse(&["consent", "decide", "file:///x", "node:node-b", "--grant", "--deny"]).is_err());
        assert!(parse(&["consent", "decide", "file:///x", "node:bad node", "--grant"]).is_err());
        let cli = parse(&["consent", "decide", "file:///x", "file:///y@node-b", "--deny"]).unwrap();
        let Command::Consent(ConsentCommand::Decide(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.destination, "file:///y@node-b");
        assert!(args.deny && !args.grant);
        let cli = parse(&["consent", "decide", "file:///x", "node:node-b", "--grant"]).unwrap();
        let Command::Consent(ConsentCommand::Decide(args)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.destination, "node:node-b");
    }

    #[test]
    fn socket_and_timeout_are_global() {
        let cli = parse(&["status", "--socket", "/tmp/s.sock", "--timeout", "3"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(cli.timeout, 3);
        assert!(parse(&["status", "--timeout", "0"]).is_err());
        let cli = parse(&["audit", "--decision", "denied", "--limit", "5", "--format", "json"]).unwrap();
        let Command::Audit(args) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.decision, args.limit, args.format), (Some(AuditDecision::Denied), 5, Format::Json));
    }

    #[test]
    fn unreachable_message_says_what_to_do() {
        let e = CliError::Unreachable { socket: DEFAULT_SOCKET.into(), cause: "connection refused".into() };
        assert_eq!(
            e.to_string(),
            "cannot reach the daemon at /run/trace2e/o2m.sock: connection refused \
             (is trace2ed running? set --socket or TRACE2E_O2M_SOCKET)"
        );
    }

    #[test]
    fn not_found_mentions_unresolved_paths() {
        let r = ResourceArg { id: "file:///gone".into(), unresolved: Some("gone".into()) };
        let e = CliError::Refused { code: Code::NotFound, message: "unknown resource file:///gone@n".into() };
        assert_eq!(
            note_unresolved(e, &[r]).to_string(),
            "unknown resource file:///gone@n (note: gone does not exist here; asked about file:///gone)"
        );
    }
}
