//! TCP routes' external ports held by one app, on both stores: a second app asking
//! for a held port is refused (desire, `PUT` of routes, a new generation) and nothing is written; the
//! holder may keep or change its own; a removed app frees its ports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::db::Db;
use lattice_bbs::store::Store;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::{DesiredLrp, DesiredLrpUpdate};
use lattice_specs::routes::TCP_ROUTER_KEY;
use lattice_specs::testing::desired_lrp;

fn tcp(ports: &[(u16, u16)]) -> HashMap<String, String> {
    let list: Vec<String> = ports
        .iter()
        .map(|(e, c)| format!(r#"{{"external_port": {e}, "container_port": {c}}}"#))
        .collect();
    HashMap::from([(TCP_ROUTER_KEY.to_string(), format!("[{}]", list.join(",")))])
}

fn app(guid: &str, ports: &[(u16, u16)]) -> DesiredLrp {
    DesiredLrp {
        cpu_weight: 10,
        ports: vec![],
        routes: tcp(ports),
        ..desired_lrp(guid, 1)
    }
}

fn routes_update(ports: &[(u16, u16)]) -> DesiredLrpUpdate {
    DesiredLrpUpdate {
        has_routes: true,
        routes: tcp(ports),
        ..Default::default()
    }
}

async fn one_app_holds_an_external_port(db: Db) {
    db.desire_lrp(app("db", &[(5432, 5432)])).await.unwrap();
    let err = db
        .desire_lrp(app("db2", &[(6000, 1), (5432, 5432)]))
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::TcpRouteConflict);
    assert!(
        err.to_string()
            .contains("TCP port 5432 is already routed to app db"),
        "{err}"
    );
    assert!(db.desired_lrp("db2").await.is_err(), "nothing written");

    // Another app's PUT asking for it is refused; its routes stay as they were.
    db.desire_lrp(app("web", &[(8000, 80)])).await.unwrap();
    let err = db
        .update_desired_lrp("web", routes_update(&[(5432, 80)]))
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::TcpRouteConflict);
    assert_eq!(
        db.desired_lrp("web").await.unwrap().routes,
        tcp(&[(8000, 80)])
    );

    // So is a new generation of another app asking for it.
    let mut web2 = app("web", &[(8000, 80), (5432, 80)]);
    web2.rootfs = "docker:///other".into();
    let strategy = lattice_specs::models::RolloutStrategy {
        max_surge: 1,
        ..Default::default()
    };
    let err = db
        .create_generation("web", web2, strategy, "admin")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::TcpRouteConflict);
    assert_eq!(db.desired_lrp("web").await.unwrap().generation, 1);

    // The holder keeps its port through its own updates and may add another.
    db.update_desired_lrp("db", routes_update(&[(5432, 5433), (5433, 5433)]))
        .await
        .unwrap();
    // Removed, the app frees its ports.
    db.remove_desired_lrp("db").await.unwrap();
    db.update_desired_lrp("web", routes_update(&[(5432, 80)]))
        .await
        .unwrap();
    // A malformed TCP route is refused by validation before any conflict check.
    let err = db.desire_lrp(app("bad", &[(0, 80)])).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidRequest);
    assert!(
        err.to_string()
            .contains("routes.tcp-router[0].external_port"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_holds_an_external_port_on_etcd() {
    let etcd = lattice_bbs::testing::EtcdServer::start();
    let s =
        lattice_bbs::store::etcd::EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(3))
            .await
            .unwrap();
    one_app_holds_an_external_port(Db::new(Arc::new(s) as Arc<dyn Store>)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_holds_an_external_port_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = lattice_bbs::store::embedded::EmbeddedStore::open(dir.path().join("bbs.db")).unwrap();
    one_app_holds_an_external_port(Db::new(Arc::new(s) as Arc<dyn Store>)).await;
}
