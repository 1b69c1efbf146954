//! Cells' subnet leases (db layer) against both backends, a real etcd process and
//! the embedded store: no two cells overlap, a cell keeps its subnet across a BBS
//! restart, an exhausted network and a lease held by a live cell elsewhere are
//! refused with their error names, and nothing is written for a refused request.

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::db::{ClusterNetwork, Db};
use lattice_bbs::store::Store;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::{CellCapacity, CellPresence};
use lattice_specs::subnets::SubnetPlan;

fn network(net: &str, prefix: u8) -> ClusterNetwork {
    ClusterNetwork {
        plan: SubnetPlan::new(net.parse().unwrap(), prefix).unwrap(),
        ..Default::default()
    }
}

/// Cell `id` present under a fresh lease: the lease.
async fn present(db: &Db, id: &str) -> i64 {
    let lease = db.grant_lease(Duration::from_secs(30)).await.unwrap();
    let cell = CellPresence {
        cell_id: id.into(),
        rep_address: "127.0.0.1:1800".into(),
        capacity: Some(CellCapacity::default()),
        ..Default::default()
    };
    db.set_cell_presence(&cell, lease).await.unwrap();
    lease
}

async fn cells_get_distinct_subnets_and_keep_them_across_a_restart(store: Arc<dyn Store>) {
    let db = Db::new(store.clone());
    let mut got = vec![];
    for (cell, addr) in [("a", "192.168.9.1"), ("b", "192.168.9.2"), ("c", "")] {
        got.push(db.lease_cell_subnet(cell, addr).await.unwrap().subnet);
    }
    assert_eq!(got, ["10.255.0.0/24", "10.255.1.0/24", "10.255.2.0/24"]);
    // The BBS restarts: a new database over the same store.
    let db = Db::new(store);
    present(&db, "b").await;
    let again = db.lease_cell_subnet("b", "192.168.9.2").await.unwrap();
    assert_eq!(again.subnet, "10.255.1.0/24");
    assert_eq!(db.subnet_leases().await.unwrap().len(), 3);
    // A new cell after them.
    let d = db.lease_cell_subnet("d", "192.168.9.4").await.unwrap();
    assert_eq!(d.subnet, "10.255.3.0/24");
}

async fn an_exhausted_network_is_refused_and_nothing_is_written(store: Arc<dyn Store>) {
    let db = Db::new(store).with_network(network("10.9.0.0/23", 24));
    db.lease_cell_subnet("a", "").await.unwrap();
    db.lease_cell_subnet("b", "").await.unwrap();
    let err = db.lease_cell_subnet("c", "").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::SubnetsExhausted);
    assert!(err.to_string().contains("10.9.0.0/23"), "{err}");
    let leases = db.subnet_leases().await.unwrap();
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.cell_id != "c"));
    // The cells that have one still get it.
    assert_eq!(
        db.lease_cell_subnet("a", "").await.unwrap().subnet,
        "10.9.0.0/24"
    );
}

async fn a_lease_held_by_a_live_cell_elsewhere_is_refused(store: Arc<dyn Store>) {
    let db = Db::new(store);
    let first = db.lease_cell_subnet("a", "192.168.9.1").await.unwrap();
    let presence = present(&db, "a").await;
    let err = db.lease_cell_subnet("a", "192.168.9.7").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::SubnetLeaseHeld);
    let text = err.to_string();
    assert!(
        text.contains("192.168.9.1") && text.contains("192.168.9.7"),
        "{text}"
    );
    assert_eq!(
        db.subnet_leases().await.unwrap()[0].overlay_address,
        "192.168.9.1",
        "the refused request changed nothing"
    );
    // Once that cell is gone, the same id on the new address gets the same subnet.
    db.revoke_lease(presence).await.unwrap();
    let moved = db.lease_cell_subnet("a", "192.168.9.7").await.unwrap();
    assert_eq!(moved.subnet, first.subnet);
    assert_eq!(
        db.subnet_leases().await.unwrap()[0].overlay_address,
        "192.168.9.7"
    );
}

async fn bad_requests_name_their_field(store: Arc<dyn Store>) {
    let db = Db::new(store);
    for (cell, addr, field) in [("", "", "cell_id"), ("a", "not-an-ip", "overlay_address")] {
        let err = db.lease_cell_subnet(cell, addr).await.unwrap_err();
        assert_eq!(err.name(), ErrorName::InvalidRequest);
        assert!(err.to_string().contains(field), "{err}");
    }
    assert!(db.subnet_leases().await.unwrap().is_empty());
}

async fn racing_cells_never_share_a_subnet(store: Arc<dyn Store>) {
    let db = Db::new(store);
    let leases = futures::future::join_all((0..8).map(|i| {
        let db = db.clone();
        async move {
            db.lease_cell_subnet(&format!("cell-{i}"), "")
                .await
                .unwrap()
        }
    }))
    .await;
    let mut subnets: Vec<String> = leases.into_iter().map(|l| l.subnet).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 8, "{subnets:?}");
}

/// Over gRPC, from a BBS started with its own network settings: the answer carries
/// them, and a refusal its error name.
#[tokio::test]
async fn the_grpc_call_answers_with_the_cluster_network() {
    use lattice_bbs::server::{self, BbsConfig, StoreUrl};
    use lattice_specs::bbs_api::bbs_client::BbsClient;
    use lattice_specs::bbs_api::LeaseCellSubnetRequest;
    use lattice_specs::models::SecurityGroupRule;

    let dir = tempfile::tempdir().unwrap();
    let deny_metadata = SecurityGroupRule {
        protocol: "all".into(),
        destinations: vec!["0.0.0.0-169.254.169.253".into()],
        ..Default::default()
    };
    let cfg = BbsConfig {
        network: ClusterNetwork {
            internal_domain: "apps.example".into(),
            default_egress: vec![deny_metadata.clone()],
            ..network("10.7.0.0/23", 24)
        },
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    let bbs = server::start(cfg).await.unwrap();
    let mut client = BbsClient::connect(format!("http://{}", bbs.grpc_addr))
        .await
        .unwrap();
    let lease = |cell: &str| LeaseCellSubnetRequest {
        cell_id: cell.into(),
        overlay_address: "192.168.3.4".into(),
    };
    let a = client
        .lease_cell_subnet(lease("a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.subnet, "10.7.0.0/24");
    assert_eq!(a.container_network, "10.7.0.0/23");
    assert_eq!(a.internal_domain, "apps.example");
    assert_eq!(a.default_egress_rules, [deny_metadata]);
    client.lease_cell_subnet(lease("b")).await.unwrap();
    let refused = client.lease_cell_subnet(lease("c")).await.unwrap_err();
    assert_eq!(
        lattice_bbs::grpc::error_name(&refused),
        Some(ErrorName::SubnetsExhausted)
    );
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    bbs.shutdown().await;
}

lattice_bbs::both_stores!(|store| store;
    cells_get_distinct_subnets_and_keep_them_across_a_restart,
    an_exhausted_network_is_refused_and_nothing_is_written,
    a_lease_held_by_a_live_cell_elsewhere_is_refused,
    bad_requests_name_their_field,
    racing_cells_never_share_a_subnet);

mod embedded {
    use super::*;
    use lattice_bbs::store::embedded::EmbeddedStore;

    /// The embedded store's file reopened (the BBS process restarted): the leases
    /// are still there.
    #[tokio::test]
    async fn leases_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbs.db");
        let first = {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            let db = Db::new(store);
            db.lease_cell_subnet("x", "").await.unwrap();
            db.lease_cell_subnet("a", "10.0.0.1").await.unwrap().subnet
        };
        // The writer thread holds the file until its channel closes; wait for it.
        let store = loop {
            match EmbeddedStore::open(&path) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let db = Db::new(Arc::new(store));
        let again = db.lease_cell_subnet("a", "10.0.0.1").await.unwrap();
        assert_eq!(again.subnet, first);
        assert_eq!(first, "10.255.1.0/24");
    }
}
