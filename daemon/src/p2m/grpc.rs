//! P2M over gRPC (tonic on a Unix socket): the measured baseline transport.
//!
//! The caller is the peer of the connection (`SO_PEERCRED` through tonic's
//! `UdsConnectInfo`); errors are mapped to statuses in one place.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use trace2e_proto::pb::p2m::{
    self as pb,
    p2m_server::{P2m, P2mServer},
};
use trace2e_proto::{Direction, Fd, GrantId, IoOutcome, ProcessId};

use super::{Claim, ClaimError, Clients, check_enrollment};
use crate::engine::{Engine, EngineError};
use crate::process::ProcError;

/// Largest P2M message the daemon decodes (a path is at most 4 KiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The P2M gRPC service.
#[derive(Debug, Clone)]
pub struct P2mService {
    engine: Arc<Engine>,
    clients: Arc<Clients>,
}

/// The P2M gRPC server, with the message size limit applied.
pub fn server(engine: Arc<Engine>, clients: Arc<Clients>) -> P2mServer<P2mService> {
    P2mServer::new(P2mService { engine, clients })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl P2mService {
    fn caller<T>(&self, request: &Request<T>) -> Result<ProcessId, Status> {
        let cred = request.extensions().get::<UdsConnectInfo>().and_then(|info| info.peer_cred).ok_or_else(|| {
            Status::unauthenticated("peer credentials unavailable: P2M is served on a Unix socket only")
        })?;
        let pid = cred.pid().filter(|p| *p > 0).ok_or_else(|| Status::unauthenticated("peer has no pid"))?;
        self.clients.identify(pid as u32, cred.uid()).map_err(proc_status)
    }
}

/// An engine failure (not a denial: that is a decision) as this service's status
/// ([`crate::status::engine_status`]).
pub(crate) fn engine_status(e: EngineError) -> Status {
    crate::status::engine_status(&e)
}

fn proc_status(e: ProcError) -> Status {
    match e {
        ProcError::NoSuchProcess { .. } => Status::failed_precondition(e.to_string()),
        ProcError::NoSuchFd { .. } => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn claim_status(e: ClaimError) -> Status {
    match e {
        ClaimError::Mismatch { .. } => Status::permission_denied(e.to_string()),
        ClaimError::Malformed(_) => Status::invalid_argument(e.to_string()),
        ClaimError::Proc(p) => proc_status(p),
    }
}

fn parse_claim(target: Option<pb::enroll_request::Target>) -> Result<Claim, Status> {
    match target {
        Some(pb::enroll_request::Target::File(f)) => {
            let path = PathBuf::from(f.path);
            if !path.is_absolute() {
                return Err(Status::invalid_argument(format!("path {} is not absolute", path.display())));
            }
            Ok(Claim::File(path))
        }
        Some(pb::enroll_request::Target::Stream(s)) => {
            let local =
                s.local.parse().map_err(|_| Status::invalid_argument(format!("bad local address {:?}", s.local)))?;
            let peer =
                s.peer.parse().map_err(|_| Status::invalid_argument(format!("bad peer address {:?}", s.peer)))?;
            Ok(Claim::Stream { local, peer })
        }
        None => Err(Status::invalid_argument("missing enrollment target (file or stream)")),
    }
}

#[tonic::async_trait]
impl P2m for P2mService {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let process = self.caller(&request)?;
        let msg = request.into_inner();
        let fd = Fd(msg.fd);
        let claim = parse_claim(msg.target)?;
        let resource = check_enrollment(process.pid, fd, &claim).map_err(|e| {
            tracing::warn!(%process, %fd, error = %e, "enrollment refused");
            claim_status(e)
        })?;
        let text = resource.to_string();
        self.engine.enroll(process, fd, resource).map_err(engine_status)?;
        Ok(Response::new(pb::EnrollResponse { resource: text }))
    }

    async fn unenroll(&self, request: Request<pb::UnenrollRequest>) -> Result<Response<pb::UnenrollResponse>, Status> {
        let process = self.caller(&request)?;
        let fd = Fd(request.into_inner().fd);
        self.engine.unenroll(process, fd).map_err(engine_status)?;
        Ok(Response::new(pb::UnenrollResponse {}))
    }

    async fn request(&self, request: Request<pb::IoRequest>) -> Result<Response<pb::IoDecision>, Status> {
        let breakdown = &self.engine.config().breakdown;
        let serving = breakdown.start();
        let process = self.caller(&request)?;
        let msg = request.into_inner();
        let direction = Direction::try_from(msg.direction).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let decided = self.engine.request(process, Fd(msg.fd), direction).await;
        breakdown.stop(crate::breakdown::Stage::Answer, serving);
        Ok(Response::new((&decided.map_err(engine_status)?).into()))
    }

    async fn report(&self, request: Request<pb::IoReport>) -> Result<Response<pb::ReportResponse>, Status> {
        let process = self.caller(&request)?;
        let msg = request.into_inner();
        if msg.grant == 0 {
            return Err(Status::invalid_argument("grant id 0 is never issued"));
        }
        let outcome = IoOutcome { ok: msg.ok, bytes: if msg.ok { msg.bytes } else { 0 } };
        self.engine.report(process, GrantId(msg.grant), outcome).map_err(engine_status)?;
        Ok(Response::new(pb::ReportResponse {}))
    }
}
