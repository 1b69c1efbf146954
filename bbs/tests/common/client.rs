//! A client of the public API for the tests of tokens and ownership (`api_tokens.rs`,
//! `api_owners.rs`): a BBS on loopback with an embedded store, requests made with a
//! given credential, and the receptor's error shape checked.

use std::time::Duration;

use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_specs::errors::ErrorName;
use serde_json::{json, Value};

/// A BBS on loopback (with `--basic-auth` when `auth`, a blob store and a backup key
/// when `blobs`).
pub async fn start(auth: Option<&str>, blobs: bool) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        basic_auth: auth.map(String::from),
        blob_dir: blobs.then(|| dir.path().join("blobs")),
        // Backups go to repositories, whose password is the cluster's backup key.
        backup_key_file: blobs.then(|| dir.path().join("backup.key")),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("state").join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

/// A client of one API, authenticating as told.
pub struct As {
    pub base: String,
    pub auth: Auth,
    pub http: reqwest::Client,
}

#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl As {
    pub fn new(bbs: &RunningBbs, auth: Auth) -> As {
        As {
            base: format!("http://{}", bbs.api_addr),
            auth,
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
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
pub fn assert_error(answer: &(u16, Value), status: u16, name: ErrorName) -> String {
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

pub async fn make_token(admin: &As, name: &str, role: &str) -> String {
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

/// The archive's record, as `ltc backup export` writes it.
pub fn record(id: &str, checksum: &str) -> Value {
    json!({"id": id, "volume": "pg", "state": "COMPLETED", "checksum": checksum,
           "manifest": "0".repeat(64), "created_at": 1})
}
