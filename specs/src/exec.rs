//! Extension: sessions inside running work (`ltc ssh`), as they travel from `ltc`
//! through the public API to the rep of the instance's cell. Nothing here does I/O.
//!
//! Both hops are WebSockets, authenticated as any call on their link is (the API's
//! token or Basic credentials from `ltc`; the BBS's certificate towards the rep):
//! - **exec**: `GET` [`API_LRP_EXEC`] or [`API_TASK_EXEC`] upgraded to a WebSocket;
//!   the client's first message is a text [`ExecRequest`] (JSON). The API checks the
//!   target before upgrading (a 4xx receptor error otherwise: no such app, index out of
//!   range, instance not running) and relays every message to the rep's
//!   [`REP_EXEC`] unchanged, except that it fills [`ExecRequest::who`]. After the
//!   request, every message is binary, a [`Frame`]: one channel byte, then the payload.
//!   The server's last frame is a [`Control::Exit`] (or [`Control::Error`]), then it
//!   closes.
//! - **port forward**: `GET` [`API_LRP_FORWARD`] / [`API_TASK_FORWARD`] with the query
//!   [`ForwardQuery`], one WebSocket per forwarded TCP connection. The rep connects to
//!   `host:port` inside the instance's network namespace; then binary messages are the
//!   connection's bytes each way, an empty binary message means "no more bytes from my
//!   side" (a TCP half close), and a text message is a [`ForwardError`] (JSON) after
//!   which the server closes: the connection could not be made or broke.

use serde::{Deserialize, Serialize};

/// The public API's exec route for an instance (axum path syntax).
pub const API_LRP_EXEC: &str = "/v1/actual_lrps/{process_guid}/index/{index}/exec";
/// The public API's exec route for a running Task.
pub const API_TASK_EXEC: &str = "/v1/tasks/{task_guid}/exec";
/// The public API's port-forward route for an instance.
pub const API_LRP_FORWARD: &str = "/v1/actual_lrps/{process_guid}/index/{index}/forward";
/// The public API's port-forward route for a running Task.
pub const API_TASK_FORWARD: &str = "/v1/tasks/{task_guid}/forward";
/// The rep's exec route (the container handle: an instance guid or a task guid).
pub const REP_EXEC: &str = "/v1/containers/{handle}/exec";
/// The rep's port-forward route.
pub const REP_FORWARD: &str = "/v1/containers/{handle}/forward";

/// What to run. An empty `command` runs the image's shell (`/bin/bash` when the image
/// has one, else `/bin/sh`) as a login-less interactive shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecRequest {
    /// Program and arguments (no shell parsing).
    pub command: Vec<String>,
    /// Run it on a terminal (a pseudo-terminal inside the container): stdout and
    /// stderr come as one stream on [`Channel::Stdout`], and `cols`/`rows` size it.
    pub tty: bool,
    pub cols: u16,
    pub rows: u16,
    /// Extra environment (e.g. `TERM`), over the instance's own.
    pub env: Vec<EnvVar>,
    /// The user inside the container; empty: the user the instance's action runs as.
    pub user: String,
    /// Who opened the session, as the API authenticated them (token name or user):
    /// set by the API, whatever the client sent. The rep logs it.
    pub who: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// The channel byte that starts every binary frame of an exec session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Channel {
    /// Client to server: bytes for the process's stdin.
    Stdin = 0,
    /// Server to client: the process's stdout (and its stderr on a terminal).
    Stdout = 1,
    /// Server to client: the process's stderr (without a terminal).
    Stderr = 2,
    /// Either way: a [`Control`] message (JSON).
    Control = 3,
}

impl Channel {
    pub fn from_byte(b: u8) -> Option<Channel> {
        Some(match b {
            0 => Channel::Stdin,
            1 => Channel::Stdout,
            2 => Channel::Stderr,
            3 => Channel::Control,
            _ => return None,
        })
    }
}

/// Control messages of an exec session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Client: the terminal's new size.
    Resize { cols: u16, rows: u16 },
    /// Client: deliver this signal (`INT`, `TERM`, `KILL`, `HUP`, `QUIT`) to the process.
    Signal { signal: String },
    /// Client: stdin is closed (the process reads EOF).
    Eof,
    /// Server, last: the process ended with `status` (a shell's: 128+N for signal N);
    /// `reason` says why when it was not its own doing ("the instance stopped",
    /// "the session was closed"), else empty.
    Exit { status: i32, reason: String },
    /// Server, last: the session could not start or broke (`name` an
    /// [`crate::errors::ErrorName`] string, e.g. `InstanceNotRunning`).
    Error { name: String, message: String },
}

/// One binary message of an exec session, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Control(Control),
}

/// Why a binary message is not a [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an empty exec frame (no channel byte)")]
    Empty,
    #[error("unknown exec channel {0}")]
    UnknownChannel(u8),
    #[error("a bad control message: {0}")]
    BadControl(String),
}

impl Frame {
    /// The binary message carrying this frame.
    pub fn encode(&self) -> Vec<u8> {
        let (channel, payload): (Channel, std::borrow::Cow<[u8]>) = match self {
            Frame::Stdin(b) => (Channel::Stdin, b.as_slice().into()),
            Frame::Stdout(b) => (Channel::Stdout, b.as_slice().into()),
            Frame::Stderr(b) => (Channel::Stderr, b.as_slice().into()),
            Frame::Control(c) => (
                Channel::Control,
                serde_json::to_vec(c)
                    .expect("control messages serialize")
                    .into(),
            ),
        };
        let mut out = Vec::with_capacity(1 + payload.len());
        out.push(channel as u8);
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes one binary message.
    pub fn decode(msg: &[u8]) -> Result<Frame, FrameError> {
        let (&first, payload) = msg.split_first().ok_or(FrameError::Empty)?;
        Ok(
            match Channel::from_byte(first).ok_or(FrameError::UnknownChannel(first))? {
                Channel::Stdin => Frame::Stdin(payload.to_vec()),
                Channel::Stdout => Frame::Stdout(payload.to_vec()),
                Channel::Stderr => Frame::Stderr(payload.to_vec()),
                Channel::Control => Frame::Control(
                    serde_json::from_slice(payload)
                        .map_err(|e| FrameError::BadControl(e.to_string()))?,
                ),
            },
        )
    }
}

/// The query of a port-forward route: where to connect, inside the instance's network
/// namespace. `host` defaults to `127.0.0.1` (the instance's own loopback) and is an
/// IP address or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardQuery {
    pub port: u16,
    #[serde(default)]
    pub host: String,
    /// Set by the API for the rep's log line (like [`ExecRequest::who`]).
    #[serde(default)]
    pub who: String,
}

/// Why a forwarded connection could not be made or broke (a text message, then close).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardError {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::Stdout(vec![]),
            Frame::Stderr(vec![0, 255]),
            Frame::Control(Control::Resize { cols: 80, rows: 24 }),
            Frame::Control(Control::Exit {
                status: 130,
                reason: String::new(),
            }),
            Frame::Control(Control::Eof),
        ] {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn bad_frames_say_why() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[9, 1]), Err(FrameError::UnknownChannel(9)));
        assert!(matches!(
            Frame::decode(b"\x03{\"type\":\"dance\"}"),
            Err(FrameError::BadControl(_))
        ));
    }

    #[test]
    fn control_json_is_tagged() {
        let j = serde_json::to_string(&Control::Signal {
            signal: "INT".into(),
        })
        .unwrap();
        assert_eq!(j, r#"{"type":"signal","signal":"INT"}"#);
    }
}
