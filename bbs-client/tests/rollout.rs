//! The rollout calls of the client over the BBS's real gRPC server: a surge replacement recorded at the claimed
//! generation, its copy drained and removed, the deployment's compare-and-swap,
//! a rollback that restores a copy, and the history, with the BBS's error names.

use std::time::Duration;

use lattice_bbs::db::Db;
use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_bbs_client::{ActualLrpFilter, CellWrites, GrpcBbs, Reads, Rollouts};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::actual_lrp::Presence;
use lattice_specs::models::deployment::State as DState;
use lattice_specs::models::{ActualLrpNetInfo, DesiredLrp, RolloutStrategy};
use lattice_specs::testing::{desired_lrp, instance_key};

trait Bbs: CellWrites + Reads + Rollouts {}
impl<T: CellWrites + Reads + Rollouts> Bbs for T {}

async fn copies(bbs: &dyn Bbs) -> usize {
    let filter = ActualLrpFilter {
        process_guid: "web".into(),
        ..Default::default()
    };
    let all = bbs.actual_lrps(&filter).await.unwrap();
    all.iter()
        .filter(|l| l.presence() == Presence::Replaced)
        .count()
}

/// `db` has web (one instance) at generation 1; the calls go through `bbs`.
async fn roll_out_and_back(db: &Db, bbs: &dyn Bbs) {
    db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    let old = instance_key("old", "c1");
    let net = ActualLrpNetInfo::default();
    assert_eq!(
        bbs.claim_actual_lrp("web", 0, &old, 1)
            .await
            .unwrap()
            .generation,
        1
    );
    bbs.start_actual_lrp("web", 0, &old, &net).await.unwrap();
    let v2 = DesiredLrp {
        memory_mb: 64,
        ..desired_lrp("web", 1)
    };
    let strategy = RolloutStrategy {
        max_surge: 1,
        max_unavailable: 0,
        canary: 0,
    };
    db.create_generation("web", v2, strategy, "ci")
        .await
        .unwrap();

    let err = bbs.replace_actual_lrp("web", 0, true, 1).await.unwrap_err();
    assert_eq!(err.name, Some(ErrorName::ResourceConflict), "{err}");
    let fresh = bbs.replace_actual_lrp("web", 0, true, 2).await.unwrap();
    assert_eq!(fresh.generation, 0);
    assert_eq!(copies(bbs).await, 1);
    let new = instance_key("new", "c2");
    assert_eq!(
        bbs.claim_actual_lrp("web", 0, &new, 2)
            .await
            .unwrap()
            .generation,
        2
    );
    bbs.drain_replaced_actual_lrp("web", 0).await.unwrap();
    bbs.remove_replaced_actual_lrp("web", 0).await.unwrap();
    assert_eq!(copies(bbs).await, 0);
    let err = bbs.remove_replaced_actual_lrp("web", 0).await.unwrap_err();
    assert_eq!(err.name, Some(ErrorName::ActualLRPIndexNotFound), "{err}");

    let d = bbs.desired_lrp("web").await.unwrap();
    let read = d.deployment.clone().unwrap();
    let mut done = read.clone();
    done.updated_instances = 1;
    bbs.update_deployment("web", read.clone(), done.clone())
        .await
        .unwrap();
    let err = bbs.update_deployment("web", read, done).await.unwrap_err();
    assert_eq!(err.name, Some(ErrorName::ResourceConflict), "{err}");

    // The new generation fails: back to 1, whose copy is restored.
    bbs.start_actual_lrp("web", 0, &new, &net).await.unwrap();
    let d = bbs
        .rollback_desired_lrp("web", 0, true, "instance 0 crashed")
        .await
        .unwrap();
    assert_eq!((d.generation, d.memory_mb), (1, 0));
    let dep = d.deployment.unwrap();
    assert_eq!((dep.state(), dep.failed), (DState::RollingBack, true));
    let err = bbs.restore_replaced_actual_lrp("web", 0).await.unwrap_err();
    assert_eq!(err.name, Some(ErrorName::ActualLRPIndexNotFound), "{err}");
    let h = bbs.desired_lrp_generations("web").await.unwrap();
    let got: Vec<(i64, &str)> = h
        .iter()
        .map(|g| (g.generation, g.status.as_str()))
        .collect();
    assert_eq!(got, [(1, "current"), (2, "failed")]);
    let err = bbs
        .rollback_desired_lrp("web", 0, true, "again")
        .await
        .unwrap_err();
    assert_eq!(err.name, Some(ErrorName::NothingToRollBack), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_calls_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreUrl::File(dir.path().join("bbs.db"));
    let bbs = server::start(BbsConfig::loopback(store, Duration::from_secs(2)))
        .await
        .unwrap();
    let client = GrpcBbs::connect_lazy(&bbs.grpc_addr.to_string()).unwrap();
    roll_out_and_back(&bbs.db, &client).await;
    bbs.shutdown().await;
}
