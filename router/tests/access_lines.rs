//! Access lines reach the public API over HTTPS (issue 22): a router trusting the
//! cluster CA ships them to an API serving a certificate from that CA; a router that
//! does not trust it ships nothing (its warning names the certificate).

use std::time::{Duration, Instant};

use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs::test_pki::TestCa;
use lattice_router::logs;
use lattice_specs::logs::LogMessage;

async fn https_api(ca: &TestCa) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        api_tls: Some(ca.server(&["localhost", "127.0.0.1"]).server_config()),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

/// The recent lines of `log_guid` the API holds.
async fn recent(api: &str, ca: &TestCa, log_guid: &str) -> String {
    let http = lattice_tls::web::client(std::slice::from_ref(&ca.pem)).unwrap();
    http.get(format!("{api}/v1/logs/{log_guid}?follow=false"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_reach_an_https_api_only_when_its_ca_is_trusted() {
    let ca = TestCa::new("cluster CA");
    let (bbs, _dir) = https_api(&ca).await;
    let api = format!("https://localhost:{}", bbs.api_addr.port());

    // Trusting the cluster CA: the line arrives.
    let trusting = lattice_tls::web::client(std::slice::from_ref(&ca.pem)).unwrap();
    let (sink, rx) = logs::channel();
    let shipper = tokio::spawn(logs::post_to_api(rx, api.clone(), None, trusting));
    let line = LogMessage::new("web", "RTR", "web.lattice.localhost - \"GET /shipped\" 200");
    sink.send(line).await.unwrap();
    let t0 = Instant::now();
    loop {
        if recent(&api, &ca, "web").await.contains("GET /shipped") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no access line came: {}",
            recent(&api, &ca, "web").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sink);
    shipper.await.unwrap();

    // Not trusting it (the system's roots only): nothing is shipped.
    let (sink, rx) = logs::channel();
    let shipper = tokio::spawn(logs::post_to_api(
        rx,
        api.clone(),
        None,
        lattice_tls::web::client(&[]).unwrap(),
    ));
    let line = LogMessage::new("api", "RTR", "api.lattice.localhost - \"GET /x\" 200");
    sink.send(line).await.unwrap();
    drop(sink);
    shipper.await.unwrap();
    assert!(
        !recent(&api, &ca, "api").await.contains("GET /x"),
        "a line went to an API whose certificate was not trusted"
    );
    bbs.shutdown().await;
}
