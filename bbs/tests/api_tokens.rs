//! API tokens, roles and scoped backup credentials over real HTTP: what each role may
//! do, the receptor-shaped 401 and 403, what a viewer sees, the audit line of every
//! change, and a backup task's own credential reaching only its blob and verb.

mod common;

use std::time::Duration;

use common::client::{assert_error, make_token, record, start, As, Auth};
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::DEBUG_LOG_GUID;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_token_may_do_and_see() {
    let (bbs, _dir) = start(None, false).await;
    // Without --basic-auth, the caller over loopback is the local trusted admin.
    let local = As::new(&bbs, Auth::None);
    let viewer = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "eve", "viewer").await),
    );
    let dev = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "dan", "developer").await),
    );
    let admin = As::new(&bbs, Auth::Bearer(make_token(&local, "ada", "admin").await));

    // The viewer follows the events: the app's secrets stay hidden there too.
    let mut events = reqwest::Client::new()
        .get(format!("http://{}/v1/events", bbs.api_addr))
        .bearer_auth(match &viewer.auth {
            Auth::Bearer(t) => t.clone(),
            _ => unreachable!(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut app = common::lrp("web", 1);
    app["env"] = json!([{"name": "DB_PASSWORD", "value": "hunter2"}]);
    app["setup"] =
        json!({"download": {"from": "http://user:s3cret@files.example/app.tgz", "to": "/app"}});
    let (status, body) = dev.send("POST", "/v1/desired_lrps", Some(app)).await;
    assert_eq!(status, 201, "{body}");

    let mut seen = String::new();
    while !seen.contains("DB_PASSWORD") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("the app's event within 10 s")
            .unwrap()
            .expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !seen.contains("hunter2") && !seen.contains("s3cret"),
        "{seen}"
    );
    assert!(seen.contains("[hidden]"), "{seen}");
    drop(events);

    // A viewer reads, without the secrets.
    for path in ["/v1/desired_lrps/web", "/v1/desired_lrps"] {
        let (status, body) = viewer.send("GET", path, None).await;
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(
            text.contains("DB_PASSWORD") && text.contains("[hidden]"),
            "{text}"
        );
    }
    let (_, body) = dev.send("GET", "/v1/desired_lrps/web", None).await;
    assert_eq!(
        body["env"][0]["value"], "hunter2",
        "a developer sees its app whole"
    );

    // … and may not scale.
    let scale = json!({"instances": 3});
    let why = assert_error(
        &viewer
            .send("PUT", "/v1/desired_lrps/web", Some(scale.clone()))
            .await,
        403,
        ErrorName::Forbidden,
    );
    assert!(
        why.contains("a viewer token may not change anything"),
        "{why}"
    );
    assert_eq!(
        dev.send("PUT", "/v1/desired_lrps/web", Some(scale)).await.0,
        204
    );

    // A developer may not change cluster settings nor manage tokens.
    let why = assert_error(
        &dev.send("PUT", "/v1/domains/apps", None).await,
        403,
        ErrorName::Forbidden,
    );
    assert!(
        why.contains("developer token may not change cluster settings"),
        "{why}"
    );
    assert_error(
        &dev.send("GET", "/v1/tokens", None).await,
        403,
        ErrorName::Forbidden,
    );
    assert_eq!(admin.send("PUT", "/v1/domains/apps", None).await.0, 204);

    // Tokens are listed without their secrets; a revoked one is refused at once.
    let (status, list) = admin.send("GET", "/v1/tokens", None).await;
    assert_eq!(status, 200);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, ["ada", "dan", "eve"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none()),
        "{list}"
    );
    assert_eq!(admin.send("DELETE", "/v1/tokens/eve", None).await.0, 204);
    let why = assert_error(
        &viewer.send("GET", "/v1/desired_lrps", None).await,
        401,
        ErrorName::Unauthorized,
    );
    assert!(why.contains("unknown or revoked token"), "{why}");
    assert_error(
        &admin.send("DELETE", "/v1/tokens/eve", None).await,
        404,
        ErrorName::TokenNotFound,
    );
    // A wrong token is refused even over loopback.
    let stranger = As::new(&bbs, Auth::Bearer("lat_nope".into()));
    assert_error(
        &stranger.send("GET", "/v1/tasks", None).await,
        401,
        ErrorName::Unauthorized,
    );

    // Every change left its audit line, in what `ltc debug-logs` shows.
    let audit: Vec<String> = bbs
        .logs
        .recent(DEBUG_LOG_GUID)
        .into_iter()
        .filter(|m| m.source == "AUDIT")
        .map(|m| m.message)
        .collect();
    for want in [
        "token=dan role=developer verb=POST object=/v1/desired_lrps",
        "token=dan role=developer verb=PUT object=/v1/desired_lrps/web",
        "token=ada role=admin verb=PUT object=/v1/domains/apps",
        "token=ada role=admin verb=DELETE object=/v1/tokens/eve",
    ] {
        assert!(audit.iter().any(|l| l == want), "no {want:?} in {audit:#?}");
    }
    assert!(
        !audit.iter().any(|l| l.contains("role=viewer")),
        "refusals change nothing: {audit:#?}"
    );
    let (_, metrics) = local.send("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("bbs_api_changes_total{role=\"developer\",verb=\"PUT\"}"),
        "{metrics}"
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_stays_an_admin_and_closes_loopback() {
    let (bbs, _dir) = start(Some("admin:pw"), false).await;
    let basic = As::new(&bbs, Auth::Basic("admin".into(), "pw".into()));
    let nobody = As::new(&bbs, Auth::None);
    assert_error(
        &nobody.send("GET", "/v1/tasks", None).await,
        401,
        ErrorName::Unauthorized,
    );
    let dev = As::new(
        &bbs,
        Auth::Bearer(make_token(&basic, "dan", "developer").await),
    );
    assert_eq!(dev.send("GET", "/v1/tasks", None).await.0, 200);
    assert_eq!(basic.send("PUT", "/v1/domains/apps", None).await.0, 204);
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_tasks_credential_reaches_only_its_blob_and_verb() {
    let (bbs, _dir) = start(Some("admin:pw"), true).await;
    let admin = As::new(&bbs, Auth::Basic("admin".into(), "pw".into()));
    let http = reqwest::Client::new();
    let base = format!("http://{}", bbs.api_addr);
    let put = |name: &str, body: &'static [u8]| {
        http.put(format!("{base}/v1/blobs/{name}"))
            .basic_auth("admin", Some("pw"))
            .body(body)
            .send()
    };
    let sum = put("backup-b1.tgz", b"archive one")
        .await
        .unwrap()
        .headers()["x-checksum-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        put("backup-other.tgz", b"someone else's")
            .await
            .unwrap()
            .status(),
        201
    );
    let (status, body) = admin
        .send("POST", "/v1/backups/import", Some(record("b1", &sum)))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = admin.send("POST", "/v1/backups/b1/verify", None).await;
    assert_eq!(status, 201, "{started}");
    let guid = started["task_guid"].as_str().unwrap().to_string();

    // The task carries its own credential, never the API's.
    let (_, tasks) = admin.send("GET", "/v1/tasks", None).await;
    let text = tasks.to_string();
    assert!(
        !text.contains("admin:pw") && !text.contains(":pw@"),
        "{text}"
    );
    let start = text
        .find("http://lattice-task:")
        .expect("a task credential");
    let url = &text[start..start + text[start..].find('"').unwrap()];
    let url = reqwest::Url::parse(url).unwrap();
    assert_eq!(url.path(), "/v1/blobs/backup-b1.tgz");
    let task = As::new(
        &bbs,
        Auth::Basic("lattice-task".into(), url.password().unwrap().into()),
    );
    let blob = |name: &str| format!("/v1/blobs/{name}");

    // It downloads its blob…
    let (status, body) = task.send("GET", &blob("backup-b1.tgz"), None).await;
    assert_eq!((status, body), (200, Value::String("archive one".into())));
    // … and nothing else: not another blob, not an upload, not a delete, no API.
    for (method, path) in [
        ("GET", blob("backup-other.tgz")),
        ("PUT", blob("backup-b1.tgz")),
        ("DELETE", blob("backup-b1.tgz")),
        ("GET", "/v1/tasks".to_string()),
    ] {
        let why = assert_error(
            &task.send(method, &path, None).await,
            401,
            ErrorName::Unauthorized,
        );
        assert!(why.contains("task credential"), "{method} {path}: {why}");
    }
    // A viewer sees the task without the credential.
    let viewer = As::new(
        &bbs,
        Auth::Bearer(make_token(&admin, "eve", "viewer").await),
    );
    let (_, seen) = viewer.send("GET", &format!("/v1/tasks/{guid}"), None).await;
    assert!(
        !seen.to_string().contains(url.password().unwrap()),
        "{seen}"
    );

    // It expires with its task.
    assert_eq!(
        admin
            .send("POST", &format!("/v1/tasks/{guid}/cancel"), None)
            .await
            .0,
        204
    );
    assert_error(
        &task.send("GET", &blob("backup-b1.tgz"), None).await,
        401,
        ErrorName::Unauthorized,
    );

    // Deleting a backup takes an admin.
    let dev = As::new(
        &bbs,
        Auth::Bearer(make_token(&admin, "dan", "developer").await),
    );
    let why = assert_error(
        &dev.send("DELETE", "/v1/backups/b1", None).await,
        403,
        ErrorName::Forbidden,
    );
    assert!(why.contains("may not delete backups or blobs"), "{why}");
    assert_error(
        &dev.send("DELETE", &blob("backup-other.tgz"), None).await,
        403,
        ErrorName::Forbidden,
    );
    assert_eq!(admin.send("DELETE", "/v1/backups/b1", None).await.0, 204);
    bbs.shutdown().await;
}
