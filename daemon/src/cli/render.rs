//! What the CLI prints: text for people, JSON for scripts.
//!
//! Renderers are pure functions from the daemon's answers to a `String`, so that they can
//! be tested without a daemon. The JSON objects are part of the CLI's interface: fields
//! may be added, never renamed or removed.
//!
//! Over 600 lines with its unit tests (a third of the file), which pin every rendering
//! beside the code that makes it.
//!
//! `trace2e provenance RES --format json`:
//!
//! ```json
//! { "resource": "file:///out@node-a",
//!   "provenance": ["file:///in@node-a", "process://42.1234@node-a"],
//!   "lineage": [ { "source": "file:///in@node-a", "destination": "process://42.1234@node-a",
//!                  "time_us": 1735732800000000, "time": "2025-01-01T12:00:00.000000Z",
//!                  "first_us": 1735732700000000, "first": "2025-01-01T11:58:20.000000Z",
//!                  "flows": 3, "bytes": 1024 } ] }
//! ```
//!
//! `trace2e audit --format json`:
//!
//! ```json
//! { "records": [ { "seq": 7, "time_us": 1735732800000000, "time": "2025-01-01T12:00:00.000000Z",
//!                  "node": "node-a", "kind": "flow", "process": "process://42.1234@node-a",
//!                  "source": "file:///in@node-a", "destination": "process://42.1234@node-a",
//!                  "direction": "read", "bytes": 1024, "result": "granted", "reason": "",
//!                  "grant": 3 } ] }
//! ```
//!
//! Audit `kind` is one of `attach`, `exit`, `enroll`, `unenroll`, `request`, `report`,
//! `expired`, `policy_change`, `delete`, `consent_enforced`, `consent_decision`,
//! `remote_check`, `remote_flow`, `remote_delete` (federation; `reason` names the peer); `result`
//! one of `granted`, `denied`, `ok`, `failed`, `allowed`, `refused`. Records that are not
//! flows carry the resource they act on in `source` and an empty `destination`; a consent
//! decision for a whole node has `destination` `node:NAME`; `reason` holds the denial and
//! other details (new policy, fd, executable, external peer). Empty text means "none",
//! `grant` 0 means no grant, `time` is `-` when `time_us` is 0. A lineage edge's `time` is
//! that of the last flow along it, `first` that of the first; `bytes` and `flows` add up
//! all flows along it.
//!
//! `trace2e status --format json`: the fields of `StatusResponse` (`node`, `version`,
//! `uptime_secs`, `addresses`, `processes`, `enrolled`, `active_grants`, `resources`,
//! `audit_records`, `audit_records_on_disk`, `granted`, `denied`, `data_dir` (empty:
//! `--ephemeral`), `epoch`, `journal_records`, `head_hash`, `head_records`,
//! `journal_problem` (empty: none), `synchronous`), plus, when the daemon runs with
//! `TRACE2E_BREAKDOWN=1`, `breakdown: {"stages": [{"name", "total_ns", "count"}]}`
//! (cumulative since start-up). `trace2e policy get --format json`:
//! `{ "policies": [ { "resource", "confidentiality": "public"|"secret", "integrity",
//! "deleted", "consent" } ] }`.

use std::fmt::Write as _;

use serde::Serialize;
use trace2e_proto::Policy;
use trace2e_proto::pb::o2m;

/// Output format of the query commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    #[default]
    Text,
    /// One JSON object (documented in `trace2e --help` of each command).
    Json,
}

/// Formats a Unix time in microseconds as RFC 3339 UTC with microseconds
/// (`2025-01-01T12:00:00.000000Z`); 0 (unknown) prints as `-`.
pub fn time_us(us: u64) -> String {
    if us == 0 {
        return "-".to_owned();
    }
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `1d 2h 3m 4s`, leading zero units omitted.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if value > 0 || !out.is_empty() {
            let _ = write!(out, "{value}{unit} ");
        }
    }
    let _ = write!(out, "{s}s");
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Lays out rows in columns padded to the widest cell; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct StatusJson<'a> {
    node: &'a str,
    version: &'a str,
    uptime_secs: u64,
    addresses: &'a [String],
    processes: u64,
    enrolled: u64,
    active_grants: u64,
    resources: u64,
    audit_records: u64,
    audit_records_on_disk: u64,
    granted: u64,
    denied: u64,
    data_dir: &'a str,
    epoch: u64,
    journal_records: u64,
    head_hash: &'a str,
    head_records: u64,
    journal_problem: &'a str,
    synchronous: bool,
    /// Present only when the daemon measures its stages (`TRACE2E_BREAKDOWN=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<BreakdownJson<'a>>,
}

#[derive(Serialize)]
struct BreakdownJson<'a> {
    stages: Vec<StageJson<'a>>,
}

#[derive(Serialize)]
struct StageJson<'a> {
    name: &'a str,
    total_ns: u64,
    count: u64,
}

/// `trace2e status`.
pub fn status(s: &o2m::StatusResponse, format: Format) -> String {
    match format {
        Format::Json => json(&StatusJson {
            node: &s.node,
            version: &s.version,
            uptime_secs: s.uptime_secs,
            addresses: &s.addresses,
            processes: s.processes,
            enrolled: s.enrolled,
            active_grants: s.active_grants,
            resources: s.resources,
            audit_records: s.audit_records,
            audit_records_on_disk: s.audit_records_on_disk,
            granted: s.granted,
            denied: s.denied,
            data_dir: &s.data_dir,
            epoch: s.epoch,
            journal_records: s.journal_records,
            head_hash: &s.head_hash,
            head_records: s.head_records,
            journal_problem: &s.journal_problem,
            synchronous: s.synchronous,
            breakdown: (!s.breakdown.is_empty()).then(|| BreakdownJson {
                stages: s
                    .breakdown
                    .iter()
                    .map(|st| StageJson { name: &st.name, total_ns: st.total_ns, count: st.count })
                    .collect(),
            }),
        }),
        Format::Text => {
            let addresses = if s.addresses.is_empty() { "-".to_owned() } else { s.addresses.join(", ") };
            let rows = [
                ("node", s.node.clone()),
                ("version", s.version.clone()),
                ("uptime", duration(s.uptime_secs)),
                ("addresses", addresses),
                ("processes", s.processes.to_string()),
                ("enrolled fds", s.enrolled.to_string()),
                ("active grants", s.active_grants.to_string()),
                ("resources", s.resources.to_string()),
                ("audit records", audit_counts(s)),
            ];
            let mut rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![k.to_owned(), v]).collect();
            if s.data_dir.is_empty() {
                rows.push(vec!["data dir".into(), "none: state in memory only (--ephemeral)".into()]);
            } else {
                let mode = if s.synchronous { "each grant flushed before its answer" } else { "flushed periodically" };
                rows.push(vec!["data dir".into(), format!("{} (start #{})", s.data_dir, s.epoch)]);
                rows.push(vec!["journal".into(), format!("{} records, {mode}", s.journal_records)]);
                rows.push(vec!["audit head".into(), format!("{} (after {} records)", s.head_hash, s.head_records)]);
                if !s.journal_problem.is_empty() {
                    rows.push(vec![
                        "journal error".into(),
                        format!("{} — flows are denied until it can be written", s.journal_problem),
                    ]);
                }
            }
            table(&rows)
        }
    }
}

/// `N (granted G, denied D)`, with how many of the N are only on disk when any are.
fn audit_counts(s: &o2m::StatusResponse) -> String {
    let on_disk = match s.audit_records_on_disk {
        0 => String::new(),
        n => format!(", {n} of them in the spill file"),
    };
    format!("{} (granted {}, denied {}{on_disk})", s.audit_records, s.granted, s.denied)
}

#[derive(Serialize)]
struct PolicyJson<'a> {
    resource: &'a str,
    confidentiality: trace2e_proto::Confidentiality,
    integrity: u32,
    deleted: bool,
    consent: bool,
}

#[derive(Serialize)]
struct PoliciesJson<'a> {
    policies: Vec<PolicyJson<'a>>,
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_owned()
}

/// `trace2e policy get` and `policy set`: one line per resource.
pub fn policies(policies: &[(String, Policy)], format: Format) -> String {
    match format {
        Format::Json => json(&PoliciesJson {
            policies: policies
                .iter()
                .map(|(resource, p)| PolicyJson {
                    resource,
                    confidentiality: p.confidentiality,
                    integrity: p.integrity.0,
                    deleted: p.deleted,
                    consent: p.consent,
                })
                .collect(),
        }),
        Format::Text => {
            let mut rows =
                vec![["RESOURCE", "CONFIDENTIALITY", "INTEGRITY", "DELETED", "CONSENT"].map(str::to_owned).to_vec()];
            rows.extend(policies.iter().map(|(resource, p)| {
                vec![
                    resource.clone(),
                    p.confidentiality.to_string(),
                    p.integrity.to_string(),
                    yes_no(p.deleted),
                    yes_no(p.consent),
                ]
            }));
            table(&rows)
        }
    }
}

#[derive(Serialize)]
struct EdgeJson<'a> {
    source: &'a str,
    destination: &'a str,
    time_us: u64,
    time: String,
    first_us: u64,
    first: String,
    flows: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct ProvenanceJson<'a> {
    resource: &'a str,
    provenance: &'a [String],
    lineage: Vec<EdgeJson<'a>>,
}

/// `trace2e provenance`: the resource, its provenance, then its lineage edges.
pub fn provenance(p: &o2m::ProvenanceResponse, format: Format) -> String {
    match format {
        Format::Json => json(&ProvenanceJson {
            resource: &p.resource,
            provenance: &p.provenance,
            lineage: p
                .lineage
                .iter()
                .map(|e| EdgeJson {
                    source: &e.source,
                    destination: &e.destination,
                    time_us: e.time_us,
                    time: time_us(e.time_us),
                    first_us: e.first_us,
                    first: time_us(e.first_us),
                    flows: e.flows,
                    bytes: e.bytes,
                })
                .collect(),
        }),
        Format::Text => {
            let mut out = format!("{}\n", p.resource);
            if p.provenance.is_empty() {
                out.push_str("provenance: none\n");
            } else {
                let _ = writeln!(out, "provenance ({}):", p.provenance.len());
                for source in &p.provenance {
                    let _ = writeln!(out, "  {source}");
                }
            }
            if p.lineage.is_empty() {
                out.push_str("lineage: none\n");
            } else {
                let _ = writeln!(out, "lineage ({} edges):", p.lineage.len());
                let rows: Vec<Vec<String>> = p
                    .lineage
                    .iter()
                    .map(|e| {
                        vec![
                            format!("  {}", time_us(e.time_us)),
                            format!("{} → {}", e.source, e.destination),
                            format!("{} flow{}", e.flows, if e.flows == 1 { "" } else { "s" }),
                            format!("{} B", e.bytes),
                        ]
                    })
                    .collect();
                out.push_str(&table(&rows));
            }
            out
        }
    }
}

#[derive(Serialize)]
struct RecordJson<'a> {
    seq: u64,
    time_us: u64,
    time: String,
    node: &'a str,
    kind: &'a str,
    process: &'a str,
    source: &'a str,
    destination: &'a str,
    direction: &'a str,
    bytes: u64,
    result: &'a str,
    reason: &'a str,
    grant: u64,
}

#[derive(Serialize)]
struct AuditJson<'a> {
    records: Vec<RecordJson<'a>>,
}

/// `trace2e audit`: one aligned line per record.
pub fn audit(records: &[o2m::AuditRecord], format: Format) -> String {
    match format {
        Format::Json => json(&AuditJson {
            records: records
                .iter()
                .map(|r| RecordJson {
                    seq: r.seq,
                    time_us: r.time_us,
                    time: time_us(r.time_us),
                    node: &r.node,
                    kind: &r.kind,
                    process: &r.process,
                    source: &r.source,
                    destination: &r.destination,
                    direction: &r.direction,
                    bytes: r.bytes,
                    result: &r.result,
                    reason: &r.reason,
                    grant: r.grant,
                })
                .collect(),
        }),
        Format::Text => {
            if records.is_empty() {
                return "no audit records\n".to_owned();
            }
            let mut rows = vec![
                ["SEQ", "TIME", "KIND", "PROCESS", "FLOW", "DIR", "BYTES", "RESULT", "REASON"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            rows.extend(records.iter().map(|r| {
                let flow = match (r.source.is_empty(), r.destination.is_empty()) {
                    (false, false) => format!("{} → {}", r.source, r.destination),
                    // Not a flow: the resource acted upon (enrollment, policy change, …).
                    (false, true) => r.source.clone(),
                    (true, false) => format!("→ {}", r.destination),
                    (true, true) => "-".to_owned(),
                };
                vec![
                    r.seq.to_string(),
                    time_us(r.time_us),
                    or_dash(&r.kind).to_owned(),
                    or_dash(&r.process).to_owned(),
                    flow,
                    or_dash(&r.direction).to_owned(),
                    r.bytes.to_string(),
                    or_dash(&r.result).to_owned(),
                    r.reason.clone(),
                ]
            }));
            table(&rows)
        }
    }
}

/// `trace2e consent list`: `SOURCE  →  DESTINATION`, one line per pending request.
pub fn consent_requests(requests: &[o2m::ConsentRequest]) -> String {
    if requests.is_empty() {
        return "no pending consent requests\n".to_owned();
    }
    let rows: Vec<Vec<String>> =
        requests.iter().map(|r| vec![r.source.clone(), "→".to_owned(), r.destination.clone()]).collect();
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace2e_proto::{Confidentiality, IntegrityLevel};

    // 2025-01-01T12:00:00Z
    const NOON: u64 = 1_735_732_800_000_000;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time_us(NOON), "2025-01-01T12:00:00.000000Z");
        assert_eq!(time_us(NOON + 61_000_042), "2025-01-01T12:01:01.000042Z");
        assert_eq!(time_us(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(time_us(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(time_us(0), "-");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(3 * 86_400 + 5), "3d 0h 0m 5s");
        assert_eq!(duration(3725), "1h 2m 5s");
    }

    fn edge(source: &str, destination: &str, t: u64, bytes: u64) -> o2m::LineageEdge {
        o2m::LineageEdge {
            source: source.into(),
            destination: destination.into(),
            time_us: t,
            bytes,
            first_us: t,
            flows: 1,
        }
    }

    fn sample_provenance() -> o2m::ProvenanceResponse {
        o2m::ProvenanceResponse {
            resource: "file:///out@node-a".into(),
            provenance: vec!["file:///in@node-a".into(), "process://42.1@node-a".into()],
            lineage: vec![
                edge("file:///in@node-a", "process://42.1@node-a", NOON, 1024),
                edge("process://42.1@node-a", "file:///out@node-a", NOON + 1, 7),
            ],
        }
    }

    #[test]
    fn provenance_text() {
        let text = provenance(&sample_provenance(), Format::Text);
        let want = "\
file:///out@node-a
provenance (2):
  file:///in@node-a
  process://42.1@node-a
lineage (2 edges):
  2025-01-01T12:00:00.000000Z  file:///in@node-a → process://42.1@node-a   1 flow  1024 B
  2025-01-01T12:00:00.000001Z  process://42.1@node-a → file:///out@node-a  1 flow  7 B
";
        assert_eq!(text, want);
        let empty = o2m::ProvenanceResponse { resource: "file:///x@n".into(), ..Default::default() };
        assert_eq!(provenance(&empty, Format::Text), "file:///x@n\nprovenance: none\nlineage: none\n");
    }

    #[test]
    fn provenance_json_is_the_documented_object() {
        let v: serde_json::Value = serde_json::from_str(&provenance(&sample_provenance(), Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "resource": "file:///out@node-a",
                "provenance": ["file:///in@node-a", "process://42.1@node-a"],
                "lineage": [
                    {"source": "file:///in@node-a", "destination": "process://42.1@node-a",
                     "time_us": NOON, "time": "2025-01-01T12:00:00.000000Z",
                     "first_us": NOON, "first": "2025-01-01T12:00:00.000000Z", "flows": 1, "bytes": 1024},
                    {"source": "process://42.1@node-a", "destination": "file:///out@node-a",
                     "time_us": NOON + 1, "time": "2025-01-01T12:00:00.000001Z",
                     "first_us": NOON + 1, "first": "2025-01-01T12:00:00.000001Z", "flows": 1, "bytes": 7},
                ]
            })
        );
    }

    fn record(seq: u64, result: &str, reason: &str) -> o2m::AuditRecord {
        o2m::AuditRecord {
            seq,
            time_us: NOON,
            node: "node-a".into(),
            kind: "flow".into(),
            process: "process://42.1@node-a".into(),
            source: "file:///in@node-a".into(),
            destination: "process://42.1@node-a".into(),
            direction: "read".into(),
            bytes: if result == "granted" { 1024 } else { 0 },
            result: result.into(),
            reason: reason.into(),
            grant: seq,
        }
    }

    #[test]
    fn audit_text_is_aligned() {
        let records = [record(9, "granted", ""), record(10, "denied", "denied by integrity policy")];
        let text = audit(&records, Format::Text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SEQ  TIME"), "{text}");
        assert_eq!(
            lines[1],
            "9    2025-01-01T12:00:00.000000Z  flow  process://42.1@node-a  file:///in@node-a → process://42.1@node-a  read  1024   granted"
        );
        assert_eq!(
            lines[2],
            "10   2025-01-01T12:00:00.000000Z  flow  process://42.1@node-a  file:///in@node-a → process://42.1@node-a  read  0      denied   denied by integrity policy"
        );
        let column = |line: &str, word: &str| line[..line.find(word).unwrap()].chars().count();
        assert_eq!(column(lines[2], "denied by"), column(lines[0], "REASON"));
        assert_eq!(audit(&[], Format::Text), "no audit records\n");
    }

    #[test]
    fn audit_json_is_the_documented_object() {
        let v: serde_json::Value = serde_json::from_str(&audit(&[record(3, "granted", "")], Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"records": [{
                "seq": 3, "time_us": NOON, "time": "2025-01-01T12:00:00.000000Z", "node": "node-a",
                "kind": "flow", "process": "process://42.1@node-a", "source": "file:///in@node-a",
                "destination": "process://42.1@node-a", "direction": "read", "bytes": 1024,
                "result": "granted", "reason": "", "grant": 3
            }]})
        );
    }

    #[test]
    fn policies_text_and_json() {
        let p = Policy {
            confidentiality: Confidentiality::Secret,
            integrity: IntegrityLevel(2),
            deleted: false,
            consent: true,
        };
        let list = [("file:///x@node-a".to_owned(), p)];
        assert_eq!(
            policies(&list, Format::Text),
            "RESOURCE          CONFIDENTIALITY  INTEGRITY  DELETED  CONSENT\n\
             file:///x@node-a  secret           2          no       yes\n"
        );
        let v: serde_json::Value = serde_json::from_str(&policies(&list, Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"policies": [{"resource": "file:///x@node-a", "confidentiality": "secret",
                "integrity": 2, "deleted": false, "consent": true}]})
        );
    }

    #[test]
    fn status_text_and_json() {
        let s = o2m::StatusResponse {
            node: "node-a".into(),
            addresses: vec!["10.0.0.1".into(), "::1".into()],
            processes: 2,
            enrolled: 5,
            active_grants: 1,
            resources: 9,
            audit_records: 12,
            granted: 10,
            denied: 2,
            uptime_secs: 3725,
            version: "0.1.0".into(),
            breakdown: Vec::new(),
            audit_records_on_disk: 0,
            data_dir: "/var/lib/trace2e".into(),
            epoch: 3,
            journal_records: 40,
            head_hash: "ab12".into(),
            head_records: 38,
            journal_problem: String::new(),
            synchronous: false,
        };
        let text = status(&s, Format::Text);
        assert!(text.starts_with("node           node-a\n"), "{text}");
        assert!(text.contains("uptime         1h 2m 5s\n"), "{text}");
        assert!(text.contains("addresses      10.0.0.1, ::1\n"), "{text}");
        assert!(text.contains("audit records  12 (granted 10, denied 2)\n"), "{text}");
        assert!(text.contains("data dir       /var/lib/trace2e (start #3)\n"), "{text}");
        assert!(text.contains("journal        40 records, flushed periodically\n"), "{text}");
        assert!(text.contains("audit head     ab12 (after 38 records)\n"), "{text}");
        assert!(!text.contains("journal error"), "{text}");
        let full = o2m::StatusResponse { journal_problem: "No space left on device".into(), ..s.clone() };
        assert!(
            status(&full, Format::Text)
                .contains("journal error  No space left on device — flows are denied until it can be written\n")
        );
        let spilled = o2m::StatusResponse { audit_records_on_disk: 7, ..s.clone() };
        let text = status(&spilled, Format::Text);
        assert!(text.contains("audit records  12 (granted 10, denied 2, 7 of them in the spill file)\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&status(&s, Format::Json)).unwrap();
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["uptime_secs"], 3725);
        assert_eq!(v["addresses"][1], "::1");
    }

    #[test]
    fn consent_list() {
        assert_eq!(consent_requests(&[]), "no pending consent requests\n");
        let r = [o2m::ConsentRequest { source: "file:///x@a".into(), destination: "node:b".into() }];
        assert_eq!(consent_requests(&r), "file:///x@a  →  node:b\n");
    }
}
