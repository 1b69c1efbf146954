//! The BBS over mutual TLS on real loopback sockets: its gRPC API answers a client
//! with a certificate from the cluster CA and refuses plaintext and strangers; its
//! HTTP client to the reps (logs, usage) trusts only the certificate of the cell it
//! asks for.

use std::time::Duration;

use std::sync::Arc;

use lattice_bbs::cell_client::{CellClient, RepAddresses};
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

/// Cell ids to rep addresses, as the cells' presences would say.
struct Presences(std::collections::HashMap<String, String>);

impl RepAddresses for Presences {
    fn rep_address(&self, cell_id: &str) -> futures::future::BoxFuture<'static, Option<String>> {
        let found = self.0.get(cell_id).cloned();
        Box::pin(async move { found })
    }
}

/// The HTTP client the BBS asks reps with: it asks a cell by its identity and only
/// that cell's certificate from the CA will do. Another cell's certificate answering
/// at the cell's address (its presence), a brain's, or another CA's, is refused.
#[tokio::test]
async fn the_bbs_asks_exactly_the_cell_it_means_over_https() {
    let ca = Ca::generate().unwrap();
    let bbs_tls = node(&ca, &ca, Role::Bbs, "bbs");
    let serve = |server: NodeTls| async move {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = server.server_config(ClientAuth::Required).unwrap();
        let l = lattice_tls::server::Listener::new(tcp, Some(cfg)).unwrap();
        let addr = l.local_addr();
        let app = lattice_tls::server::with_identity(axum::Router::new().route(
            "/v1/containers",
            axum::routing::get(|id: axum::Extension<Identity>| async move { id.0.dns_name() }),
        ));
        tokio::spawn(lattice_tls::http::serve(
            l,
            app,
            Default::default(),
            std::future::pending(),
        ));
        format!("https://{addr}")
    };
    let a = serve(node(&ca, &ca, Role::Cell, "cell-a")).await;
    let b = serve(node(&ca, &ca, Role::Cell, "cell-b")).await;
    let brain = serve(node(&ca, &ca, Role::Brain, "b")).await;
    let other = Ca::generate().unwrap();
    let stranger = serve(node(&other, &ca, Role::Cell, "cell-d")).await;
    let presences = Presences(
        [
            ("cell-a", &a),
            // Cell B's certificate answers at cell C's address.
            ("cell-c", &b),
            ("cell-brain", &brain),
            ("cell-d", &stranger),
        ]
        .into_iter()
        .map(|(id, addr)| (id.to_string(), addr.clone()))
        .collect(),
    );
    let client = CellClient::new(Some(&bbs_tls), Arc::new(presences)).unwrap();
    let ask = |cell: &str, rep: &str| {
        let url = format!("{}/v1/containers", client.base_url(cell, rep).unwrap());
        let http = client.http().clone();
        async move {
            match http.get(&url).send().await {
                Ok(r) => Ok(r.text().await.unwrap()),
                Err(e) => Err(format!("{e:?}")),
            }
        }
    };
    assert_eq!(
        ask("cell-a", &a).await,
        Ok("bbs.bbs.lattice".into()),
        "the rep saw the BBS's identity"
    );
    let e = ask("cell-c", &b).await.unwrap_err();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "{e}"
    );
    let e = ask("cell-brain", &brain).await.unwrap_err();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "{e}"
    );
    let e = ask("cell-d", &stranger).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    let e = ask("cell-gone", &a).await.unwrap_err();
    assert!(e.contains("no cell cell-gone is present"), "{e}");
}
