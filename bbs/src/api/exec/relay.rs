//! Carrying one session's WebSocket messages between the client (`ltc`, through the
//! public API) and the rep, both ways, until either side closes; then the other side is
//! closed too. An exec session's first client message is its request, which gets
//! `who` set from the caller ([`with_who`]) whatever the client put there.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::ws::{self, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{Control, ExecRequest, ForwardError, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as RepCloseFrame;
use tokio_tungstenite::tungstenite::{Message as RepMessage, Utf8Bytes as RepText};

use crate::cell_client::RepSocket;

/// What a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Forward,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Forward => "forward",
        }
    }
}

/// How long closing one side may take once the other has gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The exec request `request` (JSON) with `who` set; Err: why it is not one.
pub fn with_who(request: &str, who: &str) -> Result<String, String> {
    let mut r: ExecRequest = serde_json::from_str(request).map_err(|e| {
        format!("the first message of an exec session must be the exec request (JSON): {e}")
    })?;
    r.who = who.to_string();
    Ok(serde_json::to_string(&r).expect("an exec request serializes"))
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The client closed or went away: the rep is told, so the session ends there.
    Client(Option<RepCloseFrame>),
    /// The rep closed (the session ended there), or broke (None): the client is told.
    Rep(Option<ws::CloseFrame>),
    /// The client's first message was not an exec request.
    BadRequest(String),
    /// The BBS is shutting down.
    Shutdown,
}

impl End {
    fn outcome(&self) -> &'static str {
        match self {
            End::Client(_) => "closed_by_client",
            End::Rep(Some(_)) => "closed_by_rep",
            End::Rep(None) => "rep_broke",
            End::BadRequest(_) => "bad_request",
            End::Shutdown => "shutdown",
        }
    }
}

/// Relays one session until it ends (or `closing` resolves: the BBS stops) and closes
/// both sides. `who` is set in an exec session's request.
pub async fn run(
    client: WebSocket,
    rep: RepSocket,
    kind: Kind,
    who: String,
    closing: impl Future<Output = ()>,
) {
    let started = Instant::now();
    let open = crate::metrics::API_EXEC_OPEN.with_label_values(&[kind.as_str()]);
    open.inc();
    let (mut c_tx, mut c_rx) = client.split();
    let (mut r_tx, mut r_rx) = rep.split();
    let first_gets_who = (kind == Kind::Exec).then_some(who.as_str());
    let end = tokio::select! {
        e = up(&mut c_rx, &mut r_tx, first_gets_who) => e,
        e = down(&mut r_rx, &mut c_tx) => e,
        () = closing => End::Shutdown,
    };
    // Counted before the last words, so a client that read them finds the count.
    let outcome = end.outcome();
    crate::metrics::API_EXEC_SESSIONS
        .with_label_values(&[kind.as_str(), outcome])
        .inc();
    finish(end, kind, &mut c_tx, &mut r_tx).await;
    open.dec();
    tracing::info!(
        outcome,
        seconds = started.elapsed().as_secs_f64(),
        "session ended"
    );
}

/// Client to rep, until the client closes or either side breaks.
async fn up(
    rx: &mut SplitStream<WebSocket>,
    tx: &mut SplitSink<RepSocket, RepMessage>,
    mut first_gets_who: Option<&str>,
) -> End {
    while let Some(m) = rx.next().await {
        let Ok(m) = m else {
            return End::Client(None);
        };
        let out = match m {
            ws::Message::Close(f) => {
                return End::Client(f.map(|f| RepCloseFrame {
                    code: CloseCode::from(f.code),
                    reason: f.reason.as_str().into(),
                }))
            }
            ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
            m => match (first_gets_who.take(), m) {
                (Some(who), ws::Message::Text(t)) => match with_who(t.as_str(), who) {
                    Ok(json) => RepMessage::text(json),
                    Err(why) => return End::BadRequest(why),
                },
                (Some(_), _) => {
                    return End::BadRequest(
                        "the first message of an exec session must be the exec request (a text message, JSON)".into(),
                    )
                }
                (None, ws::Message::Text(t)) => RepMessage::text(t.as_str()),
                (None, ws::Message::Binary(b)) => RepMessage::Binary(b),
                (None, _) => continue,
            },
        };
        if tx.send(out).await.is_err() {
            return End::Rep(None);
        }
    }
    End::Client(None)
}

/// Rep to client, until the rep closes or either side breaks.
async fn down(rx: &mut SplitStream<RepSocket>, tx: &mut SplitSink<WebSocket, ws::Message>) -> End {
    while let Some(m) = rx.next().await {
        let Ok(m) = m else {
            return End::Rep(None);
        };
        let out = match m {
            RepMessage::Close(f) => {
                return End::Rep(Some(f.map_or(
                    ws::CloseFrame {
                        code: ws::close_code::NORMAL,
                        reason: "".into(),
                    },
                    |f| ws::CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    },
                )))
            }
            RepMessage::Text(t) => ws::Message::Text(t.as_str().into()),
            RepMessage::Binary(b) => ws::Message::Binary(b),
            RepMessage::Ping(_) | RepMessage::Pong(_) | RepMessage::Frame(_) => continue,
        };
        if tx.send(out).await.is_err() {
            return End::Client(None);
        }
    }
    End::Rep(None)
}

/// The message that tells the client why its session ended when the rep could not.
fn last_word(kind: Kind, name: ErrorName, message: &str) -> ws::Message {
    match kind {
        Kind::Exec => ws::Message::Binary(
            Frame::Control(Control::Error {
                name: name.to_string(),
                message: message.to_string(),
            })
            .encode()
            .into(),
        ),
        Kind::Forward => ws::Message::Text(
            serde_json::to_string(&ForwardError {
                message: message.to_string(),
            })
            .expect("a forward error serializes")
            .into(),
        ),
    }
}

/// Closes both sides after `end` (each within [`CLOSE_TIMEOUT`]).
async fn finish(
    end: End,
    kind: Kind,
    client: &mut SplitSink<WebSocket, ws::Message>,
    rep: &mut SplitSink<RepSocket, RepMessage>,
) {
    let (to_client, to_rep): (Vec<ws::Message>, Option<RepCloseFrame>) = match end {
        End::Client(f) => (vec![], f),
        End::Rep(Some(f)) => (vec![ws::Message::Close(Some(f))], None),
        End::Rep(None) => (
            vec![
                last_word(
                    kind,
                    ErrorName::Unknown,
                    "the connection to the instance's cell broke",
                ),
                ws::Message::Close(None),
            ],
            None,
        ),
        End::BadRequest(why) => (
            vec![
                last_word(kind, ErrorName::InvalidRequest, &why),
                ws::Message::Close(None),
            ],
            None,
        ),
        End::Shutdown => (
            vec![
                last_word(kind, ErrorName::Unknown, "the API is shutting down"),
                ws::Message::Close(Some(ws::CloseFrame {
                    code: ws::close_code::AWAY,
                    reason: "the API is shutting down".into(),
                })),
            ],
            Some(RepCloseFrame {
                code: CloseCode::Away,
                reason: RepText::from_static("the API is shutting down"),
            }),
        ),
    };
    let to_client = async {
        for m in to_client {
            if client.send(m).await.is_err() {
                break;
            }
        }
        let _ = client.close().await;
    };
    let to_rep = async {
        let _ = rep.send(RepMessage::Close(to_rep)).await;
        let _ = rep.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, futures::future::join(to_client, to_rep)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_request_says_who_whatever_the_client_said() {
        let sent = r#"{"command":["ls","-l"],"tty":true,"cols":80,"rows":24,"who":"admin"}"#;
        let got: ExecRequest = serde_json::from_str(&with_who(sent, "dev-a").unwrap()).unwrap();
        assert_eq!(got.who, "dev-a");
        assert_eq!(got.command, ["ls", "-l"]);
        assert!(got.tty);
        assert_eq!((got.cols, got.rows), (80, 24));
        let bare: ExecRequest = serde_json::from_str(&with_who("{}", "local").unwrap()).unwrap();
        assert_eq!(bare.who, "local");
        let why = with_who("ls -l", "dev-a").unwrap_err();
        assert!(
            why.starts_with("the first message of an exec session must be the exec request"),
            "{why}"
        );
    }

    #[test]
    fn the_last_word_fits_the_session() {
        let ws::Message::Binary(b) = last_word(Kind::Exec, ErrorName::Unknown, "broke") else {
            panic!("an exec session's last word is a frame")
        };
        assert_eq!(
            Frame::decode(&b).unwrap(),
            Frame::Control(Control::Error {
                name: "Unknown".into(),
                message: "broke".into()
            })
        );
        let ws::Message::Text(t) = last_word(Kind::Forward, ErrorName::Unknown, "broke") else {
            panic!("a forward's last word is a ForwardError")
        };
        let e: ForwardError = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(e.message, "broke");
    }
}
