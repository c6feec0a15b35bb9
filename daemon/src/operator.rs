//! O2M: the operator service (`trace2e.o2m.O2m`), served by `trace2ed` on a Unix socket.
//!
//! Owns the edge between operators and the engine: it converts requests into domain
//! values (resource identifiers, policies, consent destinations), checks that the
//! resources it is asked to act on belong to this node, calls the [`Engine`], and converts
//! answers back. Every failure becomes a [`tonic::Status`] in one place
//! (`From<OperatorError> for Status`). It holds no state and makes no decision of its own;
//! the engine audits every change. Serving the socket is `daemon`'s job; the client is
//! `cli`.
//!
//! Resources in requests are localized identifiers (`RES@NODE`) or bare ones (`RES`, this
//! node). Only the owner node decides for a resource: a request about another node's
//! resource is refused with `FailedPrecondition` ("ask that node") until federation
//! forwards it. The audit filter is the exception: this node's trail may mention other
//! nodes' resources.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use trace2e_proto::convert::InvalidMessage;
use trace2e_proto::pb::o2m::{self, o2m_server::O2m, o2m_server::O2mServer};
use trace2e_proto::{Confidentiality, IntegrityLevel, InvalidIdentifier, LocalizedResource, NodeId, Resource};

use crate::audit::{AuditOutcome, AuditQuery, AuditRecord, AuditSeq, DecisionFilter};
use crate::consent::ConsentDestination;
use crate::engine::{Engine, EngineError};
use crate::provenance::LineageEdge;

/// The O2M service over one engine.
#[derive(Debug, Clone)]
pub struct OperatorService {
    engine: Arc<Engine>,
    started: Instant,
}

/// The O2M service of `engine`, ready to add to a tonic server.
pub fn server(engine: Arc<Engine>) -> O2mServer<OperatorService> {
    O2mServer::new(OperatorService::new(engine))
}

/// Why an operator request failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A resource identifier does not parse.
    #[error("invalid {field}: {source}")]
    InvalidResource {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: InvalidIdentifier,
    },
    /// A resource of another node: only its owner decides for it.
    #[error("resource {resource} belongs to node {}; ask that node (this is node {local})", resource.node)]
    Remote {
        /// The resource.
        resource: LocalizedResource,
        /// This node.
        local: NodeId,
    },
    /// A field that is not a valid domain value.
    #[error("invalid {field}: {source}")]
    InvalidField {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: InvalidMessage,
    },
    /// An audit decision filter other than `granted` or `denied`.
    #[error("invalid decision filter: {0}")]
    InvalidDecision(String),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Audit records cannot be read back from the spill file.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The change is in force but could not be made durable.
    #[error("the change is in force but not yet on stable storage: {0}")]
    NotDurable(String),
}

impl From<OperatorError> for Status {
    /// The one place O2M failures become gRPC codes: a bad request is `InvalidArgument`,
    /// another node's resource `FailedPrecondition`, the engine's answers are mapped by
    /// [`crate::status::engine_code`].
    fn from(e: OperatorError) -> Self {
        let code = match &e {
            OperatorError::InvalidResource { .. }
            | OperatorError::InvalidField { .. }
            | OperatorError::InvalidDecision(_) => Code::InvalidArgument,
            OperatorError::Remote { .. } => Code::FailedPrecondition,
            OperatorError::Engine(e) => crate::status::engine_code(e),
            OperatorError::Audit(_) => Code::Internal,
            OperatorError::NotDurable(_) => Code::Unavailable,
        };
        if code == Code::Internal {
            tracing::warn!(error = %e, "operator request failed");
        } else {
            tracing::debug!(error = %e, ?code, "operator request refused");
        }
        Status::new(code, e.to_string())
    }
}

type Reply<T> = Result<Response<T>, Status>;

impl OperatorService {
    /// A service over `engine`; uptime counts from now.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine, started: Instant::now() }
    }

    /// `text` as a localized resource, bare meaning this node.
    fn localized(&self, field: &'static str, text: &str) -> Result<LocalizedResource, OperatorError> {
        LocalizedResource::parse_with_default(text, self.engine.node())
            .map_err(|source| OperatorError::InvalidResource { field, source })
    }

    /// `text` as a resource of this node.
    fn local(&self, field: &'static str, text: &str) -> Result<Resource, OperatorError> {
        let localized = self.localized(field, text)?;
        if &localized.node != self.engine.node() {
            return Err(OperatorError::Remote { resource: localized, local: self.engine.node().clone() });
        }
        Ok(localized.resource)
    }

    /// A consent destination: `node:NAME`, or a resource (bare meaning this node).
    fn consent_destination(&self, text: &str) -> Result<ConsentDestination, OperatorError> {
        let invalid = |source| OperatorError::InvalidResource { field: "destination", source };
        if text.starts_with("node:") {
            return text.parse().map_err(invalid);
        }
        Ok(ConsentDestination::Resource(
            LocalizedResource::parse_with_default(text, self.engine.node()).map_err(invalid)?,
        ))
    }

    fn status_response(&self) -> o2m::StatusResponse {
        let topology = self.engine.topology();
        let s = self.engine.status();
        let d = self.engine.durability();
        let (head_records, head_hash) = d.head.clone().unwrap_or_default();
        o2m::StatusResponse {
            data_dir: d.data_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            epoch: d.epoch,
            journal_records: d.records,
            head_hash,
            head_records,
            journal_problem: d.problem.clone().unwrap_or_default(),
            synchronous: d.synchronous,
            node: topology.node.to_string(),
            addresses: topology.addresses.iter().map(ToString::to_string).collect(),
            processes: s.processes as u64,
            enrolled: s.enrolled_fds as u64,
            active_grants: s.active_grants as u64,
            resources: s.labelled_resources as u64,
            audit_records: s.audit_records as u64,
            audit_records_on_disk: s.audit_records_on_disk as u64,
            granted: s.granted,
            denied: s.denied,
            uptime_secs: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            breakdown: self
                .engine
                .config()
                .breakdown
                .snapshot()
                .into_iter()
                .map(|(name, total_ns, count)| o2m::Stage { name: name.to_owned(), total_ns, count })
                .collect(),
        }
    }

    fn policies(&self, request: o2m::GetPoliciesRequest) -> Result<o2m::GetPoliciesResponse, OperatorError> {
        let policies = request
            .resources
            .iter()
            .map(|text| {
                let resource = self.local("resource", text)?;
                let policy = self.engine.policy(&resource);
                Ok(o2m::ResourcePolicy {
                    resource: resource.at(self.engine.node()).to_string(),
                    policy: Some(policy.into()),
                })
            })
            .collect::<Result<_, OperatorError>>()?;
        Ok(o2m::GetPoliciesResponse { policies })
    }

    fn apply_policy(&self, request: o2m::SetPolicyRequest) -> Result<o2m::SetPolicyResponse, OperatorError> {
        let resource = self.local("resource", &request.resource)?;
        let confidentiality = request
            .confidentiality
            .map(Confidentiality::try_from)
            .transpose()
            .map_err(|source| OperatorError::InvalidField { field: "confidentiality", source })?;
        let integrity = request.integrity.map(IntegrityLevel);
        let policy = self.engine.set_policy(&resource, confidentiality, integrity)?;
        self.engine.flush().map_err(OperatorError::NotDurable)?;
        Ok(o2m::SetPolicyResponse { policy: Some(policy.into()) })
    }

    fn mark_deleted(&self, request: o2m::DeleteRequest) -> Result<o2m::DeleteResponse, OperatorError> {
        let resource = self.local("resource", &request.resource)?;
        self.engine.delete(&resource)?;
        self.engine.flush().map_err(OperatorError::NotDurable)?;
        Ok(o2m::DeleteResponse {})
    }

    fn provenance(&self, request: o2m::ProvenanceRequest) -> Result<o2m::ProvenanceResponse, OperatorError> {
        let resource = self.local("resource", &request.resource)?;
        let provenance = self.engine.provenance(&resource).iter().map(ToString::to_string).collect();
        let lineage = self.engine.lineage(&resource).iter().map(lineage_edge).collect();
        Ok(o2m::ProvenanceResponse { resource: resource.at(self.engine.node()).to_string(), provenance, lineage })
    }

    fn audit(&self, request: o2m::AuditQuery) -> Result<o2m::AuditResponse, OperatorError> {
        let query = AuditQuery {
            resource: request.resource.as_deref().map(|r| self.localized("resource", r)).transpose()?,
            decision: request
                .decision
                .as_deref()
                .map(str::parse::<DecisionFilter>)
                .transpose()
                .map_err(OperatorError::InvalidDecision)?,
            limit: usize::try_from(request.limit).unwrap_or(usize::MAX),
            after: AuditSeq(request.after),
        };
        Ok(o2m::AuditResponse { records: self.engine.audit(&query)?.iter().map(audit_record).collect() })
    }

    fn enforce(&self, request: o2m::EnforceConsentRequest) -> Result<o2m::EnforceConsentResponse, OperatorError> {
        let resource = self.local("resource", &request.resource)?;
        self.engine.set_consent_enforced(&resource, request.enforce)?;
        self.engine.flush().map_err(OperatorError::NotDurable)?;
        Ok(o2m::EnforceConsentResponse {})
    }

    fn consent_requests(&self) -> o2m::ListConsentRequestsResponse {
        let requests = self
            .engine
            .pending_consents()
            .into_iter()
            .map(|r| o2m::ConsentRequest { source: r.source.to_string(), destination: r.destination.to_string() })
            .collect();
        o2m::ListConsentRequestsResponse { requests }
    }

    fn decide(&self, request: o2m::DecideConsentRequest) -> Result<o2m::DecideConsentResponse, OperatorError> {
        let source = self.local("source", &request.source)?.at(self.engine.node());
        let destination = self.consent_destination(&request.destination)?;
        self.engine.decide_consent(&source, destination, request.grant);
        self.engine.flush().map_err(OperatorError::NotDurable)?;
        Ok(o2m::DecideConsentResponse {})
    }
}

/// One lineage edge on the wire.
fn lineage_edge(e: &LineageEdge) -> o2m::LineageEdge {
    o2m::LineageEdge {
        source: e.source.to_string(),
        destination: e.destination.to_string(),
        time_us: e.last_us,
        bytes: e.bytes,
        first_us: e.first_us,
        flows: e.flows,
    }
}

/// One audit record on the wire. Events that are not flows (enrollment, policy change,
/// deletion, consent enforcement) carry the resource they act on in `source`; details
/// that have no field of their own (new policy, executable, fd, external peer, denial)
/// go into `reason`.
fn audit_record(r: &AuditRecord) -> o2m::AuditRecord {
    let text = |v: Option<&LocalizedResource>| v.map(ToString::to_string).unwrap_or_default();
    let (source, destination) = match (&r.source, &r.destination, &r.consent_node) {
        (None, None, None) => (text(r.resource.as_ref()), String::new()),
        (source, _, Some(node)) => (text(source.as_ref()), format!("node:{node}")),
        (source, destination, None) => (text(source.as_ref()), text(destination.as_ref())),
    };
    let mut details = Vec::new();
    if let Some(fd) = r.fd {
        details.push(format!("fd {fd}"));
    }
    if let Some(exe) = &r.exe {
        details.push(format!("exe {}", exe.display()));
    }
    if let Some(node) = &r.peer {
        details.push(format!("asked by {node}"));
    }
    if let Some(peer) = r.external_peer {
        details.push(format!("external peer {peer}"));
    }
    if let Some(p) = &r.policy {
        let mut policy = format!("policy {} integrity {}", p.confidentiality, p.integrity);
        if p.deleted {
            policy.push_str(" deleted");
        }
        if p.consent {
            policy.push_str(" consent");
        }
        details.push(policy);
    }
    if let AuditOutcome::Denied(d) = &r.result {
        details.push(d.to_string());
    }
    o2m::AuditRecord {
        seq: r.seq.0,
        time_us: r.time_us,
        node: r.node.to_string(),
        kind: r.kind.as_str().to_owned(),
        process: r.process.map(|p| Resource::Process(p).to_string()).unwrap_or_default(),
        source,
        destination,
        direction: r.direction.map(|d| d.to_string()).unwrap_or_default(),
        bytes: r.bytes,
        result: outcome(&r.result).to_owned(),
        reason: details.join("; "),
        grant: r.grant.map_or(0, |g| g.0),
    }
}

fn outcome(o: &AuditOutcome) -> &'static str {
    match o {
        AuditOutcome::Granted => "granted",
        AuditOutcome::Denied(_) => "denied",
        AuditOutcome::Ok => "ok",
        AuditOutcome::Failed => "failed",
        AuditOutcome::Allowed => "allowed",
        AuditOutcome::Refused => "refused",
    }
}

#[tonic::async_trait]
impl O2m for OperatorService {
    async fn status(&self, _: Request<o2m::StatusRequest>) -> Reply<o2m::StatusResponse> {
        Ok(Response::new(self.status_response()))
    }

    async fn get_policies(&self, request: Request<o2m::GetPoliciesRequest>) -> Reply<o2m::GetPoliciesResponse> {
        Ok(Response::new(self.policies(request.into_inner())?))
    }

    // Changes that peers may have reused decisions about are announced to them before the
    // operator gets the answer (best effort, each peer within the M2M deadline): when the
    // command returns, every reachable peer has dropped what it cached.

    async fn set_policy(&self, request: Request<o2m::SetPolicyRequest>) -> Reply<o2m::SetPolicyResponse> {
        let response = self.apply_policy(request.into_inner())?;
        self.engine.announce_policy_change().await;
        Ok(Response::new(response))
    }

    async fn delete(&self, request: Request<o2m::DeleteRequest>) -> Reply<o2m::DeleteResponse> {
        let resource = self.local("resource", &request.get_ref().resource)?;
        let response = self.mark_deleted(request.into_inner())?;
        self.engine.announce_deletion(&resource).await;
        Ok(Response::new(response))
    }

    async fn get_provenance(&self, request: Request<o2m::ProvenanceRequest>) -> Reply<o2m::ProvenanceResponse> {
        Ok(Response::new(self.provenance(request.into_inner())?))
    }

    async fn query_audit(&self, request: Request<o2m::AuditQuery>) -> Reply<o2m::AuditResponse> {
        Ok(Response::new(self.audit(request.into_inner())?))
    }

    async fn enforce_consent(
        &self,
        request: Request<o2m::EnforceConsentRequest>,
    ) -> Reply<o2m::EnforceConsentResponse> {
        let response = self.enforce(request.into_inner())?;
        self.engine.announce_policy_change().await;
        Ok(Response::new(response))
    }

    async fn list_consent_requests(
        &self,
        _: Request<o2m::ListConsentRequestsRequest>,
    ) -> Reply<o2m::ListConsentRequestsResponse> {
        Ok(Response::new(self.consent_requests()))
    }

    async fn decide_consent(&self, request: Request<o2m::DecideConsentRequest>) -> Reply<o2m::DecideConsentResponse> {
        let response = self.decide(request.into_inner())?;
        self.engine.announce_policy_change().await;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::topology::Topology;

    fn service() -> OperatorService {
        let topology = Topology::new(NodeId::new("node-a").unwrap(), vec![IpAddr::from([10, 0, 0, 1])]);
        OperatorService::new(Arc::new(Engine::new(EngineConfig::new(topology))))
    }

    fn status_of<T: std::fmt::Debug>(r: Reply<T>) -> Status {
        r.expect_err("expected an error status")
    }

    async fn policy_of(s: &OperatorService, resource: &str) -> o2m::ResourcePolicy {
        let request = o2m::GetPoliciesRequest { resources: vec![resource.to_owned()] };
        let mut answer = s.get_policies(Request::new(request)).await.unwrap().into_inner();
        assert_eq!(answer.policies.len(), 1);
        answer.policies.remove(0)
    }

    #[tokio::test]
    async fn status_names_the_node() {
        let s = service();
        let status = O2m::status(&s, Request::new(o2m::StatusRequest {})).await.unwrap().into_inner();
        assert_eq!(status.node, "node-a");
        assert_eq!(status.addresses, ["10.0.0.1"]);
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    }

    #[tokio::test]
    async fn policies_default_then_change_one_field_at_a_time() {
        let s = service();
        let p = policy_of(&s, "file:///data/x").await;
        assert_eq!(p.resource, "file:///data/x@node-a");
        assert_eq!(p.policy, Some(trace2e_proto::Policy::default().into()));

        let request = o2m::SetPolicyRequest {
            resource: "file:///data/x@node-a".into(),
            confidentiality: Some(o2m::Confidentiality::Secret as i32),
            integrity: None,
        };
        let set = s.set_policy(Request::new(request)).await.unwrap().into_inner();
        let request =
            o2m::SetPolicyRequest { resource: "file:///data/x".into(), confidentiality: None, integrity: Some(3) };
        let set2 = s.set_policy(Request::new(request)).await.unwrap().into_inner();
        assert_eq!(set.policy.unwrap().confidentiality, o2m::Confidentiality::Secret as i32);
        let got = policy_of(&s, "file:///data/x").await.policy.unwrap();
        assert_eq!(set2.policy.unwrap(), got);
        assert_eq!((got.confidentiality, got.integrity), (o2m::Confidentiality::Secret as i32, 3));

        let request = o2m::SetPolicyRequest {
            resource: "exe:///usr/bin/server".into(),
            confidentiality: None,
            integrity: Some(2),
        };
        s.set_policy(Request::new(request)).await.unwrap();
        assert_eq!(policy_of(&s, "exe:///usr/bin/server").await.policy.unwrap().integrity, 2);
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_arguments() {
        let s = service();
        let request = o2m::GetPoliciesRequest { resources: vec!["ftp:///x".into()] };
        let e = status_of(s.get_policies(Request::new(request)).await);
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("unknown scheme"), "{e:?}");

        let request =
            o2m::SetPolicyRequest { resource: "file:///x".into(), confidentiality: Some(42), integrity: None };
        let e = status_of(s.set_policy(Request::new(request)).await);
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("confidentiality"), "{e:?}");

        let query = o2m::AuditQuery { decision: Some("maybe".into()), ..Default::default() };
        assert_eq!(status_of(s.query_audit(Request::new(query)).await).code(), Code::InvalidArgument);

        let request =
            o2m::DecideConsentRequest { source: "file:///x".into(), destination: "node:bad node".into(), grant: true };
        assert_eq!(status_of(s.decide_consent(Request::new(request)).await).code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn another_nodes_resources_are_refused() {
        let s = service();
        let e = status_of(s.delete(Request::new(o2m::DeleteRequest { resource: "file:///x@node-b".into() })).await);
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(
            e.message(),
            "resource file:///x@node-b belongs to node node-b; ask that node (this is node node-a)"
        );
        let request = o2m::ProvenanceRequest { resource: "file:///x@node-b".into() };
        assert_eq!(status_of(s.get_provenance(Request::new(request)).await).code(), Code::FailedPrecondition);
        let request = o2m::EnforceConsentRequest { resource: "file:///x@node-b".into(), enforce: true };
        assert_eq!(status_of(s.enforce_consent(Request::new(request)).await).code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn delete_and_consent_show_in_the_policy() {
        let s = service();
        s.delete(Request::new(o2m::DeleteRequest { resource: "file:///data/cv.txt".into() })).await.unwrap();
        assert!(policy_of(&s, "file:///data/cv.txt").await.policy.unwrap().deleted);

        let request = o2m::EnforceConsentRequest { resource: "file:///data/y".into(), enforce: true };
        s.enforce_consent(Request::new(request)).await.unwrap();
        assert!(policy_of(&s, "file:///data/y").await.policy.unwrap().consent);
        let pending = s.list_consent_requests(Request::new(o2m::ListConsentRequestsRequest {})).await.unwrap();
        assert!(pending.into_inner().requests.is_empty());
        for destination in ["node:node-b", "file:///out@node-b", "file:///local-out"] {
            let request = o2m::DecideConsentRequest {
                source: "file:///data/y".into(),
                destination: destination.into(),
                grant: true,
            };
            s.decide_consent(Request::new(request)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn provenance_of_an_unknown_resource_is_empty() {
        let s = service();
        let request = o2m::ProvenanceRequest { resource: "file:///never/seen".into() };
        let p = s.get_provenance(Request::new(request)).await.unwrap().into_inner();
        assert_eq!(p.resource, "file:///never/seen@node-a");
        assert!(p.provenance.is_empty() && p.lineage.is_empty());
    }

    #[tokio::test]
    async fn audit_shows_operator_changes() {
        let s = service();
        let request =
            o2m::SetPolicyRequest { resource: "file:///data/x".into(), confidentiality: None, integrity: Some(1) };
        s.set_policy(Request::new(request)).await.unwrap();
        let query = o2m::AuditQuery { resource: Some("file:///data/x".into()), ..Default::default() };
        let records = s.query_audit(Request::new(query)).await.unwrap().into_inner().records;
        let change = records.iter().find(|r| r.kind == "policy_change").expect("a policy change record");
        assert_eq!(change.source, "file:///data/x@node-a");
        assert_eq!(change.node, "node-a");
        assert!(change.reason.contains("integrity 1"), "{change:?}");
        let query = o2m::AuditQuery { decision: Some("denied".into()), ..Default::default() };
        assert!(s.query_audit(Request::new(query)).await.unwrap().into_inner().records.is_empty());
    }
}
