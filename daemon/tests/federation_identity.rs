//! Federation: with mutual TLS, a node's certificate binds it to its name. A holder of a
//! CA-signed certificate for another name (`mallory`) cannot speak for `node-a`, even
//! from node-a's own address; node-a's own certificate is accepted.

mod support;

use std::net::SocketAddr;

use support::cluster::*;
use support::*;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use trace2e_proto::pb::m2m::{self as pb, m2m_client::M2mClient};

/// A client of node-b's M2M service presenting `cert_name`'s certificate, connecting from
/// node-a's address (so the address check passes and only the certificate is judged).
async fn client(
    dir: &std::path::Path,
    cert_name: &str,
    from: &str,
    to: SocketAddr,
) -> M2mClient<tonic::transport::Channel> {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .domain_name("node-b")
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read(&format!("{cert_name}.pem")), read(&format!("{cert_name}.key"))));
    let channel = Endpoint::from_shared(format!("https://{to}"))
        .unwrap()
        .local_address(Some(from.parse().unwrap()))
        .connect_timeout(PATIENCE)
        .timeout(PATIENCE)
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{cert_name}'s client cannot connect to node-b: {e:?}"));
    M2mClient::new(channel)
}

#[test]
fn a_certificate_for_another_name_cannot_speak_for_a_node() {
    let certs = make_certificates(&["node-a", "node-b", "mallory"]);
    let dir = certs.path().to_owned();
    let cluster = Cluster::start_with(&NODES[..2], &[], |name| tls_flags(&dir, name));
    let (from, to) = (cluster.ip("node-a").to_owned(), cluster.m2m_endpoint("node-b"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // mallory's certificate is signed by the same CA, so the TLS handshake succeeds;
        // each request claiming node-a must then be refused.
        let mut mallory = client(&dir, "mallory", &from, to).await;
        let reserve = pb::ReserveRequest {
            caller: "node-a".into(),
            token: 7,
            destination: format!("tcp://{}:4000/{from}:5000", cluster.ip("node-b")),
            writer: "process://1.1@node-a".into(),
            provenance: vec![],
        };
        let refused = mallory.reserve_destination(reserve).await.expect_err("mallory reserved as node-a");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("mallory"), "the refusal names the certificate's name: {refused:?}");
        let update = pb::UpdateRequest { caller: "node-a".into(), token: 7, performed: true, bytes: 1 };
        let refused = mallory.update_provenance(update).await.expect_err("mallory updated provenance as node-a");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let notice = pb::PolicyNotice { caller: "node-a".into() };
        let refused = mallory.policy_changed(notice).await.expect_err("mallory sent a notice as node-a");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

        // The same requests with node-a's own certificate pass the identity check: the
        // notice is answered, and an update of a token node-b never issued reaches the
        // engine, which does not know it (NotFound, not PermissionDenied).
        let mut alpha = client(&dir, "node-a", &from, to).await;
        alpha.policy_changed(pb::PolicyNotice { caller: "node-a".into() }).await.expect("node-a's notice refused");
        let update = pb::UpdateRequest { caller: "node-a".into(), token: 7, performed: true, bytes: 1 };
        let unknown = alpha.update_provenance(update).await.expect_err("an update of an unknown token succeeded");
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    });
    // node-b logged each refusal with the claim and the certificate's names.
    let log = cluster.daemon("node-b").log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("does not name the node it claims")).collect();
    assert_eq!(warnings.len(), 3, "{log}");
    assert!(warnings.iter().all(|l| l.contains("node-a") && l.contains("\"mallory\"")), "{warnings:?}");
}
