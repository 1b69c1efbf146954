//! One `direct-tcpip` channel (`ssh -L`, `ltc ssh -L`) carried over the exec path's
//! port forward: the rep connects to the address inside the instance's network
//! namespace, then the channel's bytes are the connection's both ways; the client's
//! EOF is a half close (an empty binary message), the rep's the channel's EOF, and a
//! text message from the rep (a `ForwardError`) ends it with the reason logged.

use futures::{SinkExt, StreamExt};
use lattice_specs::exec::ForwardError;
use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio_tungstenite::tungstenite::Message as RepMessage;

use crate::cell_client::RepSocket;

/// Why a forward target is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("port {0} is not a TCP port (1-65535)")]
    Port(u32),
    #[error(
        "host {0:?}: give an IP address inside the instance or localhost (names are not resolved)"
    )]
    Host(String),
}

/// The host and port a `direct-tcpip` names, as the forward route takes them
/// (`localhost` and IP addresses: the instance's own network).
pub fn target(host: &str, port: u32) -> Result<(String, u16), BadTarget> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(BadTarget::Port(port))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok((host.to_string(), port));
    }
    Err(BadTarget::Host(host.to_string()))
}

/// How a forward ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Both sides done, or either closed.
    Closed,
    /// The rep said why it could not connect or the connection broke.
    Failed(String),
}

/// Carries the connection until both sides are done or either goes.
pub async fn run(channel: Channel<Msg>, mut rep: RepSocket) -> Ended {
    let (mut reader, writer) = channel.split();
    let (mut client_done, mut rep_done) = (false, false);
    let ended = loop {
        if client_done && rep_done {
            break Ended::Closed;
        }
        tokio::select! {
            m = reader.wait(), if !client_done => match m {
                Some(ChannelMsg::Data { data }) if !data.is_empty() => {
                    if rep.send(RepMessage::binary(data)).await.is_err() {
                        break Ended::Closed;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    client_done = true;
                    if rep.send(RepMessage::binary(Vec::new())).await.is_err() {
                        break Ended::Closed;
                    }
                }
                None | Some(ChannelMsg::Close) => break Ended::Closed,
                Some(_) => {}
            },
            m = rep.next(), if !rep_done => match m {
                Some(Ok(RepMessage::Binary(b))) if b.is_empty() => {
                    rep_done = true;
                    let _ = writer.eof().await;
                }
                Some(Ok(RepMessage::Binary(b))) => {
                    if writer.data_bytes(b).await.is_err() {
                        break Ended::Closed;
                    }
                }
                Some(Ok(RepMessage::Text(t))) => {
                    let why = serde_json::from_str::<ForwardError>(t.as_str())
                        .map(|e| e.message)
                        .unwrap_or_else(|_| t.as_str().to_string());
                    break Ended::Failed(why);
                }
                Some(Ok(RepMessage::Close(_))) | None | Some(Err(_)) => break Ended::Closed,
                Some(Ok(_)) => {}
            },
        }
    };
    let _ = writer.eof().await;
    let _ = writer.close().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rep.close(None)).await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_goes_to_an_address_inside_the_instance() {
        assert_eq!(target("localhost", 8080), Ok(("localhost".into(), 8080)));
        assert_eq!(target("127.0.0.1", 1), Ok(("127.0.0.1".into(), 1)));
        assert_eq!(target("[::1]", 22), Ok(("::1".into(), 22)));
        assert_eq!(target("", 80), Ok((String::new(), 80)));
        assert_eq!(target("localhost", 0), Err(BadTarget::Port(0)));
        assert_eq!(target("localhost", 70000), Err(BadTarget::Port(70000)));
        assert_eq!(
            target("db.internal", 5432),
            Err(BadTarget::Host("db.internal".into()))
        );
    }
}
