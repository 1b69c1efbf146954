//! The BBS over mutual TLS on real loopback sockets: its gRPC API answers a client
//! with a certificate from the cluster CA and refuses plaintext and strangers; its
//! HTTP client to the reps (logs, usage) trusts only a cell's certificate.

use std::time::Duration;

use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::Empty;
use lattice_specs::identity::{Identity, Role};
use lattice_tls::ca::Ca;
use lattice_tls::client::{lazy_channel, ClientTls};
use lattice_tls::{ClientAuth, NodeTls};

fn node(ca: &Ca, trusted: &Ca, role: Role, name: &str) -> NodeTls {
    let id = Identity::new(role, name).unwrap();
    let k = ca
        .issue_new_key(&id, &[], Duration::from_secs(3600))
        .unwrap();
    NodeTls::from_pem(
        k.cert.cert_pem.as_bytes(),
        k.key_pem.as_bytes(),
        trusted.cert_pem().as_bytes(),
    )
    .unwrap()
}

async fn cells(addr: &str, tls: Option<&ClientTls>) -> Result<usize, tonic::Status> {
    let ch = lazy_channel(addr, tls, |e| e.timeout(Duration::from_secs(5))).unwrap();
    Ok(BbsClient::new(ch)
        .cells(Empty {})
        .await?
        .into_inner()
        .cells
        .len())
}

/// A call that never reached the service: the connection was refused or cut.
fn refused(e: &tonic::Status) -> bool {
    matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        && e.message().contains("transport error")
}

#[tokio::test]
async fn the_bbs_grpc_api_takes_only_clients_with_the_cas_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    let bbs = server::start(BbsConfig {
        tls: Some(node(&ca, &ca, Role::Bbs, "bbs")),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    let addr = bbs.grpc_addr.to_string();
    let cell = node(&ca, &ca, Role::Cell, "cell-a");
    let to_bbs = ClientTls::new(&cell, lattice_tls::bbs_identity()).unwrap();
    assert_eq!(cells(&addr, Some(&to_bbs)).await.unwrap(), 0);

    let e = cells(&addr, None).await.unwrap_err();
    assert!(refused(&e), "plaintext: {e:?}");

    let other = Ca::generate().unwrap();
    let stranger = node(&other, &ca, Role::Cell, "cell-a");
    let e = cells(
        &addr,
        Some(&ClientTls::new(&stranger, lattice_tls::bbs_identity()).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(refused(&e), "another CA: {e:?}");

    // A client expecting someone else at the BBS's address refuses to talk.
    let e = cells(
        &addr,
        Some(&to_bbs.for_server(Identity::new(Role::Cell, "x").unwrap())),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:?}").contains("not valid for name"), "{e:?}");
    bbs.shutdown().await;
}

#[tokio::test]
async fn a_bbs_accepting_joiners_lets_certificateless_clients_connect() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    let bbs = server::start(BbsConfig {
        tls: Some(node(&ca, &ca, Role::Bbs, "bbs")),
        grpc_client_auth: ClientAuth::Optional,
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    let cell = node(&ca, &ca, Role::Cell, "cell-a");
    let to_bbs = ClientTls::new(&cell, lattice_tls::bbs_identity()).unwrap();
    assert!(cells(&bbs.grpc_addr.to_string(), Some(&to_bbs))
        .await
        .is_ok());
    bbs.shutdown().await;
}

/// The HTTP client the BBS asks reps with: a cell's certificate from the CA is
/// trusted whatever address it was reached at; a brain's, or another CA's, is not.
#[tokio::test]
async fn the_bbs_asks_only_cells_over_https() {
    let ca = Ca::generate().unwrap();
    let bbs_tls = node(&ca, &ca, Role::Bbs, "bbs");
    let client = server::cell_http_client(Some(&bbs_tls)).unwrap();
    let serve = |server: NodeTls| async move {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = server.server_config(ClientAuth::Required).unwrap();
        let l = lattice_tls::server::Listener::new(tcp, Some(cfg)).unwrap();
        let addr = l.local_addr();
        let app = lattice_tls::server::with_identity(axum::Router::new().route(
            "/v1/containers",
            axum::routing::get(|id: axum::Extension<Identity>| async move { id.0.dns_name() }),
        ))
        .into_make_service_with_connect_info::<lattice_tls::PeerInfo>();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("https://{addr}/v1/containers")
    };
    let cell_url = serve(node(&ca, &ca, Role::Cell, "cell-a")).await;
    let got = client
        .get(&cell_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(got, "bbs.bbs.lattice", "the rep saw the BBS's identity");

    let brain_url = serve(node(&ca, &ca, Role::Brain, "b")).await;
    let e = client.get(&brain_url).send().await.unwrap_err();
    assert!(format!("{e:?}").contains("not a cell"), "{e:?}");
    let other = Ca::generate().unwrap();
    let stranger_url = serve(node(&other, &ca, Role::Cell, "cell-a")).await;
    assert!(client.get(&stranger_url).send().await.is_err());
}
