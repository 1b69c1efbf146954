//! Issue 27's attacks on the public API, performed for real against a BBS served on
//! loopback: requests that would exhaust memory, strings that cannot run, oversized
//! bodies, log floods, clients that hang up on log streams, slow and idle clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::serve::ApiLimits;
use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::{LogMessage, HISTORY_BYTES, MAX_MESSAGE_BYTES};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{lrp, post_json, request, start, task, Resp};

/// The answer is the receptor's 400 naming `field`.
fn assert_refused(r: &Resp, name: &str, field: &str, says: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["name"], name, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(&format!("invalid field {field}")), "{msg}");
    assert!(msg.contains(says), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billion_instances_is_refused_and_nothing_is_stored() {
    let (bbs, _dir) = start(None, ApiLimits::default()).await;
    let a = bbs.api_addr;
    let r = post_json(a, "/v1/desired_lrps", &lrp("huge", 1_000_000_000)).await;
    assert_refused(
        &r,
        ErrorName::InvalidLRP.as_str(),
        "instances",
        "at most 10000",
    );
    assert!(bbs.db.desired_lrp("huge").await.is_err(), "nothing stored");
    assert!(bbs
        .db
        .actual_lrps("", "", "huge", None)
        .await
        .unwrap()
        .is_empty());

    // Scaling an existing LRP up to a billion: refused, the LRP stays as it was.
    assert_eq!(
        post_json(a, "/v1/desired_lrps", &lrp("web", 2))
            .await
            .status,
        201
    );
    let body = br#"{"instances":1000000000}"#;
    let ct = ("Content-Type", "application/json");
    let r = request(a, "PUT", "/v1/desired_lrps/web", &[ct], body).await;
    assert_refused(
        &r,
        ErrorName::InvalidLRP.as_str(),
        "instances",
        "at most 10000",
    );
    assert_eq!(bbs.db.desired_lrp("web").await.unwrap().instances, 2);
    assert_eq!(
        bbs.db.actual_lrps("", "", "web", None).await.unwrap().len(),
        2
    );
    // The limit itself is fine.
    let r = request(
        a,
        "PUT",
        "/v1/desired_lrps/web",
        &[ct],
        br#"{"instances":10000}"#,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        bbs.db.actual_lrps("", "", "web", None).await.unwrap().len(),
        10_000
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_run_is_refused_saying_why() {
    let (bbs, _dir) = start(None, ApiLimits::default()).await;
    let a = bbs.api_addr;

    // A guid too long for the container's network namespace name.
    let long = "g".repeat(255);
    let r = post_json(a, "/v1/tasks", &task(&long)).await;
    assert_refused(
        &r,
        ErrorName::InvalidTask.as_str(),
        "task_guid",
        "at most 200 characters",
    );
    let r = post_json(a, "/v1/desired_lrps", &lrp(&long, 1)).await;
    assert_refused(
        &r,
        ErrorName::InvalidLRP.as_str(),
        "process_guid",
        "at most 200 characters",
    );
    assert_eq!(
        post_json(a, "/v1/tasks", &task(&"g".repeat(200)))
            .await
            .status,
        201
    );

    // A 1 MB env value: no exec takes it.
    let mut t = task("big-env");
    t["env"] = serde_json::json!([{"name": "BIG", "value": "v".repeat(1 << 20)}]);
    let r = post_json(a, "/v1/tasks", &t).await;
    assert_refused(
        &r,
        ErrorName::InvalidTask.as_str(),
        "env[0].value",
        "kernel refuses",
    );
    let mut t = task("big-run-env");
    t["action"]["run"]["env"] = serde_json::json!([{"name": "BIG", "value": "v".repeat(200_000)}]);
    let r = post_json(a, "/v1/tasks", &t).await;
    assert_refused(
        &r,
        ErrorName::InvalidTask.as_str(),
        "action.run.env[0].value",
        "kernel refuses",
    );

    // A volume over the container's own files.
    for path in ["/.lattice", "/.lattice/pause", "//.lattice/", "/proc"] {
        let mut t = task("vol");
        t["volume_mounts"] = serde_json::json!([{"volume": "data", "container_path": path}]);
        let r = post_json(a, "/v1/tasks", &t).await;
        assert_refused(
            &r,
            ErrorName::InvalidTask.as_str(),
            "volume_mounts[0].container_path",
            "is reserved",
        );
    }
    assert!(bbs.db.task("big-env").await.is_err() && bbs.db.task("vol").await.is_err());
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_gets_the_receptor_json_error() {
    let (bbs, _dir) = start(None, ApiLimits::default()).await;
    let a = bbs.api_addr;
    let mut t = task("t");
    t["annotation"] = Value::String("a".repeat(3 << 20));
    let r = post_json(a, "/v1/tasks", &t).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let v = r.json();
    assert_eq!(v["name"], ErrorName::RequestEntityTooLarge.as_str(), "{v}");
    assert!(v["message"].as_str().unwrap().contains("2097152"), "{v}");
    // Other answers axum makes itself are the receptor's JSON too.
    let r = request(a, "GET", "/v1/logs/g?follow=maybe", &[], b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["name"], ErrorName::InvalidRequest.as_str());
    bbs.shutdown().await;
}

/// `n` lines of `size` bytes for `guid`, as NDJSON.
fn log_lines(guid: &str, n: usize, size: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| LogMessage::new(guid, "RTR", format!("{i} {}", "x".repeat(size))).to_ndjson())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_held_to_its_byte_limits() {
    let (bbs, _dir) = start(None, ApiLimits::default()).await;
    let a = bbs.api_addr;
    let nd = ("Content-Type", "application/x-ndjson");
    // 1.9 MB bodies (the attack): refused, in JSON.
    let r = request(
        a,
        "POST",
        "/v1/logs",
        &[nd],
        &log_lines("app", 1, 1_900_000),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["name"], ErrorName::RequestEntityTooLarge.as_str());
    // 60 bodies of one 900 KB line each: the guid keeps about 1 MiB, lines cut.
    for _ in 0..60 {
        let r = request(a, "POST", "/v1/logs", &[nd], &log_lines("app", 1, 900_000)).await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    assert!(
        bbs.logs.bytes() <= HISTORY_BYTES,
        "{} bytes kept",
        bbs.logs.bytes()
    );
    let kept = bbs.logs.recent("app");
    assert!(!kept.is_empty());
    let m = &kept[0].message;
    assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
    assert!(m.ends_with("bytes, 61440 kept]"), "{}", &m[m.len() - 50..]);
    // Many small lines in one body are all kept (the router's batches).
    let r = request(a, "POST", "/v1/logs", &[nd], &log_lines("rtr", 1000, 100)).await;
    assert_eq!(r.status, 204);
    assert_eq!(bbs.logs.recent("rtr").len(), 1000);
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_credentials_only_their_holders_post_logs() {
    let (bbs, _dir) = start(Some("admin:s3cret"), ApiLimits::default()).await;
    let a = bbs.api_addr;
    let nd = ("Content-Type", "application/x-ndjson");
    let line = log_lines("app", 1, 10);
    let r = request(a, "POST", "/v1/logs", &[nd], &line).await;
    assert_eq!(
        (r.status, r.json()["name"].as_str()),
        (401, Some(ErrorName::Unauthorized.as_str()))
    );
    assert!(bbs.logs.recent("app").is_empty());
    // "admin:s3cret", as the router sends it.
    let auth = ("Authorization", "Basic YWRtaW46czNjcmV0");
    let r = request(a, "POST", "/v1/logs", &[nd, auth], &line).await;
    assert_eq!(r.status, 204);
    assert_eq!(bbs.logs.recent("app").len(), 1);
    bbs.shutdown().await;
}

/// A cell with no recent lines (after 300 ms) whose `/v1/logs/GUID` follow streams never end,
/// counting those open.
async fn endless_cell() -> (String, Arc<AtomicUsize>) {
    struct Open(Arc<AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let app = axum::Router::new().route(
        "/v1/logs/{guid}",
        axum::routing::get(move |q: axum::extract::RawQuery| {
            let follow = q.0.is_some_and(|q| q.contains("follow=true"));
            let counter = counter.clone();
            async move {
                if !follow {
                    // A cell takes a moment to gather its recent lines.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return axum::body::Body::empty();
                }
                let guard = Open(counter.clone());
                counter.fetch_add(1, Ordering::SeqCst);
                let s = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
                let s = futures::StreamExt::map(s, move |x| {
                    let _ = &guard;
                    x
                });
                axum::body::Body::from_stream(s)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, open)
}

/// Established TCP connections whose local port is `port` (from /proc/net/tcp: the
/// server side of each, in this process or any other).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01"
                && f[1].rsplit(':').next() == Some(&format!("{port:04X}")[..])
        })
        .count()
}

async fn eventually(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_followers_end_when_their_clients_hang_up() {
    let (bbs, _dir) = start(None, ApiLimits::default()).await;
    let (cell, cell_streams) = endless_cell().await;
    let cell_port: u16 = cell.rsplit(':').next().unwrap().parse().unwrap();
    let lease = bbs.db.grant_lease(Duration::from_secs(30)).await.unwrap();
    let presence = lattice_specs::models::CellPresence {
        cell_id: "cell-1".into(),
        rep_address: cell,
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 10,
        }),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&presence, lease).await.unwrap();

    const CLIENTS: usize = 50;
    // All at once, as a crowd of `ltc logs` would come.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = tokio::net::TcpStream::connect(bbs.api_addr).await.unwrap();
        s.write_all(b"GET /v1/logs/app?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        clients.push(s);
    }
    for s in &mut clients {
        let mut head = vec![0u8; 1024];
        let n = s.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    }
    let logs = bbs.logs.clone();
    eventually("every follower subscribed", Duration::from_secs(5), || {
        logs.followers() == CLIENTS && cell_streams.load(Ordering::SeqCst) == CLIENTS
    })
    .await;
    assert!(established_to(bbs.api_addr.port()) >= CLIENTS);
    drop(clients);
    eventually(
        "the followers (and their cell streams) gone",
        Duration::from_secs(3),
        || logs.followers() == 0 && cell_streams.load(Ordering::SeqCst) == 0,
    )
    .await;
    // And their connections: to the API, and to the cell (a few kept for reuse).
    eventually("the connections closed", Duration::from_secs(3), || {
        established_to(bbs.api_addr.port()) == 0
            && established_to(cell_port) <= lattice_bbs::cell_client::CELL_POOL_IDLE
    })
    .await;
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_connections_capped() {
    let limits = ApiLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 8,
        ..ApiLimits::default()
    };
    let (bbs, _dir) = start(None, limits).await;
    let a = bbs.api_addr;
    // Eight slowloris clients fill every slot: half send part of a head, half nothing.
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A ninth client waits for a slot; it is served once the slow ones are cut off.
    let began = Instant::now();
    let ninth =
        tokio::spawn(async move { request(a, "GET", "/v1/version", &[], b"").await.status });
    for mut s in slow {
        let mut buf = [0u8; 1024];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "a slow client still connected after 5 s");
    }
    assert_eq!(ninth.await.unwrap(), 200);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "the ninth connection was served at once ({waited:?}): no cap"
    );
    // An idle keep-alive connection is cut off too.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle connection still open after 5 s");
    bbs.shutdown().await;
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_the_blobs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = |blobs: &std::path::Path| BbsConfig {
        blob_dir: Some(blobs.to_path_buf()),
        ..BbsConfig::loopback(StoreUrl::File(state.join("bbs.db")), Duration::from_secs(2))
    };
    let blobs = dir.path().join("blobs");
    let bbs = server::start(cfg(&blobs)).await.unwrap();
    // A task's env is in the store's file.
    let mut t = task("secret");
    t["env"] = serde_json::json!([{"name": "DB_PASSWORD", "value": "hunter2"}]);
    assert_eq!(post_json(bbs.api_addr, "/v1/tasks", &t).await.status, 201);
    let r = request(bbs.api_addr, "PUT", "/v1/blobs/b1", &[], b"backup bytes").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(mode(&state), 0o700, "the store's directory");
    assert_eq!(mode(&state.join("bbs.db")), 0o600, "the store's file");
    assert_eq!(mode(&blobs), 0o700, "the blob directory");
    assert_eq!(mode(&blobs.join("b1")), 0o600, "a blob");
    assert_eq!(mode(&blobs.join("b1.sha256")), 0o600, "a blob's checksum");
    bbs.shutdown().await;

    // Files an older version left readable by everyone are tightened on open.
    let loose = std::fs::Permissions::from_mode(0o644);
    let old_db = dir.path().join("old.db");
    std::fs::write(&old_db, b"").unwrap();
    std::fs::set_permissions(&old_db, loose.clone()).unwrap();
    let store = lattice_bbs::store::embedded::EmbeddedStore::open(&old_db).unwrap();
    assert_eq!(mode(&old_db), 0o600);
    drop(store);
    std::fs::set_permissions(blobs.join("b1"), loose).unwrap();
    std::fs::set_permissions(&blobs, std::fs::Permissions::from_mode(0o755)).unwrap();
    lattice_bbs::blobs::BlobStore::open(&blobs).unwrap();
    assert_eq!(mode(&blobs), 0o700);
    assert_eq!(mode(&blobs.join("b1")), 0o600);
}

/// Another host on the network: a network namespace of this test's own, joined to this
/// one by a veth pair (this side `HOST_IP`, the other `PEER_IP`). Removed on drop,
/// its veth with it.
struct OtherHost {
    ns: String,
    veth: String,
    host_ip: String,
}

impl OtherHost {
    fn new() -> OtherHost {
        let id = std::process::id();
        let n = id % 200 + 20;
        let h = OtherHost {
            ns: format!("lt-bbs-{id}"),
            veth: format!("vb{}", id % 1_000_000),
            host_ip: format!("10.252.{n}.1"),
        };
        let peer = format!("{}p", h.veth);
        let ip = |args: &str| {
            let out = std::process::Command::new("ip")
                .args(args.split_whitespace())
                .output()
                .expect("ip (iproute2)");
            assert!(
                out.status.success(),
                "ip {args}: {} (this test makes a network namespace: run as root)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&format!("netns add {}", h.ns));
        ip(&format!("link add {} type veth peer name {peer}", h.veth));
        ip(&format!("link set {peer} netns {}", h.ns));
        ip(&format!("addr add {}/30 dev {}", h.host_ip, h.veth));
        ip(&format!("link set {} up", h.veth));
        ip(&format!("-n {} addr add 10.252.{n}.2/30 dev {peer}", h.ns));
        ip(&format!("-n {} link set {peer} up", h.ns));
        h
    }

    /// Sends `request` (a whole HTTP/1.0 request) from the other host; the answer.
    /// A thread of this process joins the other host's network namespace to send it,
    /// and keeps its side open until the answer has come (the API drops a client that
    /// half-closes, as a hung-up log follower).
    fn send(&self, to: std::net::SocketAddr, request: &[u8]) -> String {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.ns))
            .expect("the other host's namespace");
        let request = request.to_vec();
        std::thread::spawn(move || {
            // SAFETY: `ns` is an open namespace file for the whole call; setns moves
            // only this thread, which ends with this closure.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10))
                .expect("connecting from the other host");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(&request).expect("sending from the other host");
            let mut answer = Vec::new();
            // The server closes an HTTP/1.0 connection once it has answered.
            let _ = s.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        })
        .join()
        .expect("the other host's client")
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        for args in [
            vec!["netns", "del", self.ns.as_str()],
            vec!["link", "del", self.veth.as_str()],
        ] {
            let _ = std::process::Command::new("ip").args(args).output();
        }
    }
}

/// Without API credentials, a client on another host may not write into apps' logs
/// (it is not authenticated: 401); a caller over loopback (a router beside the BBS) may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_only_loopback_callers_post_logs() {
    let other = OtherHost::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        api_listen: "0.0.0.0:0".parse().unwrap(),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    let bbs = server::start(cfg).await.unwrap();
    let port = bbs.api_addr.port();
    let line = log_lines("app", 1, 10);
    let mut req = format!(
        "POST /v1/logs HTTP/1.0\r\nHost: bbs\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        line.len()
    )
    .into_bytes();
    req.extend_from_slice(&line);
    let to = format!("{}:{port}", other.host_ip).parse().unwrap();
    let answer = tokio::task::block_in_place(|| other.send(to, &req));
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");
    assert!(answer.contains("\"name\":\"Unauthorized\""), "{answer}");
    assert!(bbs.logs.recent("app").is_empty(), "a foreign line got in");
    let nd = ("Content-Type", "application/x-ndjson");
    let local = format!("127.0.0.1:{port}").parse().unwrap();
    let r = request(local, "POST", "/v1/logs", &[nd], &line).await;
    assert_eq!(r.status, 204);
    assert_eq!(bbs.logs.recent("app").len(), 1);
    bbs.shutdown().await;
}
