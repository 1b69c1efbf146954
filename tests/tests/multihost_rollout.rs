//! A rolling update on the multi-host harness (issue 23 on issue 21's hosts, with
//! issue 22's security on): an app on two cell hosts gets a new generation through
//! the public API over HTTPS, while an outside host sends it a steady stream of
//! requests through the router host. No request fails; the first answers come from
//! the old generation, the last from the new one; every instance ends on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::testing::fixtures;
use lattice_specs::bbs_api::DesireLrpRequest;
use lattice_specs::models::{actual_lrp, EnvironmentVariable};
use lattice_tests::lan_cluster::LanCluster;
use lattice_tests::lrps::{actuals, cell_of, wait_running_where};
use lattice_tests::sh;

/// `admin:pw`, the BBS's `--basic-auth` in this test.
const AUTH: &str = "Basic YWRtaW46cHc=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_across_cell_hosts_loses_no_request_through_the_router_host() {
    let cluster = LanCluster::start_opts(2, 2, &["--basic-auth", "admin:pw"]);
    let mut c = cluster.bbs.client().await;
    let mut web = fixtures::routed_lrp("web", 2, "web.lattice.localhost");
    web.memory_mb = 32;
    web.env.push(EnvironmentVariable {
        name: "VERSION".into(),
        value: "v1".into(),
    });
    web.action = Some(sh(
        "mkdir -p /www && echo \"$VERSION from $INSTANCE_INDEX on $CELL_ID\" > /www/index.html && exec httpd -f -p $PORT -h /www",
    ));
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
    let running = wait_running_where(&mut c, "web", 2, Duration::from_secs(60), |_| true).await;
    let cells: HashSet<String> = running.iter().map(cell_of).collect();
    assert_eq!(cells.len(), 2, "spread over both cell hosts: {running:#?}");

    // A steady stream of requests from the outside host through the router host.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (stop, outside) = (stop.clone(), cluster.outside.clone());
        let router = cluster.router.listen.clone();
        std::thread::spawn(move || {
            let (mut bodies, mut failed) = (vec![], vec![]);
            while !stop.load(Ordering::Relaxed) {
                match outside.http_get(&router, "/", Some("web.lattice.localhost")) {
                    Some((200, body)) => bodies.push(body.trim().to_string()),
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (bodies, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // The update, through the public API over HTTPS (verified against the cluster
    // CA): the same definition with VERSION=v2.
    let tls = cluster.pki.to_api();
    let api = |method: &str, path: &str, body: &str| {
        cluster
            .outside
            .https_request(
                &cluster.bbs.api,
                method,
                path,
                &[("Authorization", AUTH)],
                body,
                &tls,
            )
            .expect("the public API answers")
    };
    let (status, current) = api("GET", "/v1/desired_lrps/web", "");
    assert_eq!(status, 200, "{current}");
    let mut def: serde_json::Value = serde_json::from_str(&current).unwrap();
    for answer_only in ["modification_tag", "generation", "deployment", "owner"] {
        def.as_object_mut().unwrap().remove(answer_only);
    }
    for var in def["env"].as_array_mut().unwrap() {
        if var["name"] == "VERSION" {
            var["value"] = "v2".into();
        }
    }
    let request = serde_json::json!({ "definition": def }).to_string();
    let (status, body) = api("POST", "/v1/desired_lrps/web/generations", &request);
    assert_eq!(status, 201, "a new generation: {body}");

    let t0 = Instant::now();
    loop {
        let (_, d) = api("GET", "/v1/desired_lrps/web", "");
        let d: serde_json::Value = serde_json::from_str(&d).unwrap();
        let state = d["deployment"]["state"].clone();
        if state == "succeeded" {
            assert_eq!(d["generation"], 2, "{d}");
            break;
        }
        assert_eq!(state, "rolling", "{d}");
        assert!(t0.elapsed() < Duration::from_secs(90), "not done: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (bodies, failed) = stream.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the update: {failed:?}",
        failed.len(),
        failed.len() + bodies.len()
    );
    let (first, last) = (bodies.first().unwrap(), bodies.last().unwrap());
    assert!(first.starts_with("v1 from"), "first answer: {first}");
    assert!(last.starts_with("v2 from"), "last answer: {last}");

    // Every instance runs generation 2; no old copy is left.
    let all = actuals(&mut c, "web").await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all.iter().all(|a| a.generation == 2
            && a.presence() == actual_lrp::Presence::Ordinary
            && a.state() == actual_lrp::State::Running),
        "{all:#?}"
    );
}
