//! `lattice router` as a real process in front of a plain TCP backend, fed by
//! a `lattice bbs` process: it serves the app's route, and after a SIGKILL and
//! restart it rebuilds its table from the BBS.

use std::time::{Duration, Instant};

use lattice_bbs::testing::fixtures;
use lattice_specs::bbs_api::*;
use lattice_tests::{BbsProcess, RouterProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn backend() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    port
}

async fn get(router: &str, host: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://{router}/"))
        .header("host", host)
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

async fn wait_for_200(router: &str, host: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some((200, body)) = get(router, host).await {
            assert_eq!(body, "hello");
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the router never served {host}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_process_serves_routes_and_rebuilds_them_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = BbsProcess::start(
        &format!("file:{}", dir.path().join("bbs.db").display()),
        &[],
    );
    let mut c = bbs.client().await;
    let d = fixtures::routed_lrp("hello", 1, "hello.lattice.localhost");
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(d),
    })
    .await
    .unwrap();
    fixtures::run_instance(&mut c, "hello", 0, backend().await).await;

    let mut router = RouterProcess::start(&bbs.grpc);
    wait_for_200(&router.listen, "hello.lattice.localhost").await;
    assert_eq!(
        get(&router.listen, "nope.lattice.localhost")
            .await
            .unwrap()
            .0,
        404
    );

    router.process.restart();
    let took = wait_for_200(&router.listen, "hello.lattice.localhost").await;
    assert!(
        took < Duration::from_secs(2),
        "a restarted router rebuilt its table in {took:?}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", router.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("router_requests_total{app=\"hello\",status=\"200\"}"),
        "{metrics}"
    );
}
