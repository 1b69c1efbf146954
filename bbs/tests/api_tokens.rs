//! API tokens, roles and scoped backup credentials over real HTTP: what each role may
//! do, the receptor-shaped 401 and 403, what a viewer sees, the audit line of every
//! change, and a backup task's own credential reaching only its blob and verb.

mod common;

use std::time::Duration;

use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::DEBUG_LOG_GUID;
use serde_json::{json, Value};

async fn start(auth: Option<&str>, blobs: bool) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        basic_auth: auth.map(String::from),
        blob_dir: blobs.then(|| dir.path().join("blobs")),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("state").join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

/// A client of one API, authenticating as told.
struct As {
    base: String,
    auth: Auth,
    http: reqwest::Client,
}

#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl As {
    fn new(bbs: &RunningBbs, auth: Auth) -> As {
        As {
            base: format!("http://{}", bbs.api_addr),
            auth,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        r = match &self.auth {
            Auth::None => r,
            Auth::Bearer(t) => r.bearer_auth(t),
            Auth::Basic(u, p) => r.basic_auth(u, Some(p)),
        };
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// The receptor's error shape: exactly `name` and `message`.
fn assert_error(answer: &(u16, Value), status: u16, name: ErrorName) -> String {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["name"], name.as_str(), "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only name and message: {body}"
    );
    body["message"].as_str().unwrap().to_string()
}

async fn make_token(admin: &As, name: &str, role: &str) -> String {
    let (status, body) = admin
        .send(
            "POST",
            "/v1/tokens",
            Some(json!({"name": name, "role": role})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["role"].as_str()),
        (Some(name), Some(role))
    );
    body["token"].as_str().unwrap().to_string()
}

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

/// The archive's record, as `ltc backup export` writes it.
fn record(id: &str, checksum: &str) -> Value {
    json!({"id": id, "volume": "pg", "state": "COMPLETED", "checksum": checksum,
           "manifest": "0".repeat(64), "created_at": 1})
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

// ------------------------------------------------------------------ ownership

fn bearer(bbs: &RunningBbs, token: String) -> As {
    As::new(bbs, Auth::Bearer(token))
}

fn with_secret(mut v: Value, secret: &str) -> Value {
    v["env"] = json!([{"name": "SECRET", "value": secret}]);
    v
}

/// A refusal for not owning the object: 403 Forbidden naming the token, what it
/// asked and the owner.
async fn refused_not_owner(answer: (u16, Value), want: &str) {
    let why = assert_error(&answer, 403, ErrorName::Forbidden);
    assert!(why.contains(want), "want {want:?} in {why:?}");
}

/// `who` makes something (201).
async fn made(who: &As, path: &str, body: Value) {
    let (status, body) = who.send("POST", path, Some(body)).await;
    assert_eq!(status, 201, "{path}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_acts_only_on_the_apps_and_tasks_it_owns() {
    let (bbs, _dir) = start(None, false).await;
    let local = As::new(&bbs, Auth::None);
    let token_b = make_token(&local, "dev-b", "developer").await;
    let dev_a = bearer(&bbs, make_token(&local, "dev-a", "developer").await);
    let dev_b = bearer(&bbs, token_b.clone());
    let admin = bearer(&bbs, make_token(&local, "ada", "admin").await);

    // dev-b follows the events: another's secrets are hidden there, its own are not.
    let mut events = reqwest::Client::new()
        .get(format!("http://{}/v1/events", bbs.api_addr))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    made(
        &dev_a,
        "/v1/desired_lrps",
        with_secret(common::lrp("web", 1), "a-app-secret"),
    )
    .await;
    made(
        &dev_b,
        "/v1/desired_lrps",
        with_secret(common::lrp("api", 1), "b-app-secret"),
    )
    .await;
    made(
        &dev_a,
        "/v1/tasks",
        with_secret(common::task("job"), "a-task-secret"),
    )
    .await;
    made(&local, "/v1/desired_lrps", common::lrp("sys", 1)).await;

    let mut seen = String::new();
    while !(seen.contains("\"web\"") && seen.contains("\"api\"") && seen.contains("\"job\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("the events within 10 s")
            .unwrap()
            .expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(events);
    assert!(seen.contains("b-app-secret"), "its own app whole: {seen}");
    assert!(
        !seen.contains("a-app-secret") && !seen.contains("a-task-secret"),
        "{seen}"
    );

    // dev-b may not change, scale, stop or delete dev-a's app, nor cancel its task…
    let scale = json!({"instances": 3});
    for (method, path, body, want) in [
        (
            "PUT",
            "/v1/desired_lrps/web",
            Some(scale.clone()),
            "token dev-b may not change app web: it belongs to dev-a",
        ),
        (
            "DELETE",
            "/v1/desired_lrps/web",
            None,
            "token dev-b may not delete app web: it belongs to dev-a",
        ),
        (
            "DELETE",
            "/v1/actual_lrps/web/index/0",
            None,
            "may not stop an instance of app web",
        ),
        (
            "POST",
            "/v1/tasks/job/cancel",
            None,
            "token dev-b may not cancel task job: it belongs to dev-a",
        ),
        ("DELETE", "/v1/tasks/job", None, "may not delete task job"),
    ] {
        refused_not_owner(dev_b.send(method, path, body).await, want).await;
    }
    // … nor the admins' app.
    refused_not_owner(
        dev_a.send("DELETE", "/v1/desired_lrps/sys", None).await,
        "may not delete app sys: it belongs to the admins (ask an admin)",
    )
    .await;
    // What does not exist is a 404, not a refusal.
    assert_error(
        &dev_b.send("DELETE", "/v1/desired_lrps/nope", None).await,
        404,
        ErrorName::DesiredLRPNotFound,
    );

    // It reads them, with their secrets hidden; the owner reads them whole.
    for path in [
        "/v1/desired_lrps",
        "/v1/desired_lrps/web",
        "/v1/tasks",
        "/v1/tasks/job",
    ] {
        let (status, body) = dev_b.send("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains("a-app-secret") && !text.contains("a-task-secret"),
            "{path}: {text}"
        );
        assert!(text.contains("[hidden]"), "{path}: {text}");
    }
    let (_, list) = dev_b.send("GET", "/v1/desired_lrps", None).await;
    assert!(
        list.to_string().contains("b-app-secret"),
        "its own app whole: {list}"
    );
    let (_, web) = dev_a.send("GET", "/v1/desired_lrps/web", None).await;
    assert_eq!(web["env"][0]["value"], "a-app-secret");
    // Answers name each owner (none: the admins').
    let owner_of = |list: &Value, guid: &str| {
        let item = list
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["process_guid"] == guid);
        item.unwrap().get("owner").cloned()
    };
    assert_eq!(web["owner"], "dev-a");
    assert_eq!(owner_of(&list, "api"), Some(json!("dev-b")));
    assert_eq!(owner_of(&list, "sys"), None);
    let (_, tasks) = dev_b.send("GET", "/v1/tasks", None).await;
    assert_eq!(tasks[0]["owner"], "dev-a", "{tasks}");
    let (_, job) = dev_a.send("GET", "/v1/tasks/job", None).await;
    assert_eq!(job["env"][0]["value"], "a-task-secret");

    // The owner and an admin act on it.
    assert_eq!(
        dev_a
            .send("PUT", "/v1/desired_lrps/web", Some(scale.clone()))
            .await
            .0,
        204
    );
    assert_eq!(
        dev_b
            .send("PUT", "/v1/desired_lrps/api", Some(scale.clone()))
            .await
            .0,
        204
    );
    assert_eq!(
        admin
            .send("PUT", "/v1/desired_lrps/web", Some(scale))
            .await
            .0,
        204
    );
    assert_eq!(
        dev_a.send("POST", "/v1/tasks/job/cancel", None).await.0,
        204
    );

    // Its owner goes with the app: a namesake belongs to whoever makes it.
    assert_eq!(
        admin.send("DELETE", "/v1/desired_lrps/web", None).await.0,
        204
    );
    made(&dev_b, "/v1/desired_lrps", common::lrp("web", 1)).await;
    assert_eq!(
        dev_b.send("DELETE", "/v1/desired_lrps/web", None).await.0,
        204
    );

    // Refusals change nothing, leave no audit line and are counted.
    let audit: Vec<String> = bbs
        .logs
        .recent(DEBUG_LOG_GUID)
        .into_iter()
        .filter(|m| m.source == "AUDIT")
        .map(|m| m.message)
        .collect();
    assert!(
        !audit
            .iter()
            .any(|l| l.contains("token=dev-b") && l.contains("object=/v1/tasks/job")),
        "{audit:#?}"
    );
    let (_, metrics) = local.send("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("bbs_api_not_owner_total{kind=\"app\"}"),
        "{metrics}"
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_backups_and_schedules_belong_to_the_volumes_owner() {
    let (bbs, _dir) = start(None, true).await;
    let local = As::new(&bbs, Auth::None);
    let dev_a = bearer(&bbs, make_token(&local, "dev-a", "developer").await);
    let dev_b = bearer(&bbs, make_token(&local, "dev-b", "developer").await);
    let cell = lattice_specs::models::CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "127.0.0.1:1".into(),
        volume_drivers: vec!["local".into()],
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    let size = lattice_specs::volume::MIN_SIZE;
    let volume = json!({"name": "pg", "size_bytes": size, "cell_id": "cell-1"});
    assert_eq!(dev_a.send("POST", "/v1/volumes", Some(volume)).await.0, 201);
    bbs.db
        .set_volume_state(
            "pg",
            "cell-1",
            lattice_specs::models::volume::State::Ready,
            (size, 0),
            "",
        )
        .await
        .unwrap();

    // dev-b may not grow, remove, schedule, back up or mount dev-a's volume.
    let mut mounting = common::task("peek");
    mounting["volume_mounts"] = json!([{"volume": "pg", "container_path": "/data"}]);
    let schedule = json!({"every": "1h", "keep": 3});
    for (method, path, body, want) in [
        (
            "PUT",
            "/v1/volumes/pg",
            Some(json!({"size_bytes": 2 * size})),
            "token dev-b may not grow volume pg: it belongs to dev-a",
        ),
        ("DELETE", "/v1/volumes/pg", None, "may not delete volume pg"),
        (
            "PUT",
            "/v1/backup_schedules/pg",
            Some(schedule.clone()),
            "may not set the backup schedule of volume pg: it belongs to dev-a",
        ),
        (
            "POST",
            "/v1/backups",
            Some(json!({"volume": "pg"})),
            "may not back up volume pg",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(mounting.clone()),
            "may not mount volume pg",
        ),
    ] {
        refused_not_owner(dev_b.send(method, path, body).await, want).await;
    }
    assert_error(
        &dev_b.send("GET", "/v1/tasks/peek", None).await,
        404,
        ErrorName::TaskNotFound,
    );

    // Its owner may; its backup and the backup's task are dev-a's.
    assert_eq!(
        dev_a
            .send("PUT", "/v1/backup_schedules/pg", Some(schedule))
            .await
            .0,
        204
    );
    let (status, backup) = dev_a
        .send("POST", "/v1/backups", Some(json!({"volume": "pg"})))
        .await;
    assert_eq!(status, 201, "{backup}");
    let (id, task) = (
        backup["id"].as_str().unwrap(),
        backup["task_guid"].as_str().unwrap(),
    );
    for (method, path, want) in [
        (
            "POST",
            format!("/v1/backups/{id}/verify"),
            format!("may not verify backup {id}: it belongs to dev-a"),
        ),
        (
            "POST",
            format!("/v1/tasks/{task}/cancel"),
            format!("may not cancel task {task}"),
        ),
        (
            "GET",
            format!("/v1/blobs/backup-{id}.tgz"),
            format!("may not read backup {id}"),
        ),
        (
            "PUT",
            format!("/v1/blobs/backup-{id}.tgz"),
            format!("may not write backup {id}"),
        ),
    ] {
        refused_not_owner(dev_b.send(method, &path, None).await, &want).await;
    }

    // A scheduled backup of dev-a's volume (started as the brain's schedule does) and
    // its task are dev-a's.
    let blob_url = |n: &str| format!("http://{}/v1/blobs/{n}", bbs.api_addr);
    let scheduled = lattice_bbs::backups::start_backup(
        &bbs.db,
        &blob_url,
        "pg",
        Some("pg-slot-1".into()),
        "slot-1",
    )
    .await
    .unwrap();
    let cancel = format!("/v1/tasks/{}/cancel", scheduled.task_guid);
    refused_not_owner(
        dev_b.send("POST", &cancel, None).await,
        "it belongs to dev-a",
    )
    .await;
    assert_eq!(dev_a.send("POST", &cancel, None).await.0, 204);

    // A backup an admin imported for dev-a's volume is dev-a's to use too, not dev-b's.
    let put = reqwest::Client::new()
        .put(format!("http://{}/v1/blobs/backup-old.tgz", bbs.api_addr))
        .body(&b"old archive"[..])
        .send()
        .await
        .unwrap();
    let sum = put.headers()["x-checksum-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = local
        .send("POST", "/v1/backups/import", Some(record("old", &sum)))
        .await;
    assert_eq!(status, 201, "{body}");
    refused_not_owner(
        dev_b.send("POST", "/v1/backups/old/verify", None).await,
        "may not verify backup old: it belongs to the admins",
    )
    .await;
    let (status, started) = dev_a.send("POST", "/v1/backups/old/verify", None).await;
    assert_eq!(status, 201, "{started}");
    let verify = started["task_guid"].as_str().unwrap();
    assert_eq!(
        dev_a
            .send("POST", &format!("/v1/tasks/{verify}/cancel"), None)
            .await
            .0,
        204
    );
    let (status, archive) = dev_a.send("GET", "/v1/blobs/backup-old.tgz", None).await;
    assert_eq!(
        (status, archive),
        (200, Value::String("old archive".into()))
    );

    // Other blobs are no one's: developers write and read them as before.
    assert_eq!(
        reqwest::Client::new()
            .put(format!("http://{}/v1/blobs/app.tgz", bbs.api_addr))
            .bearer_auth(match &dev_b.auth {
                Auth::Bearer(t) => t.clone(),
                _ => unreachable!(),
            })
            .body(&b"files"[..])
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(dev_a.send("GET", "/v1/blobs/app.tgz", None).await.0, 200);
    assert_eq!(
        dev_a
            .send("DELETE", "/v1/backup_schedules/pg", None)
            .await
            .0,
        204
    );
    bbs.shutdown().await;
}
