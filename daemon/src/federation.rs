//! Federation: M2M over tonic — the client that asks peer nodes ([`Peers`], this node's
//! [`Federation`]) and the server that answers them ([`M2mService`]).
//!
//! This module owns transport concerns only: endpoints, deadlines, TLS, who the caller
//! is, and the mapping between protobuf messages and domain values (malformed input is
//! `InvalidArgument`, an unknown node `PermissionDenied`, an unknown reservation
//! `NotFound`; nothing a peer sends can panic the daemon). Decisions are the
//! [`Engine`]'s (`Engine::remote_reserve`, `Engine::check_sources`, ...).
//!
//! # Identity of the caller
//!
//! Every request names its node. The callee answers only configured peers, and only
//! when the call comes from one of the addresses that peer owns (its `--peer` entries):
//! each node binds its outgoing M2M connections to its `--m2m-listen` address when that
//! is a specific address. With TLS (`--m2m-tls-*`), both ends present certificates
//! signed by the shared CA, and a node's certificate must name the node (DNS name =
//! node name). Both sides check that name: the client checks the server's (tonic's
//! domain name check), and the server checks that the client's certificate names the
//! node the request claims to come from ([`M2mService`], refused with
//! `PermissionDenied` and a warning naming the claim and the certificate's names), so
//! no holder of a CA-signed certificate can speak for another node. The address check
//! applies with and without TLS.
//!
//! # Deadlines
//!
//! Every call has one: `--m2m-timeout-ms` (default 2 s) for reservations, updates and
//! notices; the consent timeout plus that for CheckSources, which may wait for an
//! owner's consent. Connection attempts time out after the M2M timeout, and HTTP/2
//! keep-alives detect a peer that stops answering during a long question. A dead peer's
//! connection is re-established on the next call, so a restarted peer is usable again
//! without restarting anyone else.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use trace2e_proto::pb::m2m::{
    self as pb,
    m2m_client::M2mClient,
    m2m_server::{M2m, M2mServer},
};
use trace2e_proto::pb::p2m as p2m_pb;
use trace2e_proto::{Denial, LocalizedResource, NodeId, Policy, Resource};

use crate::engine::{Engine, EngineError};
use crate::remote::{BoxFuture, Federation, RemoteError, RemoteTarget, RemoteToken, ReserveQuestion, SourcesQuestion};

/// Largest M2M message (a provenance of ~100k resources).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Where to serve M2M, the peers' endpoints, and TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationConfig {
    /// This node's M2M endpoint; `None`: no federation.
    pub listen: Option<SocketAddr>,
    /// The peers' endpoints.
    pub peers: Vec<PeerEndpoint>,
    /// Deadline of one M2M call.
    pub timeout: Duration,
    /// Mutual TLS, when set.
    pub tls: Option<TlsFiles>,
}

/// A peer's M2M endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEndpoint {
    /// The peer.
    pub node: NodeId,
    /// Where it serves M2M.
    pub endpoint: SocketAddr,
}

/// PEM files for M2M mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (its DNS name is the node's name).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: PathBuf,
}

/// Why federation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A TLS file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration or an endpoint is invalid.
    #[error("invalid M2M configuration: {0}")]
    Invalid(String),
}

/// The TLS settings of both sides, loaded from [`TlsFiles`].
#[derive(Debug, Clone)]
pub struct Tls {
    server: ServerTlsConfig,
    identity: Identity,
    ca: Certificate,
}

impl Tls {
    /// Reads the PEM files.
    pub fn load(files: &TlsFiles) -> Result<Self, FederationError> {
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|source| FederationError::Read { path: path.clone(), source });
        let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
        let ca = Certificate::from_pem(read(&files.ca)?);
        let server = ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone());
        Ok(Self { server, identity, ca })
    }

    /// The server side.
    pub fn server(&self) -> ServerTlsConfig {
        self.server.clone()
    }
}

/// This node's M2M client: one lazily connected channel per peer.
#[derive(Debug, Clone)]
pub struct Peers {
    node: NodeId,
    clients: Arc<HashMap<NodeId, M2mClient<Channel>>>,
    timeout: Duration,
    check_timeout: Duration,
}

impl Peers {
    /// Channels to every peer of `config` (connected on first use, re-connected after a
    /// failure). `consent_timeout` bounds how long an owner may think about a question.
    /// Must be called inside a tokio runtime.
    pub fn new(
        node: NodeId,
        config: &FederationConfig,
        tls: Option<&Tls>,
        consent_timeout: Duration,
    ) -> Result<Self, FederationError> {
        let local = config.listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        let mut clients = HashMap::new();
        for peer in &config.peers {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", peer.endpoint))
                .map_err(|e| FederationError::Invalid(format!("peer {}: {e}", peer.node)))?
                .connect_timeout(config.timeout)
                .http2_keep_alive_interval(config.timeout)
                .keep_alive_timeout(config.timeout)
                .tcp_nodelay(true)
                .local_address(local.filter(|ip| ip.is_ipv4() == peer.endpoint.is_ipv4()));
            if let Some(tls) = tls {
                let client = ClientTlsConfig::new()
                    .domain_name(peer.node.as_str())
                    .ca_certificate(tls.ca.clone())
                    .identity(tls.identity.clone());
                endpoint = endpoint
                    .tls_config(client)
                    .map_err(|e| FederationError::Invalid(format!("TLS for peer {}: {e}", peer.node)))?;
            }
            let client = M2mClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            clients.insert(peer.node.clone(), client);
        }
        Ok(Self {
            node,
            clients: Arc::new(clients),
            timeout: config.timeout,
            check_timeout: consent_timeout + config.timeout,
        })
    }

    fn client(&self, node: &NodeId) -> Result<M2mClient<Channel>, RemoteError> {
        self.clients.get(node).cloned().ok_or_else(|| RemoteError::NotAPeer(node.clone()))
    }

    /// Runs one call to `node` with `deadline` (also sent to the peer as grpc-timeout).
    fn call<Q, A, F, Fut>(
        &self,
        node: &NodeId,
        deadline: Duration,
        message: Q,
        rpc: F,
    ) -> BoxFuture<Result<A, RemoteError>>
    where
        Q: Send + 'static,
        A: Send + 'static,
        F: FnOnce(M2mClient<Channel>, Request<Q>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<A>, Status>> + Send + 'static,
    {
        let client = self.client(node);
        let node = node.clone();
        Box::pin(async move {
            let client = client?;
            let mut request = Request::new(message);
            request.set_timeout(deadline);
            match tokio::time::timeout(deadline, rpc(client, request)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(remote_error(node, &status)),
                Err(_) => Err(RemoteError::Unreachable { node, cause: format!("no answer within {deadline:?}") }),
            }
        })
    }

    fn notify_all<Q, F, Fut>(&self, message: Q, rpc: F) -> BoxFuture<()>
    where
        Q: Clone + Send + 'static,
        F: Fn(M2mClient<Channel>, Request<Q>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Response<pb::NoticeResponse>, Status>> + Send + 'static,
    {
        let calls: Vec<_> = self
            .clients
            .keys()
            .map(|node| (node.clone(), self.call(node, self.timeout, message.clone(), rpc.clone())))
            .collect();
        Box::pin(async move {
            let mut set = tokio::task::JoinSet::new();
            for (node, call) in calls {
                set.spawn(async move { (node, call.await) });
            }
            while let Some(joined) = set.join_next().await {
                if let Ok((node, Err(e))) = joined {
                    tracing::warn!(%node, error = %e, "peer not notified; its cached decisions expire with their TTL");
                }
            }
        })
    }
}

/// A status from a peer (or from the transport) as a [`RemoteError`]: the peer was not
/// reached, or it answered with an error.
fn remote_error(node: NodeId, status: &Status) -> RemoteError {
    let mut cause = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let text = s.to_string();
        if !cause.contains(&text) {
            cause = format!("{cause}: {text}");
        }
        source = s.source();
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            RemoteError::Unreachable { node, cause }
        }
        code => RemoteError::Refused { node, cause: format!("{code:?}: {cause}") },
    }
}

fn refused(node: &NodeId, cause: impl Into<String>) -> RemoteError {
    RemoteError::Refused { node: node.clone(), cause: cause.into() }
}

fn decode_denial(node: &NodeId, d: p2m_pb::Denial) -> Result<Denial, RemoteError> {
    Denial::try_from(d).map_err(|e| refused(node, format!("malformed denial: {e}")))
}

impl Federation for Peers {
    fn reserve_destination(
        &self,
        node: &NodeId,
        question: ReserveQuestion,
    ) -> BoxFuture<Result<Result<Policy, Denial>, RemoteError>> {
        let message = pb::ReserveRequest {
            caller: self.node.to_string(),
            token: question.token.0,
            destination: question.destination.to_string(),
            writer: question.writer.to_string(),
            provenance: question.provenance.iter().map(ToString::to_string).collect(),
        };
        let call = self.call(node, self.timeout, message, |mut c, r| async move { c.reserve_destination(r).await });
        let node = node.clone();
        Box::pin(async move {
            match call.await?.result {
                Some(pb::reserve_response::Result::Policy(p)) => {
                    Policy::try_from(p).map(Ok).map_err(|e| refused(&node, format!("malformed policy: {e}")))
                }
                Some(pb::reserve_response::Result::Denial(d)) => decode_denial(&node, d).map(Err),
                None => Err(refused(&node, "empty answer to ReserveDestination")),
            }
        })
    }

    fn release_destination(&self, node: &NodeId, token: RemoteToken) -> BoxFuture<Result<(), RemoteError>> {
        let message = pb::ReleaseRequest { caller: self.node.to_string(), token: token.0 };
        let call = self.call(node, self.timeout, message, |mut c, r| async move { c.release_destination(r).await });
        Box::pin(async move { call.await.map(drop) })
    }

    fn update_provenance(
        &self,
        node: &NodeId,
        token: RemoteToken,
        performed: bool,
        bytes: u64,
    ) -> BoxFuture<Result<(), RemoteError>> {
        let message = pb::UpdateRequest { caller: self.node.to_string(), token: token.0, performed, bytes };
        let call = self.call(node, self.timeout, message, |mut c, r| async move { c.update_provenance(r).await });
        Box::pin(async move { call.await.map(drop) })
    }

    fn check_sources(
        &self,
        node: &NodeId,
        question: SourcesQuestion,
    ) -> BoxFuture<Result<Option<Denial>, RemoteError>> {
        let message = pb::CheckRequest {
            caller: self.node.to_string(),
            sources: question.sources.iter().map(ToString::to_string).collect(),
            destination: question.target.resource.to_string(),
            external_peer: question.target.external_peer.map(|p| p.to_string()).unwrap_or_default(),
            destination_policy: Some(question.target.policy.into()),
        };
        let call = self.call(node, self.check_timeout, message, |mut c, r| async move { c.check_sources(r).await });
        let node = node.clone();
        Box::pin(async move {
            match call.await?.result {
                Some(pb::check_response::Result::Granted(true)) => Ok(None),
                Some(pb::check_response::Result::Denial(d)) => decode_denial(&node, d).map(Some),
                _ => Err(refused(&node, "empty answer to CheckSources")),
            }
        })
    }

    fn broadcast_deletion(&self, resource: LocalizedResource) -> BoxFuture<()> {
        let message = pb::DeletionNotice { caller: self.node.to_string(), resource: resource.to_string() };
        self.notify_all(message, |mut c, r| async move { c.broadcast_deletion(r).await })
    }

    fn policy_changed(&self) -> BoxFuture<()> {
        let message = pb::PolicyNotice { caller: self.node.to_string() };
        self.notify_all(message, |mut c, r| async move { c.policy_changed(r).await })
    }
}

/// The M2M gRPC service: peers' questions, answered by the engine.
#[derive(Debug, Clone)]
pub struct M2mService {
    engine: Arc<Engine>,
    /// Callers connect over mutual TLS: each must present a certificate naming the node
    /// its requests claim to be.
    tls: bool,
}

/// The M2M gRPC server, with the message size limits applied; `tls` says whether it is
/// served over mutual TLS (then a caller's certificate must name the caller).
pub fn server(engine: Arc<Engine>, tls: bool) -> M2mServer<M2mService> {
    M2mServer::new(M2mService { engine, tls })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn invalid(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

fn parse<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, Status>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| invalid(field, e))
}

/// An engine failure as this service's status ([`crate::status::engine_status`]).
pub(crate) fn engine_status(e: EngineError) -> Status {
    crate::status::engine_status(&e)
}

impl M2mService {
    /// The calling node: named in the message, a configured peer, calling from one of
    /// its addresses.
    fn caller<T>(&self, request: &Request<T>, name: &str) -> Result<NodeId, Status> {
        let node: NodeId = parse("caller", name)?;
        let topology = self.engine.topology();
        let Some(peer) = topology.peers.iter().find(|p| p.node == node) else {
            return Err(Status::permission_denied(format!(
                "node {node} is not a configured peer of {}",
                topology.node
            )));
        };
        if let Some(addr) = request.remote_addr() {
            let ip: IpAddr = addr.ip().to_canonical();
            if !peer.addresses.iter().any(|a| a.to_canonical() == ip) {
                return Err(Status::permission_denied(format!(
                    "a call from {ip} cannot be node {node}'s: it is not one of its addresses"
                )));
            }
        }
        if self.tls {
            let names = request.peer_certs().map(|certs| certificate_names(&certs)).unwrap_or_default();
            if !names.iter().any(|n| n == node.as_str()) {
                tracing::warn!(claimed = %node, certificate_names = ?names, "M2M caller's certificate does not name the node it claims to be; refused");
                return Err(Status::permission_denied(format!(
                    "a caller claiming to be node {node} must present a certificate naming it (DNS name {node}); its certificate names {names:?}"
                )));
            }
        }
        Ok(node)
    }
}

/// The DNS names (subject alternative names) of the leaf certificate, the first of
/// `certs`; empty when it cannot be parsed (a caller is then refused, never trusted).
fn certificate_names(certs: &[tonic::transport::CertificateDer<'static>]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Some(leaf) = certs.first() else { return Vec::new() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl M2m for M2mService {
    async fn reserve_destination(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().caller)?;
        let msg = request.into_inner();
        let side: Resource = parse("destination", &msg.destination)?;
        let writer: LocalizedResource = parse("writer", &msg.writer)?;
        let provenance = msg
            .provenance
            .iter()
            .map(|r| parse::<LocalizedResource>("provenance", r))
            .collect::<Result<Vec<_>, _>>()?;
        let result = match self.engine.remote_reserve(&caller, RemoteToken(msg.token), side, writer, provenance).await {
            Ok(Ok(policy)) => pb::reserve_response::Result::Policy(policy.into()),
            Ok(Err(denial)) => pb::reserve_response::Result::Denial((&denial).into()),
            Err(e) => return Err(engine_status(e)),
        };
        Ok(Response::new(pb::ReserveResponse { result: Some(result) }))
    }

    async fn release_destination(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().caller)?;
        self.engine.remote_release(&caller, RemoteToken(request.get_ref().token)).map_err(engine_status)?;
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn update_provenance(
        &self,
        request: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().caller)?;
        let msg = request.into_inner();
        self.engine.remote_update(&caller, RemoteToken(msg.token), msg.performed, msg.bytes).map_err(engine_status)?;
        Ok(Response::new(pb::UpdateResponse {}))
    }

    async fn check_sources(&self, request: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().caller)?;
        let msg = request.into_inner();
        let sources =
            msg.sources.iter().map(|r| parse::<LocalizedResource>("sources", r)).collect::<Result<Vec<_>, _>>()?;
        let resource: LocalizedResource = parse("destination", &msg.destination)?;
        let external_peer = match msg.external_peer.as_str() {
            "" => None,
            text => Some(parse::<SocketAddr>("external_peer", text)?),
        };
        let policy = msg.destination_policy.ok_or_else(|| invalid("destination_policy", "missing"))?;
        let policy = Policy::try_from(policy).map_err(|e| invalid("destination_policy", e))?;
        let target = RemoteTarget { resource, external_peer, policy };
        let result = match self.engine.check_sources(&caller, sources, target).await.map_err(engine_status)? {
            None => pb::check_response::Result::Granted(true),
            Some(denial) => pb::check_response::Result::Denial((&denial).into()),
        };
        Ok(Response::new(pb::CheckResponse { result: Some(result) }))
    }

    async fn broadcast_deletion(
        &self,
        request: Request<pb::DeletionNotice>,
    ) -> Result<Response<pb::NoticeResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().caller)?;
        let resource: LocalizedResource = parse("resource", &request.get_ref().resource)?;
        self.engine.remote_deleted(&caller, &resource).map_err(engine_status)?;
        Ok(Response::new(pb::NoticeResponse {}))
    }

    async fn policy_changed(&self, request: Request<pb::PolicyNotice>) -> Result<Response<pb::NoticeResponse>, Status> {
        let caller = self.caller(&request, &request.get_ref().caller)?;
        self.engine.peer_changed(&caller).map_err(engine_status)?;
        Ok(Response::new(pb::NoticeResponse {}))
    }
}

/// The federation of a daemon configured with `config`: [`Peers`] when it serves M2M,
/// none otherwise. Must be called inside a tokio runtime.
pub fn client(
    node: &NodeId,
    config: &FederationConfig,
    tls: Option<&Tls>,
    consent_timeout: Duration,
) -> Result<Option<Peers>, FederationError> {
    match config.listen {
        None => Ok(None),
        Some(_) => Peers::new(node.clone(), config, tls, consent_timeout).map(Some),
    }
}

/// Serves M2M on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    let with_tls = tls.is_some();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.server())?;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    builder.add_service(server(engine, with_tls)).serve_with_incoming_shutdown(incoming, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::topology::Topology;

    fn service() -> M2mService {
        let node = |n: &str| NodeId::new(n).unwrap();
        let topology = Topology::new(node("node-a"), vec!["10.0.0.1".parse().unwrap()])
            .with_peer(node("node-b"), vec!["10.0.0.2".parse().unwrap()]);
        M2mService { engine: Arc::new(Engine::new(EngineConfig::new(topology))), tls: false }
    }

    fn code<T: std::fmt::Debug>(r: Result<Response<T>, Status>) -> Code {
        r.expect_err("expected an error status").code()
    }

    #[tokio::test]
    async fn malformed_or_unexpected_messages_get_statuses() {
        let s = service();
        let reserve = |caller: &str, destination: &str, writer: &str| {
            Request::new(pb::ReserveRequest {
                caller: caller.into(),
                token: 1,
                destination: destination.into(),
                writer: writer.into(),
                provenance: vec![],
            })
        };
        let side = "tcp://10.0.0.1:80/10.0.0.2:4000";
        let writer = "process://1.1@node-b";
        assert_eq!(code(s.reserve_destination(reserve("node b", side, writer)).await), Code::InvalidArgument);
        assert_eq!(code(s.reserve_destination(reserve("node-z", side, writer)).await), Code::PermissionDenied);
        assert_eq!(code(s.reserve_destination(reserve("node-b", "tcp://nope", writer)).await), Code::InvalidArgument);
        assert_eq!(code(s.reserve_destination(reserve("node-b", side, "process://1.1")).await), Code::InvalidArgument);
        let wrong_side = "tcp://10.0.0.9:80/10.0.0.2:4000";
        assert_eq!(code(s.reserve_destination(reserve("node-b", wrong_side, writer)).await), Code::InvalidArgument);
        let release = pb::ReleaseRequest { caller: "node-b".into(), token: 42 };
        assert_eq!(code(s.release_destination(Request::new(release)).await), Code::NotFound);
        let update = pb::UpdateRequest { caller: "node-b".into(), token: 42, performed: true, bytes: 1 };
        assert_eq!(code(s.update_provenance(Request::new(update)).await), Code::NotFound);
        let check = |sources: Vec<String>, policy: Option<trace2e_proto::pb::o2m::Policy>| {
            Request::new(pb::CheckRequest {
                caller: "node-b".into(),
                sources,
                destination: "file:///d@node-b".into(),
                external_peer: String::new(),
                destination_policy: policy,
            })
        };
        let policy = Some(Policy::default().into());
        assert_eq!(code(s.check_sources(check(vec!["file:///x@node-a".into()], None)).await), Code::InvalidArgument);
        let bad_enum = Some(trace2e_proto::pb::o2m::Policy { confidentiality: 99, ..Default::default() });
        assert_eq!(
            code(s.check_sources(check(vec!["file:///x@node-a".into()], bad_enum)).await),
            Code::InvalidArgument
        );
        assert_eq!(code(s.check_sources(check(vec!["file:///x@node-b".into()], policy)).await), Code::InvalidArgument);
        let granted = s.check_sources(check(vec!["file:///x@node-a".into()], policy)).await.unwrap().into_inner();
        assert_eq!(granted.result, Some(pb::check_response::Result::Granted(true)));
        let deletion = pb::DeletionNotice { caller: "node-b".into(), resource: "file:///x@node-a".into() };
        assert_eq!(code(s.broadcast_deletion(Request::new(deletion)).await), Code::InvalidArgument);
        let notice = pb::PolicyNotice { caller: "node-c".into() };
        assert_eq!(code(s.policy_changed(Request::new(notice)).await), Code::PermissionDenied);

        // A reservation, then its update: the provenance sent with it is merged.
        let mut r = reserve("node-b", side, writer);
        r.get_mut().provenance = vec!["file:///src@node-b".into()];
        let answer = s.reserve_destination(r).await.unwrap().into_inner();
        assert!(matches!(answer.result, Some(pb::reserve_response::Result::Policy(_))));
        assert_eq!(code(s.reserve_destination(reserve("node-b", side, writer)).await), Code::AlreadyExists);
        let update = pb::UpdateRequest { caller: "node-b".into(), token: 1, performed: true, bytes: 3 };
        s.update_provenance(Request::new(update)).await.unwrap();
        let prov = s.engine.provenance(&side.parse().unwrap());
        assert_eq!(prov.iter().map(ToString::to_string).collect::<Vec<_>>(), [writer, "file:///src@node-b"]);
        assert!(s.engine.reservations_idle());
    }

    #[tokio::test]
    async fn an_unreachable_peer_is_a_prompt_error_naming_it() {
        // Nothing listens on port 1 of 127.0.0.1.
        let config = FederationConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            peers: vec![PeerEndpoint {
                node: NodeId::new("node-b").unwrap(),
                endpoint: "127.0.0.1:1".parse().unwrap(),
            }],
            timeout: Duration::from_millis(500),
            tls: None,
        };
        let peers = Peers::new(NodeId::new("node-a").unwrap(), &config, None, Duration::from_millis(500)).unwrap();
        let e = peers.release_destination(&NodeId::new("node-b").unwrap(), RemoteToken(1)).await.unwrap_err();
        assert!(matches!(&e, RemoteError::Unreachable { node, .. } if node.as_str() == "node-b"), "{e}");
        let e = peers.release_destination(&NodeId::new("node-z").unwrap(), RemoteToken(1)).await.unwrap_err();
        assert!(matches!(e, RemoteError::NotAPeer(_)));
        peers.policy_changed().await;
    }
}
