//! `ltc ssh` at the public API over real sockets: a BBS with its cluster certificate,
//! and a fake rep (a WebSocket server with the cell's certificate from the same CA,
//! registered as the cell's presence) that records what reaches it and echoes. Proves
//! messages are relayed both ways over the BBS's mutual TLS to exactly that cell,
//! `who` is the caller whatever the client says, who may open a session (no viewer,
//! no developer on another's app), every refusal is a named error without an upgrade,
//! a dropped client ends the rep's side, the forward query goes through (over HTTPS
//! too), and a BBS shutting down ends the sessions still open.

mod common;

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{SinkExt, StreamExt};
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{Control, ExecRequest, ForwardQuery, Frame, REP_EXEC, REP_FORWARD};
use lattice_specs::identity::{Identity, Role};
use lattice_specs::logs::DEBUG_LOG_GUID;
use lattice_specs::models::CellPresence;
use lattice_specs::testing::instance_key;
use lattice_tls::ca::Ca;
use lattice_tls::{ClientAuth, NodeTls};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Msg;

use common::client::{make_token, As, Auth};

/// Long enough for anything on loopback; a hang fails instead of blocking the suite.
const WAIT: Duration = Duration::from_secs(10);

fn node(ca: &Ca, role: Role, name: &str) -> NodeTls {
    let who = Identity::new(role, name).unwrap();
    ca.issue_node(&who, &[], Duration::from_secs(3600)).unwrap()
}

/// What reached the fake rep.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Exec {
        handle: String,
        request: ExecRequest,
        /// The identity of the client's certificate.
        by: Option<Identity>,
    },
    Forward {
        handle: String,
        query: ForwardQuery,
    },
    /// The session's socket ended at the rep.
    Ended {
        handle: String,
    },
}

type Seer = mpsc::UnboundedSender<Seen>;

/// The fake rep's refusal for a container that is going away.
const GONE: &str = "gone";

async fn rep_exec(
    State(seen): State<Seer>,
    Path(handle): Path<String>,
    id: Option<Extension<Identity>>,
    ws: WebSocketUpgrade,
) -> Response {
    if handle == GONE {
        return gone();
    }
    let by = id.map(|i| i.0);
    ws.on_upgrade(move |socket| exec_session(socket, handle, by, seen))
}

fn gone() -> Response {
    let body =
        serde_json::json!({"name": "InstanceNotRunning", "message": "container gone is stopping"});
    (axum::http::StatusCode::CONFLICT, axum::Json(body)).into_response()
}

/// Reports the request, echoes stdin as stdout, and ends with exit status 3 on Eof.
async fn exec_session(mut s: WebSocket, handle: String, by: Option<Identity>, seen: Seer) {
    // Without a request (the API refused the client's first message), nothing runs.
    let Some(Ok(Message::Text(first))) = s.recv().await else {
        let _ = seen.send(Seen::Ended { handle });
        return;
    };
    let request = serde_json::from_str(first.as_str()).unwrap();
    let _ = seen.send(Seen::Exec {
        handle: handle.clone(),
        request,
        by,
    });
    while let Some(Ok(m)) = s.recv().await {
        let Message::Binary(b) = m else { continue };
        let reply = match Frame::decode(&b).unwrap() {
            Frame::Stdin(bytes) => Frame::Stdout(bytes),
            Frame::Control(Control::Eof) => Frame::Control(Control::Exit {
                status: 3,
                reason: String::new(),
            }),
            other => panic!("unexpected frame at the rep: {other:?}"),
        };
        let last = matches!(reply, Frame::Control(Control::Exit { .. }));
        s.send(Message::Binary(reply.encode().into()))
            .await
            .unwrap();
        if last {
            let _ = s.send(Message::Close(None)).await;
            break;
        }
    }
    let _ = seen.send(Seen::Ended { handle });
}

async fn rep_forward(
    State(seen): State<Seer>,
    Path(handle): Path<String>,
    Query(query): Query<ForwardQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |mut s| async move {
        let _ = seen.send(Seen::Forward {
            handle: handle.clone(),
            query,
        });
        // An echo server behind the forward: bytes back, a half close answered.
        while let Some(Ok(m)) = s.recv().await {
            if let Message::Binary(b) = m {
                s.send(Message::Binary(b)).await.unwrap();
            }
        }
        let _ = seen.send(Seen::Ended { handle });
    })
}

/// The fake rep of `cell_id` on loopback over mutual TLS; its address and what it sees.
async fn fake_rep(ca: &Ca, cell_id: &str) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let cfg = node(ca, Role::Cell, cell_id)
        .server_config(ClientAuth::Required)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = lattice_tls::server::Listener::new(tcp, Some(cfg)).unwrap();
    let addr = listener.local_addr();
    let app = lattice_tls::server::with_identity(
        axum::Router::new()
            .route(REP_EXEC, axum::routing::get(rep_exec))
            .route(REP_FORWARD, axum::routing::get(rep_forward))
            .with_state(tx),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<lattice_tls::server::PeerInfo>(),
        )
        .await
        .unwrap()
    });
    (addr.to_string(), rx)
}

/// A BBS with the cluster's certificate, its public API on plain loopback (or HTTPS
/// with `api_tls`), and cell `cell-1` present at `rep`.
async fn start(
    ca: &Ca,
    rep: &str,
    api_tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        tls: Some(node(ca, Role::Bbs, "bbs")),
        api_tls,
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("state").join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    let bbs = server::start(cfg).await.unwrap();
    let cell = CellPresence {
        cell_id: "cell-1".into(),
        rep_address: rep.into(),
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    (bbs, dir)
}

/// Instance `index` of `guid` running on cell-1 as container `handle`.
async fn run_instance(bbs: &RunningBbs, guid: &str, index: i32, handle: &str) {
    let ik = instance_key(handle, "cell-1");
    bbs.db.claim_actual_lrp(guid, index, &ik, 1).await.unwrap();
    bbs.db
        .start_actual_lrp(guid, index, &ik, Default::default())
        .await
        .unwrap();
}

type Client = tokio_tungstenite::WebSocketStream<reqwest::Upgraded>;

/// Opens a WebSocket as `ltc ssh` does (an HTTP/1.1 upgrade over reqwest); Err: the
/// answer instead of an upgrade (status, JSON body).
async fn open(http: &reqwest::Client, url: &str, auth: &Auth) -> Result<Client, (u16, Value)> {
    use reqwest::header;
    use tokio_tungstenite::tungstenite::handshake::client::generate_key;
    let mut req = http
        .get(url)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, generate_key());
    req = match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
    };
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    if status != 101 {
        let body = resp.text().await.unwrap();
        return Err((
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        ));
    }
    let io = resp.upgrade().await.unwrap();
    Ok(Client::from_raw_socket(
        io,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the rep saw nothing in time")
        .unwrap()
}

/// The next message from the API (pings skipped).
async fn next_msg(c: &mut Client) -> Option<Msg> {
    loop {
        match tokio::time::timeout(WAIT, c.next())
            .await
            .expect("no message in time")
        {
            Some(Ok(Msg::Ping(_) | Msg::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            _ => return None,
        }
    }
}

fn frame(m: Msg) -> Frame {
    let Msg::Binary(b) = m else {
        panic!("not a binary frame: {m:?}")
    };
    Frame::decode(&b).unwrap()
}

fn exec_request(who: &str) -> Msg {
    let r = ExecRequest {
        command: vec!["cat".into()],
        who: who.into(),
        ..Default::default()
    };
    Msg::text(serde_json::to_string(&r).unwrap())
}

fn assert_named(got: Result<Client, (u16, Value)>, status: u16, name: ErrorName) -> String {
    let Err((got, body)) = got else {
        panic!("upgraded where {name} was due")
    };
    assert_eq!(
        (got, body["name"].as_str()),
        (status, Some(name.as_str())),
        "{body}"
    );
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sessions_are_relayed_to_the_instances_rep_as_the_caller() {
    let ca = Ca::generate().unwrap();
    let (rep, mut seen) = fake_rep(&ca, "cell-1").await;
    let (bbs, _dir) = start(&ca, &rep, None).await;
    let local = As::new(&bbs, Auth::None);
    let dev_a = Auth::Bearer(make_token(&local, "dev-a", "developer").await);
    let owner = As::new(&bbs, dev_a.clone());
    let (status, body) = owner
        .send("POST", "/v1/desired_lrps", Some(common::lrp("web", 2)))
        .await;
    assert_eq!(status, 201, "{body}");
    run_instance(&bbs, "web", 0, "i-web-0").await;
    let http = reqwest::Client::new();
    let api = format!("http://{}", bbs.api_addr);

    // dev-a's session: `who` is dev-a though the client said admin.
    let url = format!("{api}/v1/actual_lrps/web/index/0/exec");
    let mut c = open(&http, &url, &dev_a).await.unwrap();
    c.send(exec_request("admin")).await.unwrap();
    let Seen::Exec {
        handle,
        request,
        by,
    } = next_seen(&mut seen).await
    else {
        panic!("no exec at the rep")
    };
    assert_eq!(
        handle, "i-web-0",
        "the instance guid is the container handle"
    );
    assert_eq!(
        request.who, "dev-a",
        "who is the caller, not what the client said"
    );
    assert_eq!(request.command, ["cat"]);
    assert_eq!(
        by,
        Some(lattice_tls::bbs_identity()),
        "the rep saw the BBS's certificate"
    );

    // Both ways: stdin echoed back as stdout, then Eof → the rep's exit and close.
    c.send(Msg::binary(Frame::Stdin(b"hello\n".to_vec()).encode()))
        .await
        .unwrap();
    assert_eq!(
        frame(next_msg(&mut c).await.unwrap()),
        Frame::Stdout(b"hello\n".to_vec())
    );
    c.send(Msg::binary(Frame::Control(Control::Eof).encode()))
        .await
        .unwrap();
    assert_eq!(
        frame(next_msg(&mut c).await.unwrap()),
        Frame::Control(Control::Exit {
            status: 3,
            reason: String::new()
        })
    );
    assert!(
        matches!(next_msg(&mut c).await, Some(Msg::Close(_)) | None),
        "the rep's close reaches the client"
    );
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Ended {
            handle: "i-web-0".into()
        }
    );

    // A client that goes away (no close frame) ends the session at the rep.
    let mut c = open(&http, &url, &Auth::None).await.unwrap();
    c.send(exec_request("")).await.unwrap();
    let Seen::Exec { request, .. } = next_seen(&mut seen).await else {
        panic!("no exec at the rep")
    };
    assert_eq!(
        request.who, "local",
        "the loopback caller without credentials"
    );
    drop(c);
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Ended {
            handle: "i-web-0".into()
        },
        "the dropped client's session ended at the rep"
    );

    // A first message that is not an exec request: a named error, and the rep's side ends.
    let mut c = open(&http, &url, &dev_a).await.unwrap();
    c.send(Msg::binary(Frame::Stdin(b"ls\n".to_vec()).encode()))
        .await
        .unwrap();
    let Frame::Control(Control::Error { name, message }) = frame(next_msg(&mut c).await.unwrap())
    else {
        panic!("no error frame")
    };
    assert_eq!(name, "InvalidRequest", "{message}");
    assert!(message.contains("must be the exec request"), "{message}");
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Ended {
            handle: "i-web-0".into()
        },
        "the rep's side of a bad session ended without a request"
    );

    // Each session left an audit line and counts.
    let audit: Vec<String> = bbs
        .logs
        .recent(DEBUG_LOG_GUID)
        .into_iter()
        .map(|l| l.message)
        .filter(|m| m.contains("verb=EXEC"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|m| m
                == "token=dev-a role=developer verb=EXEC object=/v1/actual_lrps/web/index/0/exec"),
        "{audit:?}"
    );
    let metrics = http
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "bbs_api_exec_sessions_total{kind=\"exec\",outcome=\"closed_by_rep\"}",
        "bbs_api_exec_sessions_total{kind=\"exec\",outcome=\"closed_by_client\"}",
        "bbs_api_exec_sessions_total{kind=\"exec\",outcome=\"bad_request\"}",
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_refused_by_name_before_any_upgrade() {
    let ca = Ca::generate().unwrap();
    let (rep, mut seen) = fake_rep(&ca, "cell-1").await;
    let (bbs, _dir) = start(&ca, &rep, None).await;
    let local = As::new(&bbs, Auth::None);
    let dev_a = Auth::Bearer(make_token(&local, "dev-a", "developer").await);
    let dev_b = Auth::Bearer(make_token(&local, "dev-b", "developer").await);
    let viewer = Auth::Bearer(make_token(&local, "eve", "viewer").await);
    let owner = As::new(&bbs, dev_a.clone());
    for app in [common::lrp("web", 2), common::lrp("old", 1)] {
        assert_eq!(
            owner.send("POST", "/v1/desired_lrps", Some(app)).await.0,
            201
        );
    }
    run_instance(&bbs, "web", 0, "i-web-0").await;
    run_instance(&bbs, "old", 0, GONE).await;
    let crashed = instance_key("i-web-1", "cell-1");
    bbs.db
        .claim_actual_lrp("web", 1, &crashed, 1)
        .await
        .unwrap();
    bbs.db
        .start_actual_lrp("web", 1, &crashed, Default::default())
        .await
        .unwrap();
    bbs.db
        .crash_actual_lrp("web", 1, &crashed, "exited with status 2")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let api = format!("http://{}", bbs.api_addr);
    let exec = |path: &str| format!("{api}/v1/actual_lrps/{path}/exec");

    let why = assert_named(
        open(&http, &exec("web/index/0"), &viewer).await,
        403,
        ErrorName::Forbidden,
    );
    assert!(
        why.starts_with("a viewer token may not open a session"),
        "{why}"
    );
    let forward = format!("{api}/v1/actual_lrps/web/index/0/forward?port=8080");
    assert_named(
        open(&http, &forward, &viewer).await,
        403,
        ErrorName::Forbidden,
    );
    let why = assert_named(
        open(&http, &exec("web/index/0"), &dev_b).await,
        403,
        ErrorName::Forbidden,
    );
    assert!(
        why.contains("token dev-b may not open a session in app web: it belongs to dev-a"),
        "{why}"
    );
    let why = assert_named(
        open(&http, &exec("web/index/2"), &dev_a).await,
        404,
        ErrorName::ActualLRPIndexNotFound,
    );
    assert_eq!(why, "no instance 2: web has 2 instances (0..1)");
    let why = assert_named(
        open(&http, &exec("web/index/1"), &dev_a).await,
        409,
        ErrorName::InstanceNotRunning,
    );
    assert!(why.starts_with("instance 1 of web is UNCLAIMED"), "{why}");
    assert!(why.contains("last: exited with status 2"), "{why}");
    assert_named(
        open(&http, &exec("nope/index/0"), &dev_a).await,
        404,
        ErrorName::DesiredLRPNotFound,
    );
    // The rep's own refusal (the container stopping) keeps its name.
    let why = assert_named(
        open(&http, &exec("old/index/0"), &dev_a).await,
        409,
        ErrorName::InstanceNotRunning,
    );
    assert_eq!(why, "container gone is stopping");
    let task = |guid: &str| format!("{api}/v1/tasks/{guid}/exec");
    assert_named(
        open(&http, &task("nope"), &dev_a).await,
        404,
        ErrorName::TaskNotFound,
    );
    bbs.db
        .desire_task(
            "t1",
            "apps",
            lattice_specs::testing::task_definition("/bin/sleep"),
        )
        .await
        .unwrap();
    let why = assert_named(
        open(&http, &task("t1"), &Auth::None).await,
        409,
        ErrorName::InstanceNotRunning,
    );
    assert!(why.starts_with("task t1 is PENDING"), "{why}");
    let bad_port = format!("{api}/v1/actual_lrps/web/index/0/forward?port=http");
    let why = assert_named(
        open(&http, &bad_port, &dev_a).await,
        400,
        ErrorName::InvalidRequest,
    );
    assert!(why.starts_with("port must be"), "{why}");

    // A plain GET (no upgrade) on a running instance is told to open a WebSocket.
    let plain = http
        .get(exec("web/index/0"))
        .bearer_auth(match &dev_a {
            Auth::Bearer(t) => t,
            _ => unreachable!(),
        })
        .send()
        .await
        .unwrap();
    assert!(plain.status().is_client_error(), "{}", plain.status());

    // None of that reached the rep.
    assert!(
        seen.try_recv().is_err(),
        "a refused session reached the rep"
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_task_sessions_go_through_over_https() {
    let ca = Ca::generate().unwrap();
    let (rep, mut seen) = fake_rep(&ca, "cell-1").await;
    let web_ca = lattice_bbs::test_pki::TestCa::new("api test CA");
    let cert = web_ca.server(&["127.0.0.1"]);
    let (bbs, _dir) = start(&ca, &rep, Some(cert.server_config())).await;
    bbs.db
        .desire_task(
            "t1",
            "apps",
            lattice_specs::testing::task_definition("/bin/sleep"),
        )
        .await
        .unwrap();
    assert!(bbs.db.start_task("t1", "cell-1").await.unwrap());
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(web_ca.pem.as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let api = format!("https://{}", bbs.api_addr);

    // A forward: the query reaches the rep with `who` set; bytes and a half close
    // (an empty message) go both ways.
    let url = format!("{api}/v1/tasks/t1/forward?port=5432&host=127.0.0.1&who=admin");
    let mut c = open(&http, &url, &Auth::None).await.unwrap();
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Forward {
            handle: "t1".into(),
            query: ForwardQuery {
                port: 5432,
                host: "127.0.0.1".into(),
                who: "local".into()
            }
        }
    );
    for payload in [&b"SELECT 1;"[..], b""] {
        c.send(Msg::binary(payload.to_vec())).await.unwrap();
        assert_eq!(next_msg(&mut c).await, Some(Msg::binary(payload.to_vec())));
    }
    c.close(None).await.unwrap();
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Ended {
            handle: "t1".into()
        }
    );

    // An exec into the running task over the same HTTPS API.
    let mut c = open(&http, &format!("{api}/v1/tasks/t1/exec"), &Auth::None)
        .await
        .unwrap();
    c.send(exec_request("")).await.unwrap();
    let Seen::Exec { handle, .. } = next_seen(&mut seen).await else {
        panic!("no exec at the rep")
    };
    assert_eq!(handle, "t1", "the task guid is the container handle");
    c.send(Msg::binary(Frame::Control(Control::Eof).encode()))
        .await
        .unwrap();
    assert!(matches!(
        frame(next_msg(&mut c).await.unwrap()),
        Frame::Control(Control::Exit { status: 3, .. })
    ));
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Ended {
            handle: "t1".into()
        }
    );

    // A BBS shutting down ends the sessions still open, telling both sides.
    let url = format!("{api}/v1/tasks/t1/forward?port=5432");
    let mut c = open(&http, &url, &Auth::None).await.unwrap();
    assert!(matches!(next_seen(&mut seen).await, Seen::Forward { .. }));
    bbs.shutdown().await;
    let Some(Msg::Text(t)) = next_msg(&mut c).await else {
        panic!("no last word from a stopping API")
    };
    let e: lattice_specs::exec::ForwardError = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(e.message, "the API is shutting down");
    assert_eq!(
        next_seen(&mut seen).await,
        Seen::Ended {
            handle: "t1".into()
        }
    );
}
