//! The store contract against a real etcd process and the embedded store.

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::store::etcd::EtcdStore;
use lattice_bbs::store::Store;
use lattice_bbs::testing::EtcdServer;

mod etcd {
    use super::*;
    lattice_bbs::store_contract_tests!({
        let etcd = EtcdServer::start();
        let s = EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(3))
            .await
            .unwrap();
        (Arc::new(s) as Arc<dyn Store>, etcd)
    });
}

mod embedded {
    use super::*;
    lattice_bbs::store_contract_tests!({
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path().join("bbs.db")).unwrap();
        (Arc::new(s) as Arc<dyn Store>, dir)
    });
}

#[tokio::test]
async fn embedded_store_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bbs.db");
    let (rev, lease) = {
        let s = EmbeddedStore::open(&path).unwrap();
        let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        s.txn(
            lattice_bbs::store::Txn::new().then(lattice_bbs::store::Op::put("/k", b"v".to_vec())),
        )
        .await
        .unwrap();
        let r = s
            .txn(
                lattice_bbs::store::Txn::new().then(lattice_bbs::store::Op::Put {
                    key: "/leased".into(),
                    value: b"l".to_vec(),
                    lease,
                }),
            )
            .await
            .unwrap();
        (r.revision, lease)
    };
    // The writer thread holds the file until its channel closes; wait for it.
    let s = loop {
        match EmbeddedStore::open(&path) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(s.revision().await.unwrap(), rev);
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v");
    assert_eq!(s.get("/leased").await.unwrap().unwrap().lease, lease);
    assert!(
        s.keep_alive(lease).await.unwrap() > 0,
        "leases survive a restart with a fresh TTL"
    );
    let next = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert!(next > lease, "lease ids are never reused");
}
