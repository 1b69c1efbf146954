//! Authorization by identity in the BBS's gRPC handlers, called directly with the
//! peer identity in the request's extensions (as the TLS transport puts it there):
//! a cell certificate claiming or failing another cell's work, a cell asking for
//! the brain lock, a router writing and a caller without a certificate reading are
//! refused with `PermissionDenied` / `Forbidden`, a message naming who asked for
//! what, nothing changed, and a count in `bbs_authz_refused_total`; the same calls
//! as the right identity, or from a local caller (no identity), go through.

use std::sync::Arc;

use lattice_bbs::db::Db;
use lattice_bbs::events::EventHub;
use lattice_bbs::grpc::{error_name, BbsGrpc};
use lattice_bbs::metrics::AUTHZ_REFUSED;
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::store::Store;
use lattice_specs::authz::{Call, NoClientCertificate};
use lattice_specs::bbs_api::bbs_server::Bbs;
use lattice_specs::bbs_api::*;
use lattice_specs::errors::ErrorName;
use lattice_specs::identity::{Identity, Role};
use lattice_specs::models::actual_lrp::State;
use lattice_specs::testing::{desired_lrp, instance_key, task_definition};
use tonic::{Code, Request, Status};

struct TestBbs {
    svc: BbsGrpc,
    db: Db,
    _dir: tempfile::TempDir,
}

async fn bbs() -> TestBbs {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("bbs.db")).unwrap());
    let db = Db::new(store.clone());
    let hub = EventHub::start(store).await;
    TestBbs {
        svc: BbsGrpc::new(db.clone(), hub),
        db,
        _dir: dir,
    }
}

/// `msg` sent by `role NAME`.
fn from<T>(role: Role, name: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut()
        .insert(Identity::new(role, name).unwrap());
    r
}

fn refused(s: Status, says: &str) {
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(error_name(&s), Some(ErrorName::Forbidden), "{s:?}");
    assert!(
        s.message().contains(says),
        "{:?} lacks {says:?}",
        s.message()
    );
}

fn refusals(role: &str, call: &str) -> u64 {
    AUTHZ_REFUSED.with_label_values(&[role, call]).get()
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

#[tokio::test]
async fn a_cell_claims_only_its_own_work() {
    let b = bbs().await;
    b.db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    let before = refusals("cell", "ClaimActualLRP");

    let s = b
        .svc
        .claim_actual_lrp(from(Role::Cell, "cell-a", claim("cell-b")))
        .await
        .unwrap_err();
    refused(
        s,
        "the certificate of cell cell-a may not claim work (ClaimActualLRP) for cell cell-b: a cell acts only as itself",
    );
    assert!(refusals("cell", "ClaimActualLRP") > before);
    let web = b.db.actual_lrps("", "", "web", Some(0)).await.unwrap();
    assert_eq!(web[0].state(), State::Unclaimed, "nothing changed");

    let l = b
        .svc
        .claim_actual_lrp(from(Role::Cell, "cell-a", claim("cell-a")))
        .await
        .unwrap()
        .into_inner()
        .actual_lrp
        .unwrap();
    assert_eq!(l.state(), State::Claimed);
    assert_eq!(l.instance_key.unwrap().cell_id, "cell-a");
}

#[tokio::test]
async fn a_cell_fails_only_its_own_task_and_a_brain_any() {
    let b = bbs().await;
    for t in ["t-1", "t-2"] {
        b.db.desire_task(t, "d", task_definition("/bin/true"))
            .await
            .unwrap();
        assert!(b.db.start_task(t, "cell-a").await.unwrap());
    }
    let fail = |guid: &str| FailTaskRequest {
        task_guid: guid.into(),
        failure_reason: "lost".into(),
    };
    let s = b
        .svc
        .fail_task(from(Role::Cell, "cell-b", fail("t-1")))
        .await
        .unwrap_err();
    refused(
        s,
        "cell cell-b may not fail a task (FailTask) for cell cell-a",
    );
    assert!(!b.db.task("t-1").await.unwrap().failed, "nothing changed");
    b.svc
        .fail_task(from(Role::Cell, "cell-a", fail("t-1")))
        .await
        .unwrap();
    b.svc
        .fail_task(from(Role::Brain, "brain-1", fail("t-2")))
        .await
        .unwrap();
    for t in ["t-1", "t-2"] {
        assert!(b.db.task(t).await.unwrap().failed, "{t}");
    }
}

#[tokio::test]
async fn only_a_brain_holds_the_brain_lock() {
    let b = bbs().await;
    let lease = b
        .svc
        .grant_lease(from(
            Role::Cell,
            "cell-a",
            GrantLeaseRequest { ttl_seconds: 30 },
        ))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let lock = |owner: &str| AcquireLockRequest {
        key: "brain".into(),
        owner: owner.into(),
        lease_id: lease,
    };
    let s = b
        .svc
        .acquire_lock(from(Role::Cell, "cell-a", lock("cell-a")))
        .await
        .unwrap_err();
    refused(
        s,
        "the certificate of cell cell-a may not hold the brain lock (AcquireLock): only a brain may",
    );
    let got = b
        .svc
        .acquire_lock(from(Role::Brain, "brain-1", lock("brain-1")))
        .await
        .unwrap()
        .into_inner();
    assert!(got.acquired);
    assert_eq!(got.owner, "brain-1", "the cell's attempt took nothing");
}

#[tokio::test]
async fn a_router_reads_but_does_not_write() {
    let b = bbs().await;
    let desire = DesireLrpRequest {
        desired_lrp: Some(desired_lrp("web", 1)),
    };
    let s = b
        .svc
        .desire_lrp(from(Role::Router, "router-1", desire.clone()))
        .await
        .unwrap_err();
    refused(s, "router router-1 may not desire an LRP (DesireLRP)");
    let read = DesiredLrPsRequest::default();
    let lrps = b
        .svc
        .desired_lr_ps(from(Role::Router, "router-1", read.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        lrps.desired_lrps.is_empty(),
        "the router's write changed nothing"
    );
    b.svc
        .subscribe_events(from(Role::Router, "router-1", SubscribeRequest::default()))
        .await
        .unwrap();

    // A local caller (plaintext loopback: no identity) is trusted.
    b.svc.desire_lrp(Request::new(desire)).await.unwrap();
    let lrps = b.svc.desired_lr_ps(Request::new(read)).await.unwrap();
    assert_eq!(lrps.into_inner().desired_lrps.len(), 1);
}

#[tokio::test]
async fn only_a_brain_rolls_an_app_out_and_everyone_reads_its_history() {
    let b = bbs().await;
    b.db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    let back = RollbackDesiredLrpRequest {
        process_guid: "web".into(),
        generation: 1,
        ..Default::default()
    };
    let s = b
        .svc
        .rollback_desired_lrp(from(Role::Cell, "cell-a", back.clone()))
        .await
        .unwrap_err();
    refused(
        s,
        "cell cell-a may not roll an app back (RollbackDesiredLRP): only a brain may",
    );
    let replace = ReplaceActualLrpRequest {
        key: Some(ActualLrpRef {
            process_guid: "web".into(),
            index: 0,
        }),
        surge: true,
        target_generation: 1,
    };
    let s = b
        .svc
        .replace_actual_lrp(from(Role::Router, "router-1", replace))
        .await
        .unwrap_err();
    refused(
        s,
        "router router-1 may not replace an instance (ReplaceActualLRP)",
    );
    // The brain passes authorization (and the app has nothing to roll back to).
    let s = b
        .svc
        .rollback_desired_lrp(from(Role::Brain, "brain-1", back))
        .await
        .unwrap_err();
    assert_eq!(error_name(&s), Some(ErrorName::NothingToRollBack), "{s:?}");
    let read = ProcessGuidRequest {
        process_guid: "web".into(),
    };
    for (role, name) in [(Role::Router, "router-1"), (Role::Cell, "cell-a")] {
        let h = b
            .svc
            .desired_lrp_generations(from(role, name, read.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.generations.len(), 1);
    }
}

#[tokio::test]
async fn a_caller_without_a_client_certificate_may_not_even_read() {
    let b = bbs().await;
    let before = refusals("anonymous", "Cells");
    let mut r = Request::new(Empty {});
    r.extensions_mut().insert(NoClientCertificate);
    let s = b.svc.cells(r).await.unwrap_err();
    refused(
        s,
        "a caller without a client certificate may not read cells",
    );
    assert!(refusals("anonymous", "Cells") > before);
    let mut r = Request::new(SubscribeRequest::default());
    r.extensions_mut().insert(NoClientCertificate);
    let s = b.svc.subscribe_events(r).await.err().unwrap();
    refused(s, "may not subscribe to events (SubscribeEvents)");
}

#[tokio::test]
async fn a_lease_is_kept_alive_and_revoked_only_by_its_holder() {
    let b = bbs().await;
    let grant = |role, name: &str| from(role, name, GrantLeaseRequest { ttl_seconds: 30 });
    let lease = |role, name: &str, id| from(role, name, LeaseRequest { lease_id: id });
    let brains = b
        .svc
        .grant_lease(grant(Role::Brain, "brain-1"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let cells = b
        .svc
        .grant_lease(grant(Role::Cell, "cell-a"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;

    let s = b
        .svc
        .revoke_lease(lease(Role::Cell, "cell-a", brains))
        .await
        .unwrap_err();
    refused(
        s,
        "the certificate of cell cell-a may not revoke a lease (RevokeLease) held by brain brain-1: a lease is only its holder's",
    );
    let s = b
        .svc
        .keep_alive_lease(lease(Role::Cell, "cell-b", cells))
        .await
        .unwrap_err();
    refused(s, "held by cell cell-a");
    let s = b
        .svc
        .revoke_lease(lease(Role::Brain, "brain-1", cells))
        .await
        .unwrap_err();
    refused(s, "held by cell cell-a");

    for (role, name, id) in [
        (Role::Brain, "brain-1", brains),
        (Role::Cell, "cell-a", cells),
    ] {
        let ttl = b
            .svc
            .keep_alive_lease(lease(role, name, id))
            .await
            .unwrap()
            .into_inner()
            .ttl_seconds;
        assert!(ttl > 0, "{name}'s lease lives on");
    }
    b.svc
        .revoke_lease(lease(Role::Cell, "cell-a", cells))
        .await
        .unwrap();
    let gone = b
        .svc
        .keep_alive_lease(lease(Role::Cell, "cell-a", cells))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.ttl_seconds, 0, "revoked by its holder");
    assert_eq!(
        b.db.lease_holder(cells).await.unwrap(),
        None,
        "its record went with it"
    );
}

/// Every BBS call checks its caller: one without a client certificate is refused
/// each of them, before anything is read or written (only Join, not served
/// here, is open to it).
#[tokio::test]
async fn every_call_refuses_a_caller_without_a_client_certificate() {
    let b = bbs().await;
    let key = || {
        Some(ActualLrpRef {
            process_guid: "web".into(),
            index: 0,
        })
    };
    let ik = || Some(instance_key("i-1", "cell-a"));
    let evacuate = || EvacuateRequest {
        key: key(),
        instance_key: ik(),
        ..Default::default()
    };
    let mut checked = 0;
    macro_rules! refused_to_anonymous {
        ($($method:ident($msg:expr)),* $(,)?) => {$(
            let mut r = Request::new($msg);
            r.extensions_mut().insert(NoClientCertificate);
            let s = b.svc.$method(r).await.err().expect(stringify!($method));
            assert_eq!(s.code(), Code::PermissionDenied, "{}: {s:?}", stringify!($method));
            assert_eq!(error_name(&s), Some(ErrorName::Forbidden), "{}", stringify!($method));
            checked += 1;
        )*};
    }
    refused_to_anonymous!(
        ping(Empty {}),
        desire_lrp(DesireLrpRequest::default()),
        update_desired_lrp(UpdateDesiredLrpRequest::default()),
        remove_desired_lrp(ProcessGuidRequest::default()),
        desired_lr_ps(DesiredLrPsRequest::default()),
        desired_lrp_by_process_guid(ProcessGuidRequest::default()),
        actual_lr_ps(ActualLrPsRequest::default()),
        claim_actual_lrp(claim("cell-a")),
        start_actual_lrp(StartActualLrpRequest {
            key: key(),
            instance_key: ik(),
            net_info: None
        }),
        crash_actual_lrp(CrashActualLrpRequest {
            key: key(),
            instance_key: ik(),
            error_message: String::new()
        }),
        fail_actual_lrp(FailActualLrpRequest::default()),
        remove_actual_lrp(RemoveActualLrpRequest {
            key: key(),
            instance_key: ik()
        }),
        retire_actual_lrp(RetireActualLrpRequest::default()),
        create_actual_lrp(ActualLrpRef::default()),
        unclaim_actual_lrp(ActualLrpRef::default()),
        suspect_actual_lrp(ActualLrpRef::default()),
        remove_suspect_actual_lrp(ActualLrpRef::default()),
        evacuate_claimed_actual_lrp(evacuate()),
        evacuate_running_actual_lrp(evacuate()),
        evacuate_stopped_actual_lrp(evacuate()),
        evacuate_crashed_actual_lrp(evacuate()),
        remove_evacuating_actual_lrp(evacuate()),
        desire_task(DesireTaskRequest::default()),
        tasks(TasksRequest::default()),
        task_by_guid(TaskGuidRequest::default()),
        start_task(StartTaskRequest {
            task_guid: "t".into(),
            cell_id: "cell-a".into()
        }),
        cancel_task(TaskGuidRequest::default()),
        fail_task(FailTaskRequest::default()),
        reject_task(RejectTaskRequest::default()),
        complete_task(CompleteTaskRequest {
            cell_id: "cell-a".into(),
            ..Default::default()
        }),
        resolving_task(TaskGuidRequest::default()),
        delete_task(TaskGuidRequest::default()),
        cells(Empty {}),
        volumes(VolumesRequest::default()),
        set_volume_state(VolumeStateRequest {
            cell_id: "cell-a".into(),
            ..Default::default()
        }),
        volume_removed(VolumeRemovedRequest {
            cell_id: "cell-a".into(),
            ..Default::default()
        }),
        place_volume(PlaceVolumeRequest::default()),
        fail_over_volume(FailOverVolumeRequest::default()),
        tend_standby(TendStandbyRequest::default()),
        volume_fenced(VolumeFencedRequest {
            cell_id: "cell-a".into(),
            ..Default::default()
        }),
        schedules(Empty {}),
        claim_schedule_slot(ClaimScheduleSlotRequest::default()),
        backups(Empty {}),
        delete_backup(BackupIdRequest::default()),
        grant_lease(GrantLeaseRequest { ttl_seconds: 30 }),
        keep_alive_lease(LeaseRequest::default()),
        revoke_lease(LeaseRequest::default()),
        set_cell_presence(SetCellPresenceRequest {
            cell: Some(lattice_specs::testing::cell_presence("cell-a", &[])),
            lease_id: 1,
        }),
        lease_cell_subnet(LeaseCellSubnetRequest {
            cell_id: "cell-a".into(),
            ..Default::default()
        }),
        upsert_domain(UpsertDomainRequest::default()),
        domains(Empty {}),
        acquire_lock(AcquireLockRequest::default()),
        release_lock(ReleaseLockRequest::default()),
        subscribe_events(SubscribeRequest::default()),
        replace_actual_lrp(ReplaceActualLrpRequest::default()),
        drain_replaced_actual_lrp(ReplacedActualLrpRequest::default()),
        remove_replaced_actual_lrp(ReplacedActualLrpRequest::default()),
        restore_replaced_actual_lrp(ReplacedActualLrpRequest::default()),
        update_deployment(UpdateDeploymentRequest::default()),
        rollback_desired_lrp(RollbackDesiredLrpRequest::default()),
        desired_lrp_generations(ProcessGuidRequest::default()),
    );
    let bbs_calls = Call::ALL
        .iter()
        .filter(|c| {
            !c.name().starts_with('/') && !matches!(c, Call::Join | Call::Perform | Call::RepState)
        })
        .count();
    assert_eq!(
        checked, bbs_calls,
        "every BBS call of specs::authz is checked here"
    );
    assert!(
        b.db.cells().await.unwrap().is_empty(),
        "nothing was written"
    );
}
