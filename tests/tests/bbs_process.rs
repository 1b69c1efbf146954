//! The BBS as a real process: killed with SIGKILL mid-stream of writes it
//! loses nothing it acknowledged; with its etcd paused or killed it answers
//! "store unavailable" quickly and recovers by itself.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_specs::bbs_api::{DesireTaskRequest, TasksRequest};
use lattice_specs::errors::ErrorName;
use lattice_specs::testing::task_definition;
use lattice_tests::{signal, BbsProcess, EtcdServer};

fn task(guid: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "restart".into(),
        definition: Some(task_definition("/bin/true")),
    }
}

/// Writers stream task creations; the BBS is SIGKILLed and restarted twice;
/// afterwards every write that was acknowledged must be in the store.
async fn acknowledged_writes_survive_sigkill(bbs: &mut BbsProcess) {
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..4 {
        let (acked, stop, grpc) = (acked.clone(), stop.clone(), bbs.grpc.clone());
        writers.push(tokio::spawn(async move {
            let mut client = None;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = lattice_specs::bbs_api::bbs_client::BbsClient::connect(format!(
                        "http://{grpc}"
                    ))
                    .await
                    .ok();
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let guid = format!("w{w}-{i}");
                match client.as_mut().unwrap().desire_task(task(&guid)).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(guid);
                        i += 1;
                    }
                    // Unknown outcome (the BBS died mid-request): move on without counting it.
                    Err(_) => {
                        client = None;
                        i += 1;
                    }
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "writers stalled at {} acknowledged writes",
                    acked.lock().unwrap().len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    for round in 1..=2 {
        wait_for(round * 300).await;
        bbs.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        bbs.restart();
    }
    wait_for(900).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let mut c = bbs.client().await;
    let stored: HashSet<String> = c
        .tasks(TasksRequest {
            domain: "restart".into(),
            cell_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| t.task_guid)
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after SIGKILL, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(stored.len() >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbs_on_etcd_loses_no_acknowledged_write_when_killed() {
    let etcd = EtcdServer::start();
    let mut bbs = BbsProcess::start(&format!("etcd://{}", etcd.endpoint()), &[]);
    acknowledged_writes_survive_sigkill(&mut bbs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbs_on_embedded_store_loses_no_acknowledged_write_when_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bbs = BbsProcess::start(
        &format!("file:{}", dir.path().join("bbs.db").display()),
        &[],
    );
    acknowledged_writes_survive_sigkill(&mut bbs).await;
}

async fn post_task(api: &str, guid: &str) -> reqwest::Response {
    let body = serde_json::json!({
        "task_guid": guid, "domain": "outage", "rootfs": "preloaded:busybox", "action": {"run": {"path": "/bin/true"}}
    });
    reqwest::Client::new()
        .post(format!("http://{api}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn expect_unavailable_quickly(api: &str, guid: &str) {
    let t0 = Instant::now();
    let r = post_task(api, guid).await;
    let took = t0.elapsed();
    assert_eq!(
        r.status(),
        503,
        "a write with etcd down is refused as unavailable"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], ErrorName::StoreUnavailable.as_str(), "{v}");
    assert!(
        took < Duration::from_secs(5),
        "answered after {took:?}: must not hang on a dead store"
    );
    let r = reqwest::get(format!("http://{api}/v1/tasks"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

async fn wait_until_healthy(api: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{api}/v1/tasks")).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "BBS did not recover after etcd came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_gives_quick_503_and_the_bbs_recovers_by_itself() {
    let mut etcd = EtcdServer::start();
    let bbs = BbsProcess::start(
        &format!("etcd://{}", etcd.endpoint()),
        &["--store-timeout-ms", "1000"],
    );
    assert_eq!(post_task(&bbs.api, "before").await.status(), 201);

    // A hung etcd (paused): requests time out fast instead of hanging.
    signal(etcd.pid(), libc::SIGSTOP);
    expect_unavailable_quickly(&bbs.api, "while-paused").await;
    signal(etcd.pid(), libc::SIGCONT);
    wait_until_healthy(&bbs.api).await;
    assert_eq!(post_task(&bbs.api, "after-pause").await.status(), 201);

    // A dead etcd (killed): refused connections, then a restart on the same data.
    etcd.kill();
    expect_unavailable_quickly(&bbs.api, "while-dead").await;
    etcd.restart();
    wait_until_healthy(&bbs.api).await;
    assert_eq!(post_task(&bbs.api, "after-restart").await.status(), 201);

    let tasks: serde_json::Value =
        reqwest::get(format!("http://{}/v1/tasks?domain=outage", bbs.api))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let guids: HashSet<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_guid"].as_str().unwrap())
        .collect();
    for g in ["before", "after-pause", "after-restart"] {
        assert!(guids.contains(g), "{g} missing from {guids:?}");
    }
    assert!(
        !guids.contains("while-dead"),
        "a write refused with a dead etcd was not applied"
    );
    // Every stored task is whole (never half-written).
    for t in tasks.as_array().unwrap() {
        assert_eq!(t["state"], "PENDING");
        assert_eq!(t["action"]["run"]["path"], "/bin/true");
    }
}
