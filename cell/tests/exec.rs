//! Sessions inside real running containers (as root): exec through the shim's
//! session helper (output, exit status, stdin, a terminal, signals, a dropped
//! session, a destroyed instance) and port forwards into the container's network
//! namespace; then the same through the rep's WebSocket routes.

use std::time::Duration;

use lattice_cell::executor::exec::{ExecSession, SessionError};
use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::*;
use lattice_specs::exec::{Control, ExecRequest, Frame};

const LIMIT: Duration = Duration::from_secs(20);

/// A running busybox container doing `script`, its work started.
async fn running(t: &TestExecutor, handle: &str, script: &str) {
    t.exec.create(request(handle, sh(script))).await.unwrap();
    wait_event(&t.exec, handle, LIMIT, |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
}

fn command(args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: args.iter().map(|s| s.to_string()).collect(),
        who: "test".into(),
        ..Default::default()
    }
}

/// Everything a session sends until its end: stdout, stderr, the last control.
async fn finish(s: &mut ExecSession) -> (String, String, Control) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let last = tokio::time::timeout(LIMIT, async {
        loop {
            match s.recv().await.unwrap() {
                Some(Frame::Stdout(b)) => out.extend(b),
                Some(Frame::Stderr(b)) => err.extend(b),
                Some(Frame::Control(c)) => return c,
                Some(f) => panic!("unexpected {f:?}"),
                None => panic!("the session ended without an exit"),
            }
        }
    })
    .await
    .expect("the session ended in time");
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        last,
    )
}

fn exit(status: i32, reason: &str) -> Control {
    Control::Exit {
        status,
        reason: reason.into(),
    }
}

async fn destroy_clean(t: &TestExecutor, handle: &str) {
    t.exec.destroy(handle).await;
    let left = leftovers(&t.exec, handle);
    assert!(left.is_empty(), "{handle} left behind: {left:?}");
}

/// Pids of processes whose command line is `cmdline` (NUL-separated as in /proc).
fn processes(cmdline: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == format!("{}\0", cmdline.replace(' ', "\0")).as_bytes())
        })
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + LIMIT;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files a session could leave in the container's directories.
fn session_files(t: &TestExecutor, handle: &str) -> Vec<String> {
    let dirs = [
        t.exec.dir(handle),
        t.exec.dir(handle).join("bundle"),
        t.exec.config().data_dir.join("run").join(handle),
    ];
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("process-") || n.starts_with("tty-") || n.starts_with("tenant-tty")
        })
        .collect()
}

#[tokio::test]
async fn a_command_returns_its_output_and_exit_status() {
    require_root();
    let t = TestExecutor::new();
    running(&t, "exec-out", "sleep 600").await;
    let mut s = t
        .exec
        .exec(
            "exec-out",
            &command(&["sh", "-c", "echo out; echo err >&2; hostname; exit 3"]),
        )
        .await
        .unwrap();
    let (out, err, last) = finish(&mut s).await;
    assert_eq!(out, "out\nexec-out\n");
    assert_eq!(err, "err\n");
    assert_eq!(last, exit(3, ""));
    // A command the image does not have says so.
    let mut s = t
        .exec
        .exec("exec-out", &command(&["/bin/no-such"]))
        .await
        .unwrap();
    match finish(&mut s).await.2 {
        Control::Error { message, .. } => {
            assert!(message.contains("/bin/no-such"), "{message}")
        }
        c => panic!("{c:?}"),
    }
    assert!(session_files(&t, "exec-out").is_empty());
    destroy_clean(&t, "exec-out").await;
}

#[tokio::test]
async fn stdin_is_piped_in_until_eof() {
    require_root();
    let t = TestExecutor::new();
    running(&t, "exec-in", "sleep 600").await;
    let mut s = t
        .exec
        .exec("exec-in", &command(&["sh", "-s"]))
        .await
        .unwrap();
    s.send(&Frame::Stdin(b"echo $((6*7))\n".to_vec()))
        .await
        .unwrap();
    s.send(&Frame::Stdin(b"cat; exit 5\n".to_vec()))
        .await
        .unwrap();
    s.send(&Frame::Control(Control::Eof)).await.unwrap();
    let (out, _, last) = finish(&mut s).await;
    assert_eq!(out, "42\n");
    assert_eq!(last, exit(5, ""));
    destroy_clean(&t, "exec-in").await;
}

/// Reads a terminal's output until it holds `want`.
async fn read_until(s: &mut ExecSession, seen: &mut String, want: &str) {
    tokio::time::timeout(LIMIT, async {
        while !seen.contains(want) {
            match s.recv().await.unwrap() {
                Some(Frame::Stdout(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
                f => panic!("{f:?} before {want:?}; saw {seen:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} in {seen:?}"));
}

#[tokio::test]
async fn a_terminal_session_has_a_prompt_a_size_and_an_exit_status() {
    require_root();
    let t = TestExecutor::new();
    running(&t, "exec-tty", "sleep 600").await;
    let req = ExecRequest {
        tty: true,
        cols: 80,
        rows: 24,
        ..command(&[])
    };
    let mut s = t.exec.exec("exec-tty", &req).await.unwrap();
    let mut seen = String::new();
    // busybox's shell (the image has no bash) as root: "/ # ".
    read_until(&mut s, &mut seen, "# ").await;
    s.send(&Frame::Stdin(b"tty; stty size\n".to_vec()))
        .await
        .unwrap();
    read_until(&mut s, &mut seen, "24 80").await;
    assert!(seen.contains("/dev/pts/"), "{seen}");
    s.send(&Frame::Control(Control::Resize {
        cols: 100,
        rows: 30,
    }))
    .await
    .unwrap();
    s.send(&Frame::Stdin(b"stty size\n".to_vec()))
        .await
        .unwrap();
    read_until(&mut s, &mut seen, "30 100").await;
    // Ctrl-C reaches the foreground job through the terminal, not the shell.
    s.send(&Frame::Stdin(b"sleep 606\n".to_vec()))
        .await
        .unwrap();
    until("sleep 606 runs", || !processes("sleep 606").is_empty()).await;
    s.send(&Frame::Stdin(vec![3])).await.unwrap();
    s.send(&Frame::Stdin(b"echo after-$?\n".to_vec()))
        .await
        .unwrap();
    read_until(&mut s, &mut seen, "after-130").await;
    s.send(&Frame::Stdin(b"exit 3\n".to_vec())).await.unwrap();
    let (_, _, last) = finish(&mut s).await;
    assert_eq!(last, exit(3, ""));
    drop(s);
    assert!(session_files(&t, "exec-tty").is_empty());
    destroy_clean(&t, "exec-tty").await;
}

#[tokio::test]
async fn a_signal_reaches_the_process() {
    require_root();
    let t = TestExecutor::new();
    running(&t, "exec-sig", "sleep 600").await;
    let mut s = t
        .exec
        .exec("exec-sig", &command(&["sleep", "602"]))
        .await
        .unwrap();
    until("sleep 602 runs", || !processes("sleep 602").is_empty()).await;
    s.send(&Frame::Control(Control::Signal {
        signal: "INT".into(),
    }))
    .await
    .unwrap();
    assert_eq!(finish(&mut s).await.2, exit(130, ""));
    destroy_clean(&t, "exec-sig").await;
}

#[tokio::test]
async fn a_dropped_session_kills_its_process_and_leaves_nothing() {
    require_root();
    let t = TestExecutor::new();
    running(&t, "exec-drop", "sleep 600").await;
    for tty in [false, true] {
        let req = ExecRequest {
            tty,
            ..command(&["sh", "-c", "sleep 603 & sleep 604"])
        };
        let s = t.exec.exec("exec-drop", &req).await.unwrap();
        until("the session's processes run", || {
            !processes("sleep 603").is_empty() && !processes("sleep 604").is_empty()
        })
        .await;
        drop(s);
        until("the session's processes are gone", || {
            processes("sleep 603").is_empty() && processes("sleep 604").is_empty()
        })
        .await;
        until("no session files are left", || {
            session_files(&t, "exec-drop").is_empty()
        })
        .await;
    }
    destroy_clean(&t, "exec-drop").await;
}

#[tokio::test]
async fn a_session_ends_with_its_instance() {
    require_root();
    let t = TestExecutor::new();
    running(&t, "exec-gone", "sleep 600").await;
    let mut s = t
        .exec
        .exec("exec-gone", &command(&["sleep", "605"]))
        .await
        .unwrap();
    until("sleep 605 runs", || !processes("sleep 605").is_empty()).await;
    destroy_clean(&t, "exec-gone").await;
    assert_eq!(finish(&mut s).await.2, exit(137, "the instance stopped"));
    assert!(processes("sleep 605").is_empty());
}

#[tokio::test]
async fn only_a_running_container_takes_sessions() {
    require_root();
    let t = TestExecutor::new();
    let e = t.exec.exec("no-such", &command(&["true"])).await.err();
    assert!(matches!(e, Some(SessionError::NotRunning { .. })), "{e:?}");
    t.exec
        .create(request("exec-done", sh("exit 0")))
        .await
        .unwrap();
    wait_event(&t.exec, "exec-done", LIMIT, |e| {
        matches!(e, ShimEvent::Exited { .. })
    })
    .await;
    let e = t.exec.exec("exec-done", &command(&["true"])).await.err();
    let e = e.expect("refused");
    assert_eq!(
        e.name(),
        lattice_specs::errors::ErrorName::InstanceNotRunning
    );
    assert_eq!(
        e.to_string(),
        "instance exec-done is not running on this cell"
    );
    let e = t.exec.forward("exec-done", "", 80).await.err();
    assert!(matches!(e, Some(SessionError::NotRunning { .. })), "{e:?}");
    destroy_clean(&t, "exec-done").await;
}

#[tokio::test]
async fn a_port_forward_reaches_the_instance_s_own_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    require_root();
    let t = TestExecutor::new();
    running(
        &t,
        "exec-fwd",
        "mkdir -p /www && echo inside > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
    )
    .await;
    let ip = t.exec.get("exec-fwd").unwrap().ip();
    // The server listens on the container's loopback only: the cell cannot reach it.
    assert!(std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(ip.into(), 8080),
        Duration::from_secs(2)
    )
    .is_err());
    let deadline = std::time::Instant::now() + LIMIT;
    let mut conn = loop {
        match t.exec.forward("exec-fwd", "localhost", 8080).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).await.unwrap();
    assert!(
        page.starts_with("HTTP/1.") && page.ends_with("inside\n"),
        "{page}"
    );
    // (An open socket made in the namespace keeps it, and its veth, alive.)
    drop(conn);

    let e = t
        .exec
        .forward("exec-fwd", "127.0.0.1", 9)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "nothing listens on 127.0.0.1:9 in instance exec-fwd"
    );
    let e = t.exec.forward("exec-fwd", "web", 80).await.unwrap_err();
    assert!(matches!(e, SessionError::BadHost { .. }), "{e}");
    destroy_clean(&t, "exec-fwd").await;
}

/// A rep over `t`'s executor (its BBS refuses every connection: sessions need none).
fn rep_over(t: &TestExecutor) -> std::sync::Arc<lattice_cell::rep::Rep> {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bbs_addr = free.local_addr().unwrap().to_string();
    drop(free);
    let bbs = lattice_bbs_client::GrpcBbs::connect_lazy_tls(&bbs_addr, None).unwrap();
    lattice_cell::rep::Rep::new(
        lattice_cell::rep::RepConfig::new("cell-1", "127.0.0.1:0"),
        std::sync::Arc::new(bbs),
        t.exec.clone(),
    )
}

/// The rep's HTTP routes over `t`'s executor on loopback, the caller's identity put
/// in each request's extensions as the TLS transport would.
async fn rep_routes(
    t: &TestExecutor,
    identity: lattice_specs::identity::Identity,
) -> (std::net::SocketAddr, std::sync::Arc<lattice_cell::rep::Rep>) {
    let rep = rep_over(t);
    let app = lattice_cell::server::http_app(rep.clone(), Default::default())
        .layer(axum::Extension(identity));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, rep)
}

fn tagged(handle: &str, script: &str) -> lattice_cell::executor::ContainerRequest {
    let mut req = request(handle, sh(script));
    req.tags = [
        ("process_guid", "web"),
        ("index", "0"),
        ("log_guid", "web-logs"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    req
}

#[tokio::test]
async fn the_rep_s_routes_relay_sessions_for_the_bbs_and_log_them() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    require_root();
    let t = TestExecutor::new();
    t.exec
        .create(tagged(
            "ws-web",
            "mkdir -p /www && echo page > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
        ))
        .await
        .unwrap();
    wait_event(&t.exec, "ws-web", LIMIT, |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
    let (addr, rep) = rep_routes(&t, lattice_tls::bbs_identity()).await;

    // Exec: the request, then frames until the exit.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/containers/ws-web/exec"))
            .await
            .unwrap();
    let req = ExecRequest {
        who: "dev-a".into(),
        ..command(&["sh", "-c", "read x; echo got-$x; exit 4"])
    };
    ws.send(Message::text(serde_json::to_string(&req).unwrap()))
        .await
        .unwrap();
    ws.send(Message::binary(Frame::Stdin(b"hi\n".to_vec()).encode()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let last = tokio::time::timeout(LIMIT, async {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => match Frame::decode(&b).unwrap() {
                    Frame::Stdout(b) => out.extend(b),
                    Frame::Control(c) => return c,
                    f => panic!("{f:?}"),
                },
                m => panic!("{m:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "got-hi\n");
    assert_eq!(last, exit(4, ""));
    assert!(matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None
    ));

    // Forward: bytes each way, an empty message for "no more".
    let url = format!("ws://{addr}/v1/containers/ws-web/forward?port=8080&host=&who=dev-a");
    let deadline = std::time::Instant::now() + LIMIT;
    let page = loop {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::binary(
            b"GET /index.html HTTP/1.0\r\n\r\n".to_vec(),
        ))
        .await
        .unwrap();
        ws.send(Message::binary(Vec::new())).await.unwrap();
        let mut page = Vec::new();
        let mut refused = None;
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(b) if b.is_empty() => break,
                Message::Binary(b) => page.extend(b),
                Message::Text(t) => refused = Some(t.to_string()),
                _ => break,
            }
        }
        match refused {
            // httpd may not listen yet.
            Some(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(e) => panic!("{e}"),
            None => break String::from_utf8_lossy(&page).into_owned(),
        }
    };
    assert!(
        page.starts_with("HTTP/1.") && page.ends_with("page\n"),
        "{page}"
    );

    // Nothing listening: a ForwardError, then the close.
    let url = format!("ws://{addr}/v1/containers/ws-web/forward?port=9");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => {
            let e: lattice_specs::exec::ForwardError = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(
                e.message,
                "nothing listens on 127.0.0.1:9 in instance ws-web"
            );
        }
        m => panic!("{m:?}"),
    }

    // The app's log and the metrics say what happened.
    let lines: Vec<String> = rep
        .logs
        .buffer
        .recent("web-logs")
        .into_iter()
        .filter(|m| m.source == "SSH")
        .map(|m| m.message)
        .collect();
    assert!(
        lines.contains(
            &"ssh session by dev-a opened on web/0 (sh -c read x; echo got-$x; exit 4)".to_string()
        ),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ssh session by dev-a on web/0 closed: exit status 4 after ")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"port forward to 127.0.0.1:8080 opened by dev-a on web/0".to_string()),
        "{lines:?}"
    );
    let metrics = rep.metrics.render();
    assert!(
        metrics.contains(r#"cell_exec_sessions_total{kind="exec",outcome="exited"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cell_exec_sessions_total{kind="forward",outcome="error"} 1"#),
        "{metrics}"
    );
    destroy_clean(&t, "ws-web").await;
}

#[tokio::test]
async fn the_rep_s_routes_refuse_other_identities_and_stopped_instances() {
    use lattice_specs::identity::{Identity, Role};
    use tokio_tungstenite::tungstenite::Error;
    require_root();
    let t = TestExecutor::new();
    t.exec
        .create(tagged("ws-refused", "sleep 600"))
        .await
        .unwrap();
    wait_event(&t.exec, "ws-refused", LIMIT, |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
    let status = |r: Result<_, Error>| match r {
        Err(Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Ok(_) => panic!("the session opened"),
        Err(e) => panic!("{e}"),
    };
    for role in [Role::Brain, Role::Cell, Role::Router] {
        let (addr, _) = rep_routes(&t, Identity::new(role, &format!("{role}-1")).unwrap()).await;
        for path in ["exec", "forward?port=80"] {
            let url = format!("ws://{addr}/v1/containers/ws-refused/{path}");
            let (code, body) = status(tokio_tungstenite::connect_async(&url).await);
            assert_eq!(code, 403, "{role} {path}: {body}");
            assert!(body.contains("Forbidden"), "{body}");
        }
    }
    let (addr, _) = rep_routes(&t, lattice_tls::bbs_identity()).await;
    let url = format!("ws://{addr}/v1/containers/no-such/exec");
    let (code, body) = status(tokio_tungstenite::connect_async(&url).await);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("InstanceNotRunning"), "{body}");
    let url = format!("ws://{addr}/v1/containers/ws-refused/forward?port=80&host=db");
    let (code, body) = status(tokio_tungstenite::connect_async(&url).await);
    assert_eq!(code, 400, "{body}");
    destroy_clean(&t, "ws-refused").await;
}

/// A forward whose instance goes ends (its socket would hold the instance's
/// network namespace, and its veth, alive), and leaves nothing behind.
#[tokio::test]
async fn a_forward_ends_with_its_instance() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    require_root();
    let t = TestExecutor::new();
    t.exec
        .create(tagged("ws-fwd-gone", "sleep 600 | nc -l -p 7000"))
        .await
        .unwrap();
    wait_event(&t.exec, "ws-fwd-gone", LIMIT, |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
    let (addr, _) = rep_routes(&t, lattice_tls::bbs_identity()).await;
    let url = format!("ws://{addr}/v1/containers/ws-fwd-gone/forward?port=7000");
    let deadline = std::time::Instant::now() + LIMIT;
    let mut ws = loop {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        // Connected unless an error comes at once.
        match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            Err(_) => break ws,
            Ok(m) if std::time::Instant::now() < deadline => {
                let _ = m;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(m) => panic!("no forward: {m:?}"),
        }
    };
    t.exec.destroy("ws-fwd-gone").await;
    let ended = tokio::time::timeout(LIMIT, async {
        let mut said = String::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) => said = t.to_string(),
                Message::Close(_) => break,
                _ => {}
            }
        }
        said
    })
    .await
    .expect("the forward ended");
    assert!(ended.contains("the instance stopped"), "{ended}");
    let left = leftovers(&t.exec, "ws-fwd-gone");
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn node(ca: &lattice_tls::ca::Ca, who: &lattice_tls::Identity) -> lattice_tls::NodeTls {
    ca.issue_node(who, &[], Duration::from_secs(3600)).unwrap()
}

/// The rep's server as `lattice cell` runs it (mutual TLS, the identity from the
/// certificate, HTTP/1 upgrades): the BBS's certificate opens a session, a brain's
/// is refused.
#[tokio::test]
async fn over_mutual_tls_only_the_bbs_opens_sessions() {
    use futures::{SinkExt, StreamExt};
    use lattice_tls::{Identity, Role};
    use tokio_tungstenite::tungstenite::{Error, Message};
    require_root();
    let t = TestExecutor::new();
    t.exec.create(tagged("ws-mtls", "sleep 600")).await.unwrap();
    wait_event(&t.exec, "ws-mtls", LIMIT, |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
    let ca = lattice_tls::ca::Ca::generate().unwrap();
    let cell = Identity::new(Role::Cell, "cell-1").unwrap();
    let server_tls = node(&ca, &cell)
        .server_config(lattice_tls::ClientAuth::Required)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = lattice_tls::server::Listener::new(tcp, Some(server_tls)).unwrap();
    let addr = listener.local_addr();
    let app = lattice_tls::server::with_identity(lattice_cell::server::http_app(
        rep_over(&t),
        Default::default(),
    ));
    tokio::spawn(lattice_tls::http::serve(
        listener,
        app,
        Default::default(),
        std::future::pending(),
    ));
    let open = |who: Identity| {
        let (ca, cell) = (&ca, &cell);
        async move {
            let config = node(ca, &who).client_config(&[b"http/1.1"]).unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(cell.dns_name()).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap();
            let url = format!("ws://{addr}/v1/containers/ws-mtls/exec");
            tokio_tungstenite::client_async(url, tls).await
        }
    };

    let (mut ws, _) = open(lattice_tls::bbs_identity()).await.unwrap();
    ws.send(Message::text(
        serde_json::to_string(&command(&["echo", "over-tls"])).unwrap(),
    ))
    .await
    .unwrap();
    let mut frames = Vec::new();
    while let Some(Ok(Message::Binary(b))) = ws.next().await {
        frames.push(Frame::decode(&b).unwrap());
    }
    assert_eq!(
        frames,
        vec![
            Frame::Stdout(b"over-tls\n".to_vec()),
            Frame::Control(exit(0, ""))
        ]
    );

    match open(Identity::new(Role::Brain, "brain-1").unwrap()).await {
        Err(Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        Ok(_) => panic!("a brain opened a session"),
        Err(e) => panic!("{e}"),
    }
    destroy_clean(&t, "ws-mtls").await;
}
