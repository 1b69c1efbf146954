//! The repository helper over restic's REST protocol (v2), against a minimal REST
//! server in the test (the BBS's own is tested in bbs/tests): a confined helper reaches
//! the repository's host by name only through the job's `resolve`, sends the URL's
//! credential, backs up (a second time adding almost nothing), restores byte for byte,
//! and says when the server refuses the credential.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lattice_specs::repo::{RepoJob, RepoOp, RepoOutcome};

const PREFIX: &str = "/v1/repos/v1/";
/// `lattice-task:secret` as HTTP Basic.
const AUTH: &str = "Basic bGF0dGljZS10YXNrOnNlY3JldA==";
const TYPES: [&str; 5] = ["data", "keys", "locks", "snapshots", "index"];

/// A repository served from `dir` (flat: `TYPE/NAME`), as rest-server serves one.
async fn serve(
    dir: Arc<PathBuf>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(AUTH) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(rel) = uri.path().strip_prefix(PREFIX) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if rel.is_empty() && method == Method::POST && uri.query() == Some("create=true") {
        for t in TYPES {
            std::fs::create_dir_all(dir.join(t)).unwrap();
        }
        return StatusCode::OK.into_response();
    }
    let (tpe, name) = rel.split_once('/').unwrap_or((rel, ""));
    if tpe != "config" && !TYPES.contains(&tpe) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = if tpe == "config" {
        dir.join("config")
    } else {
        dir.join(tpe).join(name)
    };
    if tpe != "config" && name.is_empty() {
        let list: Vec<serde_json::Value> = std::fs::read_dir(&path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| serde_json::json!({"name": e.file_name().to_string_lossy(), "size": e.metadata().unwrap().len()}))
                    .collect()
            })
            .unwrap_or_default();
        return axum::Json(list).into_response();
    }
    match method {
        Method::HEAD | Method::GET => {
            let Ok(data) = std::fs::read(&path) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let range = headers.get("range").and_then(|v| v.to_str().ok());
            match range.and_then(|r| r.strip_prefix("bytes=")?.split_once('-')) {
                Some((a, b)) => {
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    (
                        StatusCode::PARTIAL_CONTENT,
                        data[a..=b.min(data.len() - 1)].to_vec(),
                    )
                        .into_response()
                }
                None => data.into_response(),
            }
        }
        Method::POST => {
            if path.exists() {
                return StatusCode::FORBIDDEN.into_response();
            }
            std::fs::write(&path, &body).unwrap();
            StatusCode::OK.into_response()
        }
        Method::DELETE => match std::fs::remove_file(&path) {
            Ok(()) => StatusCode::OK.into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// Starts the server on loopback; its address.
async fn start(dir: PathBuf) -> SocketAddr {
    let dir = Arc::new(dir);
    let app = axum::Router::new()
        .fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                serve(dir.clone(), method, uri, headers, body)
            },
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn helper(job: RepoJob) -> (RepoOutcome, bool) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-shim"))
            .arg("--repo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(&job).unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let o: RepoOutcome = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout} / {}", String::from_utf8_lossy(&out.stderr)));
        (o, out.status.success())
    })
    .await
    .unwrap()
}

fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), b"hello over REST\n").unwrap();
    // Incompressible (xorshift).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("sub/big.bin"), big).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confined_helper_backs_up_and_restores_over_rest_by_the_jobs_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = start(tmp.path().join("served")).await;
    std::fs::create_dir_all(tmp.path().join("served")).unwrap();
    // The volume the helper is confined to.
    let volume = tmp.path().join("volume");
    write_tree(&volume.join("data"));
    let url = format!(
        "rest:http://lattice-task:secret@repo.lattice.test:{}{PREFIX}",
        addr.port()
    );
    let base = RepoJob {
        op: Some(RepoOp::Backup),
        repository: url.clone(),
        password: "k".into(),
        root: volume.display().to_string(),
        path: "/data".into(),
        as_path: "/data".into(),
        ..Default::default()
    };

    // Without the name's address the confined helper refuses (it resolves no name).
    let (out, ok) = helper(base.clone()).await;
    assert!(!ok);
    assert!(out.error.unwrap().contains("resolve:"), "names the field");

    let with_addr = RepoJob {
        resolve: vec![("repo.lattice.test".into(), addr)],
        ..base.clone()
    };
    let (backup, ok) = helper(with_addr.clone()).await;
    assert!(ok, "{backup:?}");
    assert!(tmp.path().join("served/config").exists());
    assert!(backup.added_bytes > 2_900_000, "{backup:?}");

    // A second backup of the same data adds (almost) nothing.
    let (again, ok) = helper(with_addr.clone()).await;
    assert!(ok, "{again:?}");
    assert!(again.added_bytes < 10_000, "{again:?}");

    let (restored, ok) = helper(RepoJob {
        op: Some(RepoOp::Restore),
        path: "/restored".into(),
        snapshot: again.snapshot.clone(),
        ..with_addr.clone()
    })
    .await;
    assert!(ok, "{restored:?}");
    for f in ["a.txt", "sub/big.bin"] {
        assert_eq!(
            std::fs::read(volume.join("data").join(f)).unwrap(),
            std::fs::read(volume.join("restored").join(f)).unwrap(),
            "{f}"
        );
    }

    // A wrong credential: the server's 401, said.
    let (refused, ok) = helper(RepoJob {
        repository: url.replace("secret", "guess"),
        ..with_addr
    })
    .await;
    assert!(!ok);
    assert!(
        refused.error.unwrap().contains("401"),
        "says the server refused"
    );
}
