//! Helpers for the tests that serve the public API on loopback (`hardening.rs`,
//! `api_props.rs`): a BBS with an embedded store in a temp dir, and requests written
//! as bytes on a socket; `client` (for `api_tokens.rs` and `api_owners.rs`) makes
//! them with a credential.
#![allow(dead_code)]

pub mod client;

use std::time::Duration;

use lattice_bbs::serve::ApiLimits;
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn start(auth: Option<&str>, limits: ApiLimits) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        basic_auth: auth.map(String::from),
        api_limits: limits,
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("state").join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends a request (writing its body while reading, so a server that answers before
/// reading a large body is heard) and reads the answer until its Content-Length.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        wr
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let parsed = loop {
        if let Some(r) = parse(&out) {
            break r;
        }
        match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            other => panic!(
                "no whole answer ({other:?}): {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    };
    writer.abort();
    parsed
}

pub fn parse(out: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(out);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut content_type = String::new();
    let mut length = 0;
    for l in lines {
        let (k, v) = l.split_once(": ")?;
        if k.eq_ignore_ascii_case("content-type") {
            content_type = v.to_string();
        }
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().ok()?;
        }
    }
    (body.len() >= length).then(|| Resp {
        status,
        content_type,
        body: body[..length].to_string(),
    })
}

pub async fn post_json(addr: std::net::SocketAddr, path: &str, body: &Value) -> Resp {
    let body = serde_json::to_vec(body).unwrap();
    let ct = ("Content-Type", "application/json");
    request(addr, "POST", path, &[ct], &body).await
}

pub fn task(guid: &str) -> Value {
    serde_json::json!({
        "task_guid": guid, "domain": "apps", "rootfs": "preloaded:busybox",
        "action": {"run": {"path": "/bin/true"}}, "cpu_weight": 1
    })
}

pub fn lrp(guid: &str, instances: i64) -> Value {
    serde_json::json!({
        "process_guid": guid, "domain": "apps", "rootfs": "preloaded:busybox",
        "instances": instances, "action": {"run": {"path": "/bin/httpd"}}, "cpu_weight": 1
    })
}
