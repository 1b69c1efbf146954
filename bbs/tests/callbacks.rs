//! Task completion callbacks for real (issue 24): a BBS on loopback, tasks completed
//! in its store, and local HTTP(S) servers receiving the callbacks: received with the
//! task's JSON after a 503, a 4xx final after one attempt, a hanging server cut by
//! the timeout without holding up another task's callback, HTTPS trusted through an
//! extra CA (and refused without it), and a callback pending when the BBS stops made
//! by the next BBS on the same etcd; every task gone once its callback is done.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use lattice_bbs::callbacks::CallbackConfig;
use lattice_bbs::db::{Db, DbError};
use lattice_bbs::serve::ApiLimits;
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs::test_pki::TestCa;
use lattice_specs::models::task::State;
use serde_json::Value;
use tokio::sync::watch;
use tokio_rustls::rustls;

/// What a receiving server does with a request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Never answers.
    Hang,
    /// A 302 back to the same URL.
    Redirect,
}

/// One request a receiving server got.
#[derive(Clone, Debug)]
struct Got {
    content_type: String,
    body: Value,
}

/// A local server taking callbacks at `/done`: answers from its script, then with
/// its default reply (changeable); stops when dropped.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    _stop: watch::Sender<bool>,
}

impl Receiver {
    async fn start(script: &[Reply], tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let default = Arc::new(Mutex::new(Reply::Status(200)));
        let (g, s, d) = (got.clone(), script.clone(), default.clone());
        let app = axum::Router::new().route(
            "/done",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (g, s, d) = (g.clone(), s.clone(), d.clone());
                async move {
                    g.lock().unwrap().push(Got {
                        content_type: headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    let scripted = s.lock().unwrap().pop_front();
                    let reply = scripted.unwrap_or_else(|| *d.lock().unwrap());
                    match reply {
                        Reply::Status(c) => StatusCode::from_u16(c).unwrap().into_response(),
                        Reply::Hang => std::future::pending().await,
                        Reply::Redirect => {
                            (StatusCode::FOUND, [("location", "/done")]).into_response()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(lattice_bbs::serve::serve(
            listener,
            app,
            ApiLimits::default(),
            tls,
            stopped,
        ));
        Receiver {
            url: format!("{scheme}://{addr}/done"),
            got,
            script,
            default,
            _stop: stop,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// Callbacks as tests want them: short windows, quick retries.
fn quick(retry_for: Duration, timeout: Duration) -> CallbackConfig {
    CallbackConfig {
        retry_for,
        timeout,
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..Default::default()
    }
}

async fn start_bbs(store: StoreUrl, callbacks: CallbackConfig) -> RunningBbs {
    server::start(BbsConfig {
        callbacks,
        ..BbsConfig::loopback(store, Duration::from_secs(3))
    })
    .await
    .unwrap()
}

/// A task with a callback to `url`, desired, started and completed on `db` as a
/// cell would; its log guid is `log-GUID`.
async fn complete_task(db: &Db, guid: &str, url: &str) {
    let mut def = lattice_specs::testing::task_definition("/bin/true");
    def.completion_callback_url = url.into();
    def.log_guid = format!("log-{guid}");
    def.annotation = "from the callbacks test".into();
    db.desire_task(guid, "d", def).await.unwrap();
    db.start_task(guid, "cell-1").await.unwrap();
    db.complete_task(guid, "cell-1", false, "", "the result")
        .await
        .unwrap();
}

/// Waits until `f` holds, at most `within`.
async fn until(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn gone(db: &Db, guid: &str) -> bool {
    matches!(db.task(guid).await, Err(DbError::NotFound { .. }))
}

/// The task's callback lines in the BBS's log buffer: (stream, message).
fn callback_lines(bbs: &RunningBbs, guid: &str) -> Vec<(String, String)> {
    bbs.logs
        .recent(&format!("log-{guid}"))
        .into_iter()
        .filter(|m| m.source == "CALLBACK")
        .map(|m| (m.stream, m.message))
        .collect()
}

fn embedded(dir: &tempfile::TempDir) -> StoreUrl {
    StoreUrl::File(dir.path().join("bbs.db"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_is_received_with_the_tasks_json_after_a_503_and_the_task_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = start_bbs(
        embedded(&dir),
        quick(Duration::from_secs(20), Duration::from_secs(5)),
    )
    .await;
    let rx = Receiver::start(&[Reply::Status(503)], None).await;
    let delivered = lattice_bbs::metrics::TASK_CALLBACKS
        .with_label_values(&["delivered"])
        .get();
    complete_task(&bbs.db, "t-retry", &rx.url).await;
    until("the task deleted", Duration::from_secs(20), async || {
        gone(&bbs.db, "t-retry").await
    })
    .await;

    let got = rx.got();
    assert_eq!(got.len(), 2, "a 503, then the delivery: {got:?}");
    for g in &got {
        assert_eq!(g.content_type, "application/json");
        assert_eq!(g.body["task_guid"], "t-retry");
        assert_eq!(g.body["state"], "COMPLETED");
        assert_eq!(g.body["failed"], false);
        assert_eq!(g.body["result"], "the result");
        assert_eq!(g.body["annotation"], "from the callbacks test");
        assert_eq!(g.body["completion_callback_url"], rx.url.as_str());
    }
    assert_eq!(
        callback_lines(&bbs, "t-retry"),
        vec![(
            "stdout".to_string(),
            format!("completion callback to {}: 200 after 2 attempts", rx.url)
        )]
    );
    // The same line through the public API's logs.
    let logs = reqwest::get(format!(
        "http://{}/v1/logs/log-t-retry?follow=false",
        bbs.api_addr
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        logs.contains("\"CALLBACK\"") && logs.contains("200 after 2 attempts"),
        "{logs}"
    );
    assert!(
        lattice_bbs::metrics::TASK_CALLBACKS
            .with_label_values(&["delivered"])
            .get()
            > delivered
    );
    let metrics = lattice_bbs::metrics::render();
    assert!(
        metrics.contains("bbs_task_callback_duration_seconds_count{answer=\"5xx\"}"),
        "{metrics}"
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_final_after_one_attempt_and_logged_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = start_bbs(
        embedded(&dir),
        quick(Duration::from_secs(20), Duration::from_secs(5)),
    )
    .await;
    let rx = Receiver::start(&[Reply::Status(404)], None).await;
    complete_task(&bbs.db, "t-404", &rx.url).await;
    until("the task deleted", Duration::from_secs(20), async || {
        gone(&bbs.db, "t-404").await
    })
    .await;
    // Several backoffs' time for a retry that must not come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 1);
    let lines = callback_lines(&bbs, "t-404");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "stderr");
    assert!(
        lines[0]
            .1
            .ends_with("refused: 404 after 1 attempt (not retried)"),
        "{lines:?}"
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_an_answer_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = start_bbs(
        embedded(&dir),
        quick(Duration::from_secs(20), Duration::from_secs(5)),
    )
    .await;
    let rx = Receiver::start(&[Reply::Redirect], None).await;
    complete_task(&bbs.db, "t-302", &rx.url).await;
    until("the task deleted", Duration::from_secs(20), async || {
        gone(&bbs.db, "t-302").await
    })
    .await;
    // Followed, the POST would have come back (as a GET, or posted again).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 1);
    let lines = callback_lines(&bbs, "t-302");
    assert!(lines.len() == 1 && lines[0].1.contains("302"), "{lines:?}");
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_is_cut_by_the_timeout_and_holds_up_no_other_callback() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = start_bbs(
        embedded(&dir),
        quick(Duration::from_secs(4), Duration::from_secs(2)),
    )
    .await;
    let hangs = Receiver::start(&[], None).await;
    *hangs.default.lock().unwrap() = Reply::Hang;
    let fine = Receiver::start(&[], None).await;

    complete_task(&bbs.db, "t-hangs", &hangs.url).await;
    until(
        "the hanging server asked",
        Duration::from_secs(10),
        async || !hangs.got().is_empty(),
    )
    .await;
    complete_task(&bbs.db, "t-fine", &fine.url).await;
    until(
        "the other task's callback",
        Duration::from_secs(10),
        async || gone(&bbs.db, "t-fine").await,
    )
    .await;
    assert!(
        !gone(&bbs.db, "t-hangs").await,
        "the other callback came while the first one still waited"
    );
    assert_eq!(fine.got().len(), 1);

    // Never answered: each attempt cut after 2 s, given up once the 4 s window
    // closed, and the task deleted all the same.
    until(
        "the hanging task given up",
        Duration::from_secs(20),
        async || gone(&bbs.db, "t-hangs").await,
    )
    .await;
    let lines = callback_lines(&bbs, "t-hangs");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]
            .1
            .contains("failed: no answer within 2s, gave up after"),
        "{lines:?}"
    );
    let asked = hangs.got().len();
    assert!((1..=3).contains(&asked), "{asked} attempts");
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_callbacks_are_verified_against_the_extra_ca() {
    let trusted = TestCa::new("callback receivers' CA");
    let unknown = TestCa::new("a CA nobody trusts");
    let dir = tempfile::tempdir().unwrap();
    let cfg = CallbackConfig {
        extra_ca: vec![trusted.pem.clone()],
        ..quick(Duration::from_secs(2), Duration::from_secs(5))
    };
    let bbs = start_bbs(embedded(&dir), cfg).await;
    let good = Receiver::start(&[], Some(trusted.server(&["127.0.0.1"]).server_config())).await;
    let bad = Receiver::start(&[], Some(unknown.server(&["127.0.0.1"]).server_config())).await;
    assert!(good.url.starts_with("https://127.0.0.1:"));

    complete_task(&bbs.db, "t-https", &good.url).await;
    complete_task(&bbs.db, "t-untrusted", &bad.url).await;
    until("both tasks deleted", Duration::from_secs(20), async || {
        gone(&bbs.db, "t-https").await && gone(&bbs.db, "t-untrusted").await
    })
    .await;
    assert_eq!(good.got().len(), 1);
    assert_eq!(good.got()[0].body["task_guid"], "t-https");
    assert_eq!(
        callback_lines(&bbs, "t-https")[0].1,
        format!("completion callback to {}: 200 after 1 attempt", good.url)
    );
    // The untrusted server never got a request: the handshake failed each time.
    assert!(bad.got().is_empty());
    let lines = callback_lines(&bbs, "t-untrusted");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].1.contains("failed: unreachable") && lines[0].1.contains("certificate"),
        "{lines:?}"
    );
    bbs.shutdown().await;
}

/// A callback still being retried when its BBS stops, and a task that completed
/// while no BBS ran: the next BBS on the same store makes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_pending_when_the_bbs_stops_are_made_by_the_next_one() {
    let etcd = lattice_bbs::testing::EtcdServer::start();
    let store = StoreUrl::Etcd(vec![etcd.endpoint()]);
    let cfg = quick(Duration::from_secs(60), Duration::from_secs(5));
    let rx = Receiver::start(&[], None).await;
    *rx.default.lock().unwrap() = Reply::Status(503);

    let first = start_bbs(store.clone(), cfg.clone()).await;
    complete_task(&first.db, "t-pending", &rx.url).await;
    until("the first attempts", Duration::from_secs(10), async || {
        rx.got().len() >= 2
    })
    .await;
    first.shutdown().await;
    let left = lattice_bbs::server::open_store(&store, Duration::from_secs(3))
        .await
        .unwrap();
    let db = Db::new(left);
    assert_eq!(
        db.task("t-pending").await.unwrap().state(),
        State::Resolving,
        "left resolving by the stopped BBS"
    );
    // A cell completes another task while no BBS makes callbacks.
    complete_task(&db, "t-while-down", &rx.url).await;
    let before = rx.got().len();
    rx.script.lock().unwrap().clear();
    *rx.default.lock().unwrap() = Reply::Status(200);

    let second = start_bbs(store, cfg).await;
    until("both tasks deleted", Duration::from_secs(20), async || {
        gone(&second.db, "t-pending").await && gone(&second.db, "t-while-down").await
    })
    .await;
    let after: Vec<String> = rx.got()[before..]
        .iter()
        .map(|g| g.body["task_guid"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = after.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["t-pending", "t-while-down"], "{after:?}");
    for guid in ["t-pending", "t-while-down"] {
        let lines = callback_lines(&second, guid);
        assert_eq!(lines.len(), 1, "{guid}: {lines:?}");
        assert!(lines[0].1.ends_with(": 200 after 1 attempt"), "{lines:?}");
    }
    second.shutdown().await;
}
