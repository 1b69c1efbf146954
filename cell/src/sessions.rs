//! The rep's session routes (`ltc ssh`, reached through the public API): exec
//! ([`REP_EXEC`]) and port forward ([`REP_FORWARD`]) into a running container, as
//! WebSockets (the protocol is `lattice_specs::exec`'s). Each session is a line in the
//! app's log (source `SSH`), counted in `cell_exec_sessions_total{kind,outcome}` and
//! `cell_exec_sessions_open{kind}`, and traced. A client that goes away ends its
//! session: an exec's process is killed, a forward's connection closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{Control, ExecRequest, ForwardError, ForwardQuery, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use crate::executor::exec::{ExecSession, SessionError};
use crate::executor::ContainerInfo;
use crate::rep::Rep;

/// How long a client has to send its exec request after the upgrade.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The log source of session lines.
const SOURCE: &str = "SSH";

/// `exec` or `forward`, for metrics and spans.
#[derive(Clone, Copy)]
enum Kind {
    Exec,
    Forward,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Forward => "forward",
        }
    }
}

/// Counts a session open while it lives, and its outcome when it ends.
struct Counted {
    rep: Arc<Rep>,
    kind: Kind,
    outcome: &'static str,
}

impl Counted {
    fn new(rep: Arc<Rep>, kind: Kind) -> Counted {
        rep.metrics
            .sessions_open
            .with_label_values(&[kind.label()])
            .inc();
        Counted {
            rep,
            kind,
            outcome: "closed",
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let m = &self.rep.metrics;
        m.sessions_open
            .with_label_values(&[self.kind.label()])
            .dec();
        m.sessions
            .with_label_values(&[self.kind.label(), self.outcome])
            .inc();
    }
}

/// The receptor's error shape with a status.
fn refused(status: StatusCode, name: ErrorName, message: String) -> Response {
    let body = lattice_specs::receptor::Error {
        name: name.to_string(),
        message,
    };
    (status, axum::Json(body)).into_response()
}

/// How long a session waits for the container of work this cell holds: a Task is
/// RUNNING in the BBS as the cell starts it, a moment before its container runs.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The container when it runs here, waited for while this cell is still making it.
async fn target(rep: &Rep, handle: &str) -> Result<ContainerInfo, SessionError> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        let found = rep.executor().running(handle).and_then(|_| {
            rep.executor()
                .get(handle)
                .ok_or_else(|| SessionError::NotRunning {
                    handle: handle.to_string(),
                })
        });
        match found {
            Err(_) if rep.holds(handle) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            found => return found,
        }
    }
}

/// A session refused before it opened (409 `InstanceNotRunning`), counted.
fn refuse(rep: &Rep, kind: Kind, e: SessionError) -> Response {
    rep.metrics
        .sessions
        .with_label_values(&[kind.label(), "refused"])
        .inc();
    refused(StatusCode::CONFLICT, e.name(), e.to_string())
}

/// What a container is, for log lines: `PROCESS_GUID/INDEX`, `task GUID`, or its handle.
fn what(c: &ContainerInfo) -> String {
    let tags = &c.request.tags;
    match (
        tags.get("process_guid"),
        tags.get("index"),
        tags.get("task_guid"),
    ) {
        (Some(p), Some(i), _) => format!("{p}/{i}"),
        (_, _, Some(t)) => format!("task {t}"),
        _ => c.handle().to_string(),
    }
}

fn log_guid(c: &ContainerInfo) -> String {
    c.request.tags.get("log_guid").cloned().unwrap_or_default()
}

fn who(who: &str) -> &str {
    if who.is_empty() {
        "an unnamed caller"
    } else {
        who
    }
}

/// The command as the log line shows it.
fn shown(command: &[String]) -> String {
    if command.is_empty() {
        "a shell".into()
    } else {
        command.join(" ")
    }
}

/// `GET REP_EXEC`: a WebSocket whose first message is the [`ExecRequest`].
pub async fn exec(
    State(rep): State<Arc<Rep>>,
    Path(handle): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let c = match target(&rep, &handle).await {
        Ok(c) => c,
        Err(e) => return refuse(&rep, Kind::Exec, e),
    };
    let span = tracing::info_span!("exec_session", %handle);
    ws.on_upgrade(move |socket| exec_session(rep, c, socket).instrument(span))
}

async fn exec_session(rep: Arc<Rep>, c: ContainerInfo, mut socket: WebSocket) {
    let mut counted = Counted::new(rep.clone(), Kind::Exec);
    let req = match first_request(&mut socket).await {
        Ok(r) => r,
        Err(message) => {
            counted.outcome = "error";
            let e = Control::Error {
                name: ErrorName::InvalidRequest.to_string(),
                message,
            };
            return end(socket, Some(Frame::Control(e))).await;
        }
    };
    let session = match rep.executor().exec(c.handle(), &req).await {
        Ok(s) => s,
        Err(e) => {
            counted.outcome = "error";
            let e = Control::Error {
                name: e.name().to_string(),
                message: e.to_string(),
            };
            return end(socket, Some(Frame::Control(e))).await;
        }
    };
    let (guid, on, by) = (log_guid(&c), what(&c), who(&req.who).to_string());
    tracing::info!(who = %by, command = %shown(&req.command), tty = req.tty, "exec session opened");
    rep.logs.from(
        &guid,
        SOURCE,
        format!(
            "ssh session by {by} opened on {on} ({})",
            shown(&req.command)
        ),
    );
    let started = Instant::now();
    let (last, socket) = relay_exec(socket, session).await;
    let secs = started.elapsed().as_secs_f64();
    let line = match &last {
        Some(Control::Exit { status, reason }) if reason.is_empty() => {
            format!("exit status {status}")
        }
        Some(Control::Exit { status, reason }) => format!("exit status {status} ({reason})"),
        Some(Control::Error { message, .. }) => format!("failed: {message}"),
        _ => "by the client".to_string(),
    };
    counted.outcome = match &last {
        Some(Control::Exit { .. }) => "exited",
        Some(Control::Error { .. }) => "error",
        _ => "closed",
    };
    tracing::info!(who = %by, "exec session closed: {line} after {secs:.1}s");
    rep.logs.from(
        &guid,
        SOURCE,
        format!("ssh session by {by} on {on} closed: {line} after {secs:.1}s"),
    );
    if let Some(socket) = socket {
        end(socket, None).await;
    }
}

/// The client's [`ExecRequest`] (its first message, text JSON).
async fn first_request(socket: &mut WebSocket) -> Result<ExecRequest, String> {
    let first = tokio::time::timeout(REQUEST_TIMEOUT, socket.recv())
        .await
        .map_err(|_| format!("no exec request within {}s", REQUEST_TIMEOUT.as_secs()))?;
    match first {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())
            .map_err(|e| format!("invalid exec request (JSON ExecRequest): {e}")),
        Some(Ok(_)) => Err("the first message must be the exec request (text JSON)".into()),
        _ => Err("the client went away before its exec request".into()),
    }
}

/// Relays frames both ways until the process's last frame (returned, with the
/// socket to close) or the client going away (`None`: the session is dropped, the
/// helper kills the process).
async fn relay_exec(
    socket: WebSocket,
    session: ExecSession,
) -> (Option<Control>, Option<WebSocket>) {
    let ExecSession {
        mut sender,
        mut receiver,
    } = session;
    let (mut tx, mut rx) = socket.split();
    let from_client = async {
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(b) => match Frame::decode(&b) {
                    Ok(f) => {
                        if sender.send(&f).await.is_err() {
                            // The helper is ending: its last frame comes.
                            return std::future::pending().await;
                        }
                    }
                    Err(e) => tracing::debug!("a bad frame from the client ignored: {e}"),
                },
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    let to_client = async {
        loop {
            match receiver.recv().await {
                Ok(Some(f)) => {
                    let last = match &f {
                        Frame::Control(c @ (Control::Exit { .. } | Control::Error { .. })) => {
                            Some(c.clone())
                        }
                        _ => None,
                    };
                    if tx.send(Message::Binary(f.encode().into())).await.is_err() {
                        return None;
                    }
                    if last.is_some() {
                        return last;
                    }
                }
                Ok(None) | Err(_) => {
                    let e = Control::Error {
                        name: ErrorName::Unknown.to_string(),
                        message: "the exec helper ended without an exit status".into(),
                    };
                    let _ = tx
                        .send(Message::Binary(Frame::Control(e.clone()).encode().into()))
                        .await;
                    return Some(e);
                }
            }
        }
    };
    let last = tokio::select! {
        () = from_client => None,
        last = to_client => last,
    };
    match last {
        Some(c) => (Some(c), tx.reunite(rx).ok()),
        None => (None, None),
    }
}

/// Sends `last` (if any) and closes the socket.
async fn end(mut socket: WebSocket, last: Option<Frame>) {
    if let Some(f) = last {
        let _ = socket.send(Message::Binary(f.encode().into())).await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// `GET REP_FORWARD?port=&host=&who=`: a WebSocket carrying one TCP connection's bytes.
pub async fn forward(
    State(rep): State<Arc<Rep>>,
    Path(handle): Path<String>,
    Query(q): Query<ForwardQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = crate::executor::exec::forward_addr(&q.host, q.port) {
        return refused(StatusCode::BAD_REQUEST, e.name(), e.to_string());
    }
    let c = match target(&rep, &handle).await {
        Ok(c) => c,
        Err(e) => return refuse(&rep, Kind::Forward, e),
    };
    let span = tracing::info_span!("forward_session", %handle, port = q.port);
    ws.on_upgrade(move |socket| forward_session(rep, c, q, socket).instrument(span))
}

async fn forward_session(rep: Arc<Rep>, c: ContainerInfo, q: ForwardQuery, mut socket: WebSocket) {
    let mut counted = Counted::new(rep.clone(), Kind::Forward);
    let conn = match rep.executor().forward(c.handle(), &q.host, q.port).await {
        Ok(conn) => conn,
        Err(e) => {
            counted.outcome = "error";
            tracing::info!("port forward refused: {e}");
            return forward_error(socket, e.to_string()).await;
        }
    };
    let by = who(&q.who).to_string();
    let host = if q.host.is_empty() {
        "127.0.0.1"
    } else {
        &q.host
    };
    tracing::info!(who = %by, "port forward to {host}:{} opened", q.port);
    rep.logs.from(
        &log_guid(&c),
        SOURCE,
        format!(
            "port forward to {host}:{} opened by {by} on {}",
            q.port,
            what(&c)
        ),
    );
    let gone = instance_gone(rep.clone(), c.handle().to_string());
    if let Err(e) = relay_forward(&mut socket, conn, gone).await {
        counted.outcome = "error";
        return forward_error(socket, format!("the forwarded connection broke: {e}")).await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn forward_error(mut socket: WebSocket, message: String) {
    let json = serde_json::to_string(&ForwardError { message }).unwrap_or_default();
    let _ = socket.send(Message::Text(json.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// How often a forward checks that its instance still runs.
const FORWARD_INSTANCE_CHECK: Duration = Duration::from_secs(1);

/// Resolves once the container `handle` no longer runs.
async fn instance_gone(rep: Arc<Rep>, handle: String) {
    loop {
        tokio::time::sleep(FORWARD_INSTANCE_CHECK).await;
        if rep.executor().running(&handle).is_err() {
            return;
        }
    }
}

/// Relays bytes both ways until both sides said they are done (an empty binary
/// message from the client, EOF from the connection), the client left, or `gone`
/// (the instance stopped: its socket, which holds the instance's network namespace,
/// closes with it).
async fn relay_forward(
    socket: &mut WebSocket,
    mut conn: tokio::net::TcpStream,
    gone: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut client_done, mut conn_done) = (false, false);
    tokio::pin!(gone);
    while !(client_done && conn_done) {
        tokio::select! {
            () = &mut gone => {
                return Err(std::io::Error::other("the instance stopped"));
            }
            msg = socket.recv(), if !client_done => match msg {
                Some(Ok(Message::Binary(b))) if b.is_empty() => {
                    client_done = true;
                    conn.shutdown().await?;
                }
                Some(Ok(Message::Binary(b))) => conn.write_all(&b).await?,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
            n = conn.read(&mut buf), if !conn_done => {
                let n = n?;
                if n == 0 {
                    conn_done = true;
                }
                if socket.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(tags: &[(&str, &str)]) -> ContainerInfo {
        let mut req = crate::testing::request("h-1", Default::default());
        req.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ContainerInfo {
            request: req,
            network: None,
            ports: vec![],
            created_at: 0,
        }
    }

    #[test]
    fn log_lines_name_the_instance_or_the_task() {
        let lrp = container(&[("process_guid", "web"), ("index", "2"), ("log_guid", "g")]);
        assert_eq!(what(&lrp), "web/2");
        assert_eq!(log_guid(&lrp), "g");
        assert_eq!(what(&container(&[("task_guid", "t-9")])), "task t-9");
        assert_eq!(what(&container(&[])), "h-1");
        assert_eq!(shown(&[]), "a shell");
        assert_eq!(shown(&["ls".into(), "-l".into()]), "ls -l");
        assert_eq!(who(""), "an unnamed caller");
    }
}
