//! Authorization by identity over real mutual TLS on loopback: the BBS's gRPC
//! service behind `lattice_tls`'s listener (client certificates required) and
//! identity interceptor, called by clients presenting certificates the test's CA
//! issued. A cell certificate claiming another cell's work and a cell asking for
//! the brain lock are refused (`PermissionDenied`, `Forbidden`, the refusal's
//! words); the same calls as the right identity go through.

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::db::Db;
use lattice_bbs::events::EventHub;
use lattice_bbs::grpc::{error_name, BbsGrpc};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::store::Store;
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::*;
use lattice_specs::errors::ErrorName;
use lattice_specs::testing::{desired_lrp, instance_key};
use lattice_tls::ca::Ca;
use lattice_tls::client::{lazy_channel, ClientTls};
use lattice_tls::server::{identity_interceptor, Listener};
use lattice_tls::{ClientAuth, Identity, NodeTls, Role};
use tonic::transport::Channel;
use tonic::Code;

fn node(ca: &Ca, role: Role, name: &str) -> NodeTls {
    let who = Identity::new(role, name).unwrap();
    ca.issue_node(&who, &[], Duration::from_secs(3600)).unwrap()
}

/// The BBS served over mutual TLS on loopback, and a client for `role NAME`.
struct Served {
    ca: Ca,
    addr: std::net::SocketAddr,
    db: Db,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("bbs.db")).unwrap());
        let db = Db::new(store.clone());
        let svc = BbsGrpc::new(db.clone(), EventHub::start(store).await).into_server();
        let ca = Ca::generate().unwrap();
        let tls = node(&ca, Role::Bbs, "bbs")
            .server_config(ClientAuth::Required)
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = Listener::new(tcp, Some(tls)).unwrap();
        let addr = listener.local_addr();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(identity_interceptor))
                .add_service(svc)
                .serve_with_incoming(listener.into_incoming())
                .await
        });
        Served {
            ca,
            addr,
            db,
            _dir: dir,
        }
    }

    fn client(&self, role: Role, name: &str) -> BbsClient<Channel> {
        let bbs = Identity::new(Role::Bbs, "bbs").unwrap();
        let tls = ClientTls::new(&node(&self.ca, role, name), bbs).unwrap();
        let channel = lazy_channel(&self.addr.to_string(), Some(&tls), |e| e).unwrap();
        BbsClient::new(channel)
    }
}

fn claim(cell: &str) -> ClaimActualLrpRequest {
    ClaimActualLrpRequest {
        generation: 0,
        key: Some(ActualLrpRef {
            process_guid: "web".into(),
            index: 0,
        }),
        instance_key: Some(instance_key("i-1", cell)),
    }
}

fn refused(s: tonic::Status, says: &str) {
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(error_name(&s), Some(ErrorName::Forbidden), "{s:?}");
    assert!(
        s.message().contains(says),
        "{:?} lacks {says:?}",
        s.message()
    );
}

#[tokio::test]
async fn over_mutual_tls_a_cell_claims_only_its_own_work_and_only_a_brain_locks() {
    let bbs = Served::start().await;
    bbs.db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    let mut cell_a = bbs.client(Role::Cell, "cell-a");

    let s = cell_a.claim_actual_lrp(claim("cell-b")).await.unwrap_err();
    refused(
        s,
        "the certificate of cell cell-a may not claim work (ClaimActualLRP) for cell cell-b: a cell acts only as itself",
    );
    let l = cell_a
        .claim_actual_lrp(claim("cell-a"))
        .await
        .unwrap()
        .into_inner()
        .actual_lrp
        .unwrap();
    assert_eq!(l.instance_key.unwrap().cell_id, "cell-a");

    let lease = cell_a
        .grant_lease(GrantLeaseRequest { ttl_seconds: 30 })
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let lock = |owner: &str, lease_id| AcquireLockRequest {
        key: "brain".into(),
        owner: owner.into(),
        lease_id,
    };
    let s = cell_a
        .acquire_lock(lock("cell-a", lease))
        .await
        .unwrap_err();
    refused(
        s,
        "may not hold the brain lock (AcquireLock): only a brain may",
    );

    let mut brain = bbs.client(Role::Brain, "brain-1");
    let s = brain
        .revoke_lease(LeaseRequest { lease_id: lease })
        .await
        .unwrap_err();
    refused(s, "held by cell cell-a");
    let brains = brain
        .grant_lease(GrantLeaseRequest { ttl_seconds: 30 })
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let got = brain
        .acquire_lock(lock("brain-1", brains))
        .await
        .unwrap()
        .into_inner();
    assert!(got.acquired && got.owner == "brain-1", "{got:?}");

    // The router reads, and writes nothing.
    let mut router = bbs.client(Role::Router, "router-1");
    let lrps = router
        .desired_lr_ps(DesiredLrPsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lrps.desired_lrps.len(), 1);
    let s = router
        .remove_desired_lrp(ProcessGuidRequest {
            process_guid: "web".into(),
        })
        .await
        .unwrap_err();
    refused(
        s,
        "router router-1 may not remove a desired LRP (RemoveDesiredLRP)",
    );
}
