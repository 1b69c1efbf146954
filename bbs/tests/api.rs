//! The public JSON API over real HTTP, checked the way old receptor clients
//! see it: exact request bytes in, status codes, content types, error names
//! and field names out.

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_specs::errors::ErrorName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(auth: Option<&str>) -> (RunningBbs, tempfile::TempDir) {
    start_with_blobs(auth, false).await
}

async fn start_with_blobs(auth: Option<&str>, blobs: bool) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("bbs.db")).unwrap());
    let cfg = BbsConfig {
        basic_auth: auth.map(String::from),
        blob_dir: blobs.then(|| dir.path().join("blobs")),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start_with_store(store, cfg).await.unwrap(), dir)
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Send exactly these request bytes (plus Host and Connection: close) and read the whole response.
async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A hung answer fails the test with what was asked instead of hanging the suite.
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("no whole answer to {method} {path} within 60 s"))
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| l.split_once(": ").unwrap())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

const LRP: &str = r#"{"process_guid":"web","domain":"apps","rootfs":"docker:///cloudfoundry/lattice-app#latest","instances":2,
 "env":[{"name":"PORT","value":"8080"}],"setup":{"download":{"from":"http://x/app.tgz","to":"/app"}},
 "action":{"run":{"path":"/lattice-app","args":[],"resource_limits":{"nofile":1024}}},
 "monitor":{"run":{"path":"/bin/nc","args":["-z","0.0.0.0","8080"]}},"start_timeout":60,"disk_mb":128,"memory_mb":64,
 "cpu_weight":50,"privileged":false,"ports":[8080],
 "routes":{"cf-router":[{"hostnames":["web.lattice.localhost"],"port":8080}]},"log_guid":"web","log_source":"APP",
 "metrics_guid":"web","annotation":"v1","egress_rules":[{"protocol":"tcp","destinations":["0.0.0.0/0"],"ports":[80,443]}]}"#;

const TASK: &str = r#"{"task_guid":"task-1","domain":"apps","rootfs":"preloaded:busybox",
 "action":{"run":{"path":"sh","args":["-c","echo hi > /tmp/result"]}},"env":[{"name":"A","value":"1"}],
 "cpu_weight":0,"disk_mb":10,"memory_mb":10,"log_guid":"t","log_source":"TASK","metrics_guid":"",
 "result_file":"/tmp/result","completion_callback_url":"","annotation":"a","privileged":false}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptor_requests_get_receptor_answers() {
    let (bbs, _dir) = start(None).await;
    let a = bbs.api_addr;

    // (method, path, headers, body, status, json response?, error name)
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
        Option<&'static str>,
        u16,
        bool,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/desired_lrps",
            vec![JSON],
            Some(LRP),
            201,
            false,
            None,
        ),
        (
            "POST",
            "/v1/desired_lrps",
            vec![JSON],
            Some(LRP),
            409,
            true,
            Some(ErrorName::DesiredLRPAlreadyExists.as_str()),
        ),
        (
            "POST",
            "/v1/desired_lrps",
            vec![JSON],
            Some("{not json"),
            400,
            true,
            Some(ErrorName::InvalidJSON.as_str()),
        ),
        (
            "POST",
            "/v1/desired_lrps",
            vec![JSON],
            Some(r#"{"process_guid":"x y"}"#),
            400,
            true,
            Some(ErrorName::InvalidLRP.as_str()),
        ),
        (
            "POST",
            "/v1/desired_lrps",
            vec![JSON],
            Some("null"),
            400,
            true,
            Some(ErrorName::InvalidLRP.as_str()),
        ),
        (
            "GET",
            "/v1/desired_lrps",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/desired_lrps?domain=apps",
            vec![],
            None,
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/desired_lrps/web",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/desired_lrps/nope",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::DesiredLRPNotFound.as_str()),
        ),
        (
            "PUT",
            "/v1/desired_lrps/web",
            vec![JSON],
            Some(r#"{"instances":3,"annotation":"v2"}"#),
            204,
            false,
            None,
        ),
        (
            "PUT",
            "/v1/desired_lrps/web",
            vec![JSON],
            Some(r#"{"instances":-3}"#),
            400,
            true,
            Some(ErrorName::InvalidLRP.as_str()),
        ),
        (
            "PUT",
            "/v1/desired_lrps/nope",
            vec![JSON],
            Some(r#"{"instances":1}"#),
            404,
            true,
            Some(ErrorName::DesiredLRPNotFound.as_str()),
        ),
        (
            "GET",
            "/v1/actual_lrps",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        ("GET", "/v1/actual_lrps/web", vec![], None, 200, true, None),
        (
            "GET",
            "/v1/actual_lrps/web/index/2",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/actual_lrps/web/index/7",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::ActualLRPIndexNotFound.as_str()),
        ),
        (
            "GET",
            "/v1/actual_lrps/web/index/x",
            vec![],
            None,
            400,
            true,
            Some(ErrorName::InvalidRequest.as_str()),
        ),
        (
            "DELETE",
            "/v1/actual_lrps/web/index/2",
            vec![JSON],
            Some("null"),
            204,
            false,
            None,
        ),
        (
            "DELETE",
            "/v1/actual_lrps/web/index/2",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::ActualLRPIndexNotFound.as_str()),
        ),
        (
            "POST",
            "/v1/tasks",
            vec![JSON],
            Some(TASK),
            201,
            false,
            None,
        ),
        (
            "POST",
            "/v1/tasks",
            vec![JSON],
            Some(TASK),
            409,
            true,
            Some(ErrorName::TaskGuidAlreadyExists.as_str()),
        ),
        (
            "POST",
            "/v1/tasks",
            vec![JSON],
            Some(r#"{"task_guid":"t2","rootfs":"preloaded:busybox"}"#),
            400,
            true,
            Some(ErrorName::InvalidTask.as_str()),
        ),
        (
            "GET",
            "/v1/tasks",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/tasks?domain=apps",
            vec![],
            None,
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/tasks/task-1",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        (
            "GET",
            "/v1/tasks/nope",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::TaskNotFound.as_str()),
        ),
        (
            "DELETE",
            "/v1/tasks/task-1",
            vec![JSON],
            Some("null"),
            409,
            true,
            Some(ErrorName::TaskNotDeletable.as_str()),
        ),
        (
            "POST",
            "/v1/tasks/task-1/cancel",
            vec![JSON],
            Some("null"),
            204,
            false,
            None,
        ),
        (
            "POST",
            "/v1/tasks/task-1/cancel",
            vec![],
            None,
            409,
            true,
            Some(ErrorName::TaskNotCancelable.as_str()),
        ),
        (
            "POST",
            "/v1/tasks/nope/cancel",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::TaskNotFound.as_str()),
        ),
        (
            "DELETE",
            "/v1/tasks/task-1",
            vec![JSON],
            Some("null"),
            204,
            false,
            None,
        ),
        (
            "DELETE",
            "/v1/tasks/task-1",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::TaskNotFound.as_str()),
        ),
        (
            "PUT",
            "/v1/domains/apps",
            vec![JSON, ("Cache-Control", "max-age=60")],
            Some("null"),
            204,
            false,
            None,
        ),
        ("PUT", "/v1/domains/forever", vec![], None, 204, false, None),
        (
            "PUT",
            "/v1/domains/bad",
            vec![("Cache-Control", "max-age=soon")],
            None,
            400,
            true,
            Some(ErrorName::InvalidRequest.as_str()),
        ),
        (
            "GET",
            "/v1/domains",
            vec![JSON],
            Some("null"),
            200,
            true,
            None,
        ),
        ("GET", "/v1/cells", vec![], None, 200, true, None),
        ("GET", "/v1/version", vec![], None, 200, true, None),
        (
            "DELETE",
            "/v1/desired_lrps/web",
            vec![JSON],
            Some("null"),
            204,
            false,
            None,
        ),
        (
            "DELETE",
            "/v1/desired_lrps/web",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::DesiredLRPNotFound.as_str()),
        ),
        (
            "GET",
            "/v2/whatever",
            vec![],
            None,
            404,
            true,
            Some(ErrorName::NotFound.as_str()),
        ),
    ];
    for (method, path, headers, body, status, json, name) in cases {
        let r = raw(a, method, path, &headers, body).await;
        let what = format!("{method} {path} {body:?}");
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if json {
            assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
            let v = r.json();
            if let Some(n) = name {
                assert_eq!(v["name"], n, "{what}: {v}");
                assert!(
                    v["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{what}: a message says what was wrong"
                );
            }
        } else {
            assert_eq!(
                r.header("content-type"),
                None,
                "{what}: no content type on empty answers"
            );
            assert!(r.body.is_empty(), "{what}: empty body, got {:?}", r.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_use_receptor_field_names() {
    let (bbs, _dir) = start(None).await;
    let a = bbs.api_addr;
    assert_eq!(
        raw(a, "POST", "/v1/desired_lrps", &[JSON], Some(LRP))
            .await
            .status,
        201
    );
    assert_eq!(
        raw(a, "POST", "/v1/tasks", &[JSON], Some(TASK))
            .await
            .status,
        201
    );

    let d = raw(a, "GET", "/v1/desired_lrps/web", &[], None)
        .await
        .json();
    for f in [
        "process_guid",
        "domain",
        "rootfs",
        "instances",
        "env",
        "setup",
        "action",
        "monitor",
        "start_timeout",
        "disk_mb",
        "memory_mb",
        "cpu_weight",
        "privileged",
        "ports",
        "routes",
        "log_guid",
        "log_source",
        "metrics_guid",
        "annotation",
        "egress_rules",
        "modification_tag",
    ] {
        assert!(d.get(f).is_some(), "DesiredLRPResponse lacks {f}: {d}");
    }
    assert_eq!(
        d["routes"]["cf-router"][0]["hostnames"][0],
        "web.lattice.localhost"
    );
    assert_eq!(d["setup"]["download"]["to"], "/app");
    assert_eq!(d["action"]["run"]["resource_limits"]["nofile"], 1024);
    assert_eq!(d["start_timeout"], 60);
    assert!(d["modification_tag"]["epoch"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));

    let actuals = raw(a, "GET", "/v1/actual_lrps/web", &[], None).await.json();
    assert_eq!(actuals.as_array().unwrap().len(), 2);
    for f in [
        "process_guid",
        "instance_guid",
        "cell_id",
        "domain",
        "index",
        "address",
        "ports",
        "state",
        "crash_count",
        "crash_reason",
        "placement_error",
        "since",
        "evacuating",
        "modification_tag",
    ] {
        assert!(actuals[0].get(f).is_some(), "ActualLRPResponse lacks {f}");
    }
    assert_eq!(actuals[0]["state"], "UNCLAIMED");

    let t = raw(a, "GET", "/v1/tasks/task-1", &[], None).await.json();
    for f in [
        "task_guid",
        "domain",
        "rootfs",
        "action",
        "env",
        "cpu_weight",
        "disk_mb",
        "memory_mb",
        "log_guid",
        "log_source",
        "metrics_guid",
        "result_file",
        "completion_callback_url",
        "annotation",
        "privileged",
        "cell_id",
        "created_at",
        "failed",
        "failure_reason",
        "result",
        "state",
    ] {
        assert!(t.get(f).is_some(), "TaskResponse lacks {f}: {t}");
    }
    assert_eq!(t["state"], "PENDING");
    assert_eq!(
        t["cpu_weight"], 100,
        "cpu_weight 0 means the default weight"
    );
    assert_eq!(t["env"][0]["name"], "A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_the_api_when_configured() {
    let (bbs, _dir) = start(Some("admin:s3cret")).await;
    let a = bbs.api_addr;
    let r = raw(a, "GET", "/v1/tasks", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["name"], ErrorName::Unauthorized.as_str());
    assert!(r.header("www-authenticate").is_some());
    // "admin:wrong" and "admin:s3cret" in base64
    let r = raw(
        a,
        "GET",
        "/v1/tasks",
        &[("Authorization", "Basic YWRtaW46d3Jvbmc=")],
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["name"].as_str()),
        (401, Some(ErrorName::Unauthorized.as_str()))
    );
    let r = raw(
        a,
        "GET",
        "/v1/tasks",
        &[("Authorization", "Basic YWRtaW46czNjcmV0")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        raw(a, "GET", "/metrics", &[], None).await.status,
        200,
        "metrics stay scrapeable"
    );
    let ready = raw(a, "GET", "/readyz", &[], None).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready\n"),
        "readiness is probed without credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_as_server_sent_events() {
    let (bbs, _dir) = start(None).await;
    let a = bbs.api_addr;
    let mut resp = reqwest::get(format!("http://{a}/v1/events")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        raw(a, "POST", "/v1/desired_lrps", &[JSON], Some(LRP))
            .await
            .status,
        201
    );
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while text.matches("event: actual_lrp_created").count() < 2 {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("event: desired_lrp_created"), "{text}");
    let data = text
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("desired_lrp"))
        .unwrap();
    let v: Value = serde_json::from_str(&data["data: ".len()..]).unwrap();
    assert_eq!(v["desired_lrp"]["process_guid"], "web");
    assert!(
        text.lines().any(|l| l.starts_with("id: ")),
        "events carry the store revision as id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_call() {
    let (bbs, _dir) = start(None).await;
    let a = bbs.api_addr;
    raw(a, "GET", "/v1/tasks/nope", &[], None).await;
    let m = raw(a, "GET", "/metrics", &[], None).await.body;
    assert!(
        m.contains(r#"bbs_requests_total{api="http",call="GET /v1/tasks/{task_guid}"}"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"bbs_request_errors_total{api="http",call="GET /v1/tasks/{task_guid}",error="404"}"#
        ),
        "{m}"
    );
    assert!(m.contains("bbs_request_duration_seconds_bucket"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_with_event_subscribers_connected() {
    let (bbs, _dir) = start(None).await;
    let mut sse = reqwest::get(format!("http://{}/v1/events", bbs.api_addr))
        .await
        .unwrap();
    let mut grpc =
        lattice_specs::bbs_api::bbs_client::BbsClient::connect(format!("http://{}", bbs.grpc_addr))
            .await
            .unwrap();
    let mut stream = grpc
        .subscribe_events(lattice_specs::bbs_api::SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), bbs.shutdown())
        .await
        .expect("shutdown waited on event streams");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        t0.elapsed()
    );
    // Both streams end instead of hanging.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), stream.message())
            .await
            .is_ok()
    );
    assert!(tokio::time::timeout(Duration::from_secs(2), sse.chunk())
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_store_keeps_archives_with_their_checksums() {
    let (bbs, _dir) = start_with_blobs(Some("admin:pw"), true).await;
    let base = format!("http://{}/v1/blobs", bbs.api_addr);
    let c = reqwest::Client::new();
    let body = vec![42u8; 3 << 20]; // bigger than any JSON body limit
    let sum = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&body))
    };

    // Auth as the rest of the API.
    // Auth as the rest of the API.
    let r = c.put(format!("{base}/b1")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = c
        .put(format!("{base}/b1"))
        .basic_auth("admin", Some("pw"))
        .header("x-checksum-sha256", &sum)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-checksum-sha256"], sum.as_str());
    assert_eq!(r.bytes().await.unwrap().len(), 0, "201 with an empty body");

    let r = c
        .get(format!("{base}/b1"))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-checksum-sha256"], sum.as_str());
    assert_eq!(r.bytes().await.unwrap(), body);

    // A body that does not match its checksum is refused and not kept.
    let r = c
        .put(format!("{base}/b2"))
        .basic_auth("admin", Some("pw"))
        .header("x-checksum-sha256", &sum)
        .body(b"something else".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["name"], ErrorName::ChecksumMismatch.as_str());
    let list: Value = c
        .get(&base)
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "b1");
    assert_eq!(list[0]["size"], 3 << 20);
    assert_eq!(list[0]["sha256"], sum.as_str());

    let del = |name: &str| {
        c.delete(format!("{base}/{name}"))
            .basic_auth("admin", Some("pw"))
            .send()
    };
    assert_eq!(del("b1").await.unwrap().status(), 204);
    let r = del("b1").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["name"],
        ErrorName::BlobNotFound.as_str()
    );
    let r = c
        .put(format!("{base}/..bad"))
        .basic_auth("admin", Some("pw"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    bbs.shutdown().await;

    // A BBS without a blob directory says how to get one.
    let (bbs, _dir) = start(None).await;
    let r = reqwest::get(format!("http://{}/v1/blobs", bbs.api_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["name"], ErrorName::BlobStoreUnavailable.as_str());
    assert!(e["message"].as_str().unwrap().contains("--blob-dir"));
    bbs.shutdown().await;
}

/// `lattice up` holds its API closed until its cell registered: with `api_opens`, a
/// client's request waits (in the listen backlog) until it opens, then is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_api_answers_only_once_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (open, opens) = tokio::sync::watch::channel(false);
    let cfg = BbsConfig {
        api_opens: Some(opens),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    let bbs = server::start(cfg).await.unwrap();
    let asked = tokio::spawn(raw(bbs.api_addr, "GET", "/v1/version", &[], None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "answered before the API opened");
    open.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .expect("answered once opened")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    bbs.shutdown().await;
}
