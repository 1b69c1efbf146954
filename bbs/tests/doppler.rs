//! Doppler's read side on the public API, read as the original Lattice `ltc` (v0.7)
//! reads it: a real WebSocket client decoding each binary message as a dropsonde
//! Envelope, `recentlogs` and `containermetrics` as multipart bodies parsed strictly,
//! with the empty `Authorization:` header the original client sends. Also the
//! receptor's `/v1/version` fields and the original receptor client's quirks (a `null`
//! JSON body on every GET and DELETE; bare 201/204 answers without a Content-Type).
//! A real cell stands in as an HTTP server answering the rep's `/v1/containers` and
//! `/v1/logs/GUID`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query};
use futures::StreamExt;
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_specs::containers::CellContainer;
use lattice_specs::dropsonde::events::envelope::EventType;
use lattice_specs::dropsonde::events::log_message::MessageType;
use lattice_specs::dropsonde::events::Envelope;
use lattice_specs::logs::{LogMessage, DEBUG_LOG_GUID};
use lattice_specs::models::CellPresence;
use lattice_specs::testing::instance_key;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

use common::request;

const WAIT: Duration = Duration::from_secs(10);

/// A BBS on loopback (with `--basic-auth` when `auth`) saying `v0.7.0` as its release.
async fn start(auth: Option<&str>) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        basic_auth: auth.map(String::from),
        lattice_release: "v0.7.0".into(),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

#[derive(serde::Deserialize)]
struct LogQuery {
    recent: bool,
    follow: bool,
}

/// A cell's rep on loopback: its containers' usage (each answer 0.05 CPU seconds more
/// than the one before) and one log line of app `web` (instance 0's, recent or live).
async fn cell() -> (SocketAddr, Arc<AtomicU32>) {
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let containers = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let used = |handle: &str, mem: u64| CellContainer {
            handle: handle.into(),
            memory_bytes: mem,
            cpu_seconds: 1.0 + 0.05 * f64::from(n),
            disk_bytes: 4096,
            ..Default::default()
        };
        let list = vec![
            used("i-web-1", 2 << 20),
            used("i-web-0", 12_345_678),
            used("i-stranger", 1),
        ];
        async move { axum::Json(list) }
    };
    let logs = |Path(guid): Path<String>, Query(q): Query<LogQuery>| async move {
        let mut line = LogMessage::new(
            &guid,
            "APP/0",
            format!("from the cell, recent={}", q.recent),
        );
        line.timestamp = 1;
        let body = if guid == "web" {
            line.to_ndjson()
        } else {
            vec![]
        };
        let chunks =
            futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))]);
        // A follower's stream stays open.
        let chunks = if q.follow {
            chunks.chain(futures::stream::pending()).boxed()
        } else {
            chunks.boxed()
        };
        axum::body::Body::from_stream(chunks)
    };
    let app = axum::Router::new()
        .route("/v1/containers", axum::routing::get(containers))
        .route("/v1/logs/{guid}", axum::routing::get(logs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, asked)
}

/// Cell `cell-1` at `rep`, app `web` (metrics guid `web-metrics`) created as the
/// original client creates it, its instances 0 and 1 running there.
async fn app_on_a_cell(bbs: &RunningBbs, rep: SocketAddr) {
    let cell = CellPresence {
        cell_id: "cell-1".into(),
        rep_address: rep.to_string(),
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    let lrp = json!({
        "process_guid": "web", "domain": "lattice", "rootfs": "preloaded:busybox",
        "instances": 2, "action": {"run": {"path": "/bin/httpd"}}, "cpu_weight": 100,
        "memory_mb": 128, "log_guid": "web", "log_source": "APP", "metrics_guid": "web-metrics",
        "ports": [8080],
    });
    let r = original_client(bbs.api_addr, "POST", "/v1/desired_lrps", Some(&lrp)).await;
    assert_eq!((r.status, r.content_type.as_str()), (201, ""), "{}", r.body);
    for index in [0, 1] {
        let ik = instance_key(&format!("i-web-{index}"), "cell-1");
        bbs.db.claim_actual_lrp("web", index, &ik, 1).await.unwrap();
        bbs.db
            .start_actual_lrp("web", index, &ik, Default::default())
            .await
            .unwrap();
    }
}

/// A request as the original receptor client makes it: `Content-Type:
/// application/json` and a JSON body always, `null` when there is nothing to send.
async fn original_client(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> common::Resp {
    let body = serde_json::to_vec(&body.cloned().unwrap_or(Value::Null)).unwrap();
    request(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `/apps/GUID/stream` as noaa does: `Origin: http://localhost` and an empty
/// `Authorization:` (plus `extra` headers). Err: the status of the refusal.
async fn open_stream(addr: SocketAddr, guid: &str, extra: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/apps/{guid}/stream")
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("Origin", HeaderValue::from_static("http://localhost"));
    h.insert("Authorization", HeaderValue::from_static(""));
    for (k, v) in extra {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
        h.insert(name, HeaderValue::from_str(v).unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("an answer to the upgrade")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// The next binary message, decoded (as noaa does, required fields enforced by the
/// generated proto2 types).
async fn next_envelope(ws: &mut Ws) -> Envelope {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the wait")
            .expect("the stream is open")
            .expect("a good message");
        match m {
            Message::Binary(b) => return Envelope::decode(b.as_ref()).expect("an Envelope"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("not a binary message: {other:?}"),
        }
    }
}

/// A plain HTTP/1.1 GET read to its end: status, headers (lowercase names), body bytes.
async fn get_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut head =
        format!("GET {path} HTTP/1.1\r\nHost: doppler.lattice.localhost\r\nConnection: close\r\n");
    // The original client's empty header, unless a credential is given.
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        head.push_str("Authorization: \r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the whole answer")
        .unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8(out[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    assert!(
        !headers.contains_key("transfer-encoding"),
        "a whole body with its length"
    );
    let body = out[end + 4..].to_vec();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(body.len(), len.parse::<usize>().unwrap());
    }
    (status, headers, body)
}

/// The parts of a MIME multipart body (RFC 2046), strictly: it starts with the first
/// delimiter, parts are separated by CRLF + delimiter, it ends with the close
/// delimiter, each part's (here empty) header block ends with an empty line.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let (media, params) = content_type.split_once(';').expect("a boundary parameter");
    assert_eq!(media.trim(), "multipart/x-protobuf");
    let boundary = params
        .trim()
        .strip_prefix("boundary=")
        .expect("boundary=")
        .trim_matches('"');
    assert!(
        !boundary.is_empty() && boundary.len() <= 70,
        "RFC 2046 boundary: {boundary}"
    );
    let delimiter = format!("--{boundary}");
    let close = format!("--{boundary}--\r\n");
    if body == close.as_bytes() {
        return vec![];
    }
    let first = format!("{delimiter}\r\n");
    assert!(
        body.starts_with(first.as_bytes()),
        "starts with the delimiter"
    );
    let end = format!("\r\n{close}");
    assert!(
        body.ends_with(end.as_bytes()),
        "ends with the close delimiter"
    );
    let inner = &body[first.len()..body.len() - end.len()];
    let separator = format!("\r\n{delimiter}\r\n");
    let mut parts = vec![];
    let mut rest = inner;
    loop {
        let at = rest
            .windows(separator.len())
            .position(|w| w == separator.as_bytes());
        let (part, next) = match at {
            Some(i) => (&rest[..i], Some(&rest[i + separator.len()..])),
            None => (rest, None),
        };
        // No headers: the header block is just its closing empty line.
        let data = part.strip_prefix(b"\r\n").expect("an empty header block");
        parts.push(data.to_vec());
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    parts
}

fn log_of(e: &Envelope) -> (String, String, String, String, MessageType) {
    assert_eq!(e.event_type(), EventType::LogMessage);
    let l = e.log_message.as_ref().expect("a LogMessage");
    (
        l.app_id.clone().unwrap(),
        l.source_type.clone().unwrap(),
        l.source_instance.clone().unwrap(),
        String::from_utf8(l.message.clone()).unwrap(),
        l.message_type(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_new_lines_stream_as_log_message_envelopes() {
    let (bbs, _dir) = start(None).await;
    let (rep, _) = cell().await;
    app_on_a_cell(&bbs, rep).await;
    let mut ws = open_stream(bbs.api_addr, "web", &[]).await.unwrap();
    // The cell's live line, through the same gathering as /v1/logs.
    let e = next_envelope(&mut ws).await;
    assert_eq!(
        log_of(&e),
        (
            "web".into(),
            "APP".into(),
            "0".into(),
            "from the cell, recent=false".into(),
            MessageType::Out
        )
    );
    // Lines kept by the BBS itself (a router's access line, an instance's stderr).
    bbs.logs
        .push(LogMessage::new("other", "APP/0", "not web's"));
    let mut err = LogMessage::new("web", "APP/1", "oops");
    err.stream = "stderr".into();
    err.timestamp = 1_700_000_000_000_000_042;
    bbs.logs.push(err);
    bbs.logs.push(LogMessage::new(
        "web",
        "RTR",
        "web.lattice.localhost - \"GET /\" 200",
    ));
    let e = next_envelope(&mut ws).await;
    assert_eq!(e.timestamp, Some(1_700_000_000_000_000_042));
    assert_eq!(
        e.log_message.as_ref().unwrap().timestamp,
        1_700_000_000_000_000_042
    );
    assert_eq!(
        log_of(&e),
        (
            "web".into(),
            "APP".into(),
            "1".into(),
            "oops".into(),
            MessageType::Err
        )
    );
    let (_, source, instance, message, _) = log_of(&next_envelope(&mut ws).await);
    assert_eq!((source.as_str(), instance.as_str()), ("RTR", ""));
    assert!(message.contains("GET /"), "{message}");
    ws.close(None).await.unwrap();
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_stream_names_diegos_components_and_lattices_machines() {
    let (bbs, _dir) = start(None).await;
    let mut ws = open_stream(bbs.api_addr, "lattice-debug", &[])
        .await
        .unwrap();
    for (source, text) in [
        ("CELL", "INFO claimed web/0"),
        ("EXECUTOR", "INFO container created handle=i-web-0"),
        ("BBS", "INFO bbs serving"),
        ("BRAIN", "INFO auction done"),
    ] {
        bbs.logs.push(LogMessage::new(DEBUG_LOG_GUID, source, text));
    }
    let mut seen = vec![];
    for _ in 0..4 {
        let e = next_envelope(&mut ws).await;
        let (app, source_type, instance, _, _) = log_of(&e);
        assert_eq!(app, "lattice-debug");
        assert_eq!(e.origin, format!("{instance}/{source_type}"));
        seen.push(format!("{source_type}|{instance}"));
    }
    assert_eq!(
        seen,
        [
            "rep|lattice-cell-0",
            "garden-linux|lattice-cell-0",
            "bbs|lattice-brain-0",
            "brain|lattice-brain-0"
        ]
    );
    // What the original `ltc test` looks for on the debug stream.
    assert!(seen.iter().any(|l| l.starts_with("rep|lattice-cell-")));
    assert!(seen
        .iter()
        .any(|l| l.starts_with("garden-linux|lattice-cell-")));
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_logs_are_a_multipart_of_envelopes_in_time_order() {
    let (bbs, _dir) = start(None).await;
    let (rep, _) = cell().await;
    app_on_a_cell(&bbs, rep).await;
    for (t, text) in [(30, "third"), (20, "second")] {
        let mut m = LogMessage::new("web", "APP/1", text);
        m.timestamp = t;
        bbs.logs.push(m);
    }
    let (status, headers, body) = get_raw(bbs.api_addr, "/apps/web/recentlogs", &[]).await;
    assert_eq!(status, 200);
    let parts = multipart_parts(&headers["content-type"], &body);
    let got: Vec<String> = parts
        .iter()
        .map(|p| log_of(&Envelope::decode(p.as_slice()).unwrap()).3)
        .collect();
    assert_eq!(got, ["from the cell, recent=true", "second", "third"]);
    // An app with no lines: an empty multipart, still 200.
    let (status, headers, body) = get_raw(bbs.api_addr, "/apps/nothing/recentlogs", &[]).await;
    assert_eq!(status, 200);
    assert!(multipart_parts(&headers["content-type"], &body).is_empty());
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_metrics_are_one_latest_per_running_instance() {
    let (bbs, _dir) = start(None).await;
    let (rep, asked) = cell().await;
    app_on_a_cell(&bbs, rep).await;
    let api = bbs.api_addr;
    let metrics = |path: &'static str| async move {
        let (status, headers, body) = get_raw(api, path, &[]).await;
        assert_eq!(status, 200);
        multipart_parts(&headers["content-type"], &body)
            .iter()
            .map(|p| {
                let e = Envelope::decode(p.as_slice()).unwrap();
                assert_eq!(e.event_type(), EventType::ContainerMetric);
                e.container_metric.unwrap()
            })
            .collect::<Vec<_>>()
    };
    let got = metrics("/apps/web/containermetrics").await;
    // No earlier sample: two were taken, half a second apart.
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].instance_index, got[1].instance_index), (0, 1));
    assert!(got.iter().all(|m| m.application_id == "web-metrics"));
    assert_eq!(got[0].memory_bytes, 12_345_678);
    assert_eq!(got[1].memory_bytes, 2 << 20);
    assert_eq!(got[0].disk_bytes, 4096);
    // 0.05 s of CPU between samples at least 0.5 s apart: a percentage, above 0 and
    // at most 10.
    assert!(
        got[0].cpu_percentage > 0.0 && got[0].cpu_percentage <= 10.0,
        "{}",
        got[0].cpu_percentage
    );
    // Asked again soon after (by the metrics guid): the kept sample starts the
    // interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = metrics("/apps/web-metrics/containermetrics").await;
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(again.len(), 2);
    assert!(again[0].cpu_percentage > 0.0);
    // An unknown app has none.
    assert!(metrics("/apps/nope/containermetrics").await.is_empty());
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_without_credentials_only_over_loopback_to_an_api_without_any() {
    // No --basic-auth: loopback readers need none, even with the empty header...
    let (open, _d1) = start(None).await;
    assert_eq!(
        get_raw(open.api_addr, "/apps/web/recentlogs", &[]).await.0,
        200
    );
    assert!(open_stream(open.api_addr, "web", &[]).await.is_ok());
    // ...but one a local router relays for a client elsewhere does.
    let far = [("X-Forwarded-For", "10.1.2.3")];
    assert_eq!(
        get_raw(open.api_addr, "/apps/web/recentlogs", &far).await.0,
        401
    );
    assert_eq!(
        open_stream(open.api_addr, "web", &far).await.err(),
        Some(401)
    );
    let near = [("X-Forwarded-For", "127.0.0.1")];
    assert_eq!(
        get_raw(open.api_addr, "/apps/web/recentlogs", &near)
            .await
            .0,
        200
    );
    open.shutdown().await;

    // With --basic-auth: the API's credentials, as on /v1.
    let (locked, _d2) = start(Some("admin:s3cret")).await;
    let (status, headers, body) = get_raw(locked.api_addr, "/apps/web/containermetrics", &[]).await;
    assert_eq!(status, 401);
    assert!(headers["content-type"].starts_with("application/json"));
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(e["name"], "Unauthorized");
    assert_eq!(
        open_stream(locked.api_addr, "web", &[]).await.err(),
        Some(401)
    );
    let basic = [("Authorization", "Basic YWRtaW46czNjcmV0")];
    assert_eq!(
        get_raw(locked.api_addr, "/apps/web/recentlogs", &basic)
            .await
            .0,
        200
    );
    let mut ws = open_stream(locked.api_addr, "web", &basic).await.unwrap();
    locked
        .logs
        .push(LogMessage::new("web", "APP/0", "for the admin"));
    assert_eq!(log_of(&next_envelope(&mut ws).await).3, "for the admin");
    let wrong = [("Authorization", "Basic YWRtaW46bm9wZQ==")];
    assert_eq!(
        open_stream(locked.api_addr, "web", &wrong).await.err(),
        Some(401)
    );
    locked.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_has_the_receptors_fields() {
    let (bbs, _dir) = start(None).await;
    let r = original_client(bbs.api_addr, "GET", "/v1/version", None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["lattice_release"], "v0.7.0", "as configured");
    assert_eq!(
        v["version"],
        lattice_bbs::api::VERSION,
        "the existing field stays"
    );
    for field in [
        "lattice_release_image",
        "cf_release",
        "diego_release",
        "garden_linux_release",
        "cf_routing_release",
        "receptor",
        "ltc",
    ] {
        let s = v[field].as_str().unwrap_or_else(|| panic!("{field}: {v}"));
        assert!(s.contains("lattice-rs"), "{field}: {s}");
    }
    bbs.shutdown().await;
    // By default, what `lattice --version` says.
    let dir = tempfile::tempdir().unwrap();
    let plain = server::start(BbsConfig::loopback(
        StoreUrl::File(dir.path().join("bbs.db")),
        Duration::from_secs(2),
    ))
    .await
    .unwrap();
    let v = original_client(plain.api_addr, "GET", "/v1/version", None)
        .await
        .json();
    assert_eq!(v["lattice_release"], lattice_bbs::api::VERSION);
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_clients_null_bodies_and_bare_answers() {
    let (bbs, _dir) = start(None).await;
    let addr = bbs.api_addr;
    let bare = |r: &common::Resp, status: u16| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.content_type, "", "no Content-Type on a bare {status}");
        assert!(r.body.is_empty(), "{}", r.body);
    };
    let r = original_client(addr, "PUT", "/v1/domains/lattice", None).await;
    bare(&r, 204);
    let lrp = json!({
        "process_guid": "quirk", "domain": "lattice", "rootfs": "preloaded:busybox",
        "instances": 1, "action": {"run": {"path": "/bin/true"}}, "cpu_weight": 100,
        "log_guid": "quirk", "metrics_guid": "quirk",
    });
    bare(
        &original_client(addr, "POST", "/v1/desired_lrps", Some(&lrp)).await,
        201,
    );
    for path in [
        "/v1/desired_lrps",
        "/v1/desired_lrps/quirk",
        "/v1/actual_lrps",
        "/v1/actual_lrps/quirk",
        "/v1/cells",
        "/v1/tasks",
        "/v1/version",
    ] {
        let r = original_client(addr, "GET", path, None).await;
        assert_eq!(r.status, 200, "GET {path} with a null body: {}", r.body);
        assert!(r.content_type.starts_with("application/json"), "{path}");
    }
    let update = json!({"instances": 2});
    bare(
        &original_client(addr, "PUT", "/v1/desired_lrps/quirk", Some(&update)).await,
        204,
    );
    let routes = json!({"routes": {"cf-router": []}});
    bare(
        &original_client(addr, "PUT", "/v1/desired_lrps/quirk", Some(&routes)).await,
        204,
    );
    bare(
        &original_client(addr, "DELETE", "/v1/desired_lrps/quirk", None).await,
        204,
    );
    // A task as the original `ltc submit-task` re-marshals it: empty strings too.
    let task = json!({
        "action": {"run": {"path": "/bin/true"}}, "completion_callback_url": "",
        "cpu_weight": 0, "disk_mb": 0, "domain": "lattice", "log_guid": "", "log_source": "",
        "metrics_guid": "", "memory_mb": 0, "result_file": "", "task_guid": "t1",
        "rootfs": "preloaded:busybox", "privileged": false,
    });
    bare(
        &original_client(addr, "POST", "/v1/tasks", Some(&task)).await,
        201,
    );
    let r = original_client(addr, "GET", "/v1/tasks/t1", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "PENDING");
    bare(
        &original_client(addr, "POST", "/v1/tasks/t1/cancel", None).await,
        204,
    );
    assert_eq!(
        original_client(addr, "GET", "/v1/tasks/t1", None)
            .await
            .json()["state"],
        "COMPLETED"
    );
    bare(
        &original_client(addr, "DELETE", "/v1/tasks/t1", None).await,
        204,
    );
    // Errors stay JSON with the receptor's names.
    let r = original_client(addr, "GET", "/v1/tasks/t1", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["name"], "TaskNotFound");
    bbs.shutdown().await;
}
