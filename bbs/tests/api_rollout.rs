//! Rolling updates through the public API over real HTTP: a new generation (201),
//! in place and unchanged (200), a second update refused while the first rolls,
//! the history, promote and rollback with their error names, what each role may
//! do, and the audit line of every change.

mod common;

use lattice_bbs::serve::ApiLimits;
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::DEBUG_LOG_GUID;
use serde_json::{json, Value};

/// `method path` with `body` as `token` (None: the local admin): status and JSON.
async fn send(
    base: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn token(base: &str, name: &str, role: &str) -> String {
    let body = json!({"name": name, "role": role});
    let (status, t) = send(base, None, "POST", "/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

fn refused(answer: &(u16, Value), status: u16, name: ErrorName) -> String {
    assert_eq!(
        (answer.0, answer.1["name"].as_str()),
        (status, Some(name.as_str())),
        "{}",
        answer.1
    );
    answer.1["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_change_rolls_through_the_api() {
    let (bbs, _dir) = common::start(None, ApiLimits::default()).await;
    let base = format!("http://{}", bbs.api_addr);
    let dev = token(&base, "dan", "developer").await;
    let viewer = token(&base, "eve", "viewer").await;
    let (dev, viewer) = (Some(dev.as_str()), Some(viewer.as_str()));
    let app = common::lrp("web", 2);
    let (status, _) = send(&base, dev, "POST", "/v1/desired_lrps", Some(app.clone())).await;
    assert_eq!(status, 201);
    let path = "/v1/desired_lrps/web/generations";

    // The same definition: 200, nothing changes; more instances: 200, in place.
    let (status, d) = send(&base, dev, "POST", path, Some(json!({"definition": app}))).await;
    assert_eq!((status, d["generation"].as_i64()), (200, Some(1)), "{d}");
    let mut scaled = app.clone();
    scaled["instances"] = json!(3);
    let (status, d) = send(
        &base,
        dev,
        "POST",
        path,
        Some(json!({"definition": scaled})),
    )
    .await;
    assert_eq!((status, d["instances"].as_i64()), (200, Some(3)), "{d}");
    assert!(d.get("deployment").is_none(), "{d}");

    // A new image: generation 2, rolling; a viewer may not, a second one waits.
    let mut v2 = scaled.clone();
    v2["rootfs"] = json!("docker:///nginx");
    let body = json!({"definition": v2, "strategy": {"max_surge": 2}});
    let denied = send(&base, viewer, "POST", path, Some(body.clone())).await;
    refused(&denied, 403, ErrorName::Forbidden);
    let (status, d) = send(&base, dev, "POST", path, Some(body)).await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["generation"], 2);
    assert_eq!(d["rootfs"], "docker:///nginx");
    let dep = &d["deployment"];
    assert_eq!(
        (dep["state"].as_str(), dep["target_generation"].as_i64()),
        (Some("rolling"), Some(2))
    );
    assert_eq!(
        (
            dep["previous_generation"].as_i64(),
            dep["requested_by"].as_str()
        ),
        (Some(1), Some("dan"))
    );
    assert_eq!(
        dep["strategy"],
        json!({"max_surge": 2, "max_unavailable": 0, "canary": 0})
    );
    let mut v3 = v2.clone();
    v3["memory_mb"] = json!(64);
    let busy = send(&base, dev, "POST", path, Some(json!({"definition": v3}))).await;
    let why = refused(&busy, 409, ErrorName::DeploymentInProgress);
    assert!(why.contains("ltc rollback web"), "{why}");
    let bad = json!({"definition": v3, "strategy": {"max_surge": 0}});
    let why = refused(
        &send(&base, dev, "POST", path, Some(bad)).await,
        400,
        ErrorName::InvalidLRP,
    );
    assert!(why.contains("strategy.max_surge"), "{why}");
    let unknown = json!({"definition": v3, "stratgy": {}});
    refused(
        &send(&base, dev, "POST", path, Some(unknown)).await,
        400,
        ErrorName::InvalidJSON,
    );

    // The history, readable by a viewer.
    let (status, h) = send(&base, viewer, "GET", path, None).await;
    assert_eq!(status, 200);
    let h = h.as_array().unwrap().clone();
    let got: Vec<(i64, &str)> = h
        .iter()
        .map(|g| {
            (
                g["generation"].as_i64().unwrap(),
                g["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(1, "superseded"), (2, "current")]);
    assert_eq!(h[1]["created_by"], "dan");
    assert_eq!(h[1]["definition"]["rootfs"], "docker:///nginx");

    // Promote needs a paused canary; rollback goes back, then has nowhere to go.
    let promote = send(&base, dev, "POST", "/v1/desired_lrps/web/promote", None).await;
    refused(&promote, 409, ErrorName::DeploymentNotPaused);
    let far = json!({"generation": 9});
    let gone = send(
        &base,
        dev,
        "POST",
        "/v1/desired_lrps/web/rollback",
        Some(far),
    )
    .await;
    refused(&gone, 404, ErrorName::GenerationNotFound);
    let (status, d) = send(&base, dev, "POST", "/v1/desired_lrps/web/rollback", None).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["generation"].as_i64(), d["rootfs"].as_str()),
        (Some(1), Some("preloaded:busybox"))
    );
    assert_eq!(d["instances"], 3, "instances stay as they are");
    assert_eq!(d["deployment"]["state"], "rolling_back");
    assert_eq!(d["deployment"]["reason"], "rolled back by dan");
    let again = send(&base, dev, "POST", "/v1/desired_lrps/web/rollback", None).await;
    refused(&again, 409, ErrorName::NothingToRollBack);
    let missing = send(&base, dev, "GET", "/v1/desired_lrps/nope/generations", None).await;
    refused(&missing, 404, ErrorName::DesiredLRPNotFound);

    let audit: Vec<String> = bbs
        .logs
        .recent(DEBUG_LOG_GUID)
        .into_iter()
        .filter(|m| m.source == "AUDIT")
        .map(|m| m.message)
        .collect();
    for want in [
        "token=dan role=developer verb=POST object=/v1/desired_lrps/web/generations",
        "token=dan role=developer verb=POST object=/v1/desired_lrps/web/rollback",
    ] {
        assert!(audit.iter().any(|l| l == want), "no {want:?} in {audit:#?}");
    }
    assert!(
        !audit.iter().any(|l| l.contains("role=viewer")),
        "{audit:#?}"
    );
}
