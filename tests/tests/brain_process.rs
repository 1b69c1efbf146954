//! `lattice brain` as real processes against a `lattice bbs` on etcd: one
//! active brain, a standby that takes over within the lock TTL when the
//! active one is SIGKILLed, and decisions stored in the BBS.

use std::time::{Duration, Instant};

use lattice_specs::bbs_api::*;
use lattice_specs::models::*;
use lattice_tests::{BbsProcess, BrainProcess, EtcdServer};

async fn holder(
    c: &mut lattice_specs::bbs_api::bbs_client::BbsClient<tonic::transport::Channel>,
) -> Option<String> {
    let lease = c
        .grant_lease(GrantLeaseRequest { ttl_seconds: 5 })
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let r = c
        .acquire_lock(AcquireLockRequest {
            key: "brain".into(),
            owner: "probe".into(),
            lease_id: lease,
        })
        .await
        .unwrap()
        .into_inner();
    if r.acquired {
        c.release_lock(ReleaseLockRequest {
            key: "brain".into(),
            lease_id: lease,
        })
        .await
        .unwrap();
    }
    c.revoke_lease(LeaseRequest { lease_id: lease })
        .await
        .unwrap();
    (!r.acquired).then_some(r.owner)
}

async fn wait_for_holder(
    c: &mut lattice_specs::bbs_api::bbs_client::BbsClient<tonic::transport::Channel>,
    want: &str,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if holder(c).await.as_deref() == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{want} did not take the brain lock within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(addr: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_brain_process_takes_over_when_the_active_one_is_killed() {
    let etcd = EtcdServer::start();
    let bbs = BbsProcess::start(&format!("etcd://{}", etcd.endpoint()), &[]);
    let mut c = bbs.client().await;
    let mut a = BrainProcess::start(&bbs.grpc, "brain-a", &["--lock-ttl", "2"]);
    wait_for_holder(&mut c, "brain-a", Duration::from_secs(10)).await;
    let b = BrainProcess::start(&bbs.grpc, "brain-b", &["--lock-ttl", "2"]);
    assert_eq!(metric(&a.metrics, "brain_is_leader").await, Some(1.0));

    // The active brain acts: with no cell registered, work gets a precise placement error.
    let d = DesiredLrp {
        domain: "d".into(),
        ports: vec![],
        ..lattice_specs::testing::desired_lrp("web", 1)
    };
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(d.clone()),
    })
    .await
    .unwrap();
    let placement_error =
        |c: &mut lattice_specs::bbs_api::bbs_client::BbsClient<tonic::transport::Channel>,
         guid: &str| {
            let r = ActualLrPsRequest {
                process_guid: guid.into(),
                ..Default::default()
            };
            let mut c = c.clone();
            async move {
                c.actual_lr_ps(r).await.unwrap().into_inner().actual_lrps[0]
                    .placement_error
                    .clone()
            }
        };
    let t0 = Instant::now();
    while placement_error(&mut c, "web").await.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the active brain never auctioned the instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        placement_error(&mut c, "web").await,
        "found no compatible cell: no cell is registered"
    );

    // SIGKILL the active brain: the standby takes over within the lock TTL and acts.
    a.process.kill();
    let took = wait_for_holder(&mut c, "brain-b", Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(6), "takeover took {took:?}");
    assert_eq!(metric(&b.metrics, "brain_is_leader").await, Some(1.0));
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(DesiredLrp {
            process_guid: "api".into(),
            ..d
        }),
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    while placement_error(&mut c, "api").await.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the new active brain never auctioned the instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
