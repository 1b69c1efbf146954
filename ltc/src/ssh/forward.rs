//! `ltc ssh -L`: local listeners whose every accepted connection becomes one
//! WebSocket to the API's forward route, relayed byte for byte (an empty binary
//! message is a half close; a text message is the server's `ForwardError`, printed,
//! and the local connection closed).

use std::net::IpAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use lattice_specs::exec::ForwardError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::Target;
use crate::api::Api;

/// One `-L [LOCAL_ADDR:]LOCAL_PORT:[HOST:]PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub local_addr: IpAddr,
    pub local_port: u16,
    /// Where to connect inside the instance: an IP address or `localhost`.
    pub host: String,
    pub port: u16,
}

const SYNTAX: &str = "expected [LOCAL_ADDR:]LOCAL_PORT:[HOST:]PORT, e.g. 8080:80 or 127.0.0.1:8080:localhost:80 (IPv4 addresses or localhost)";

impl Spec {
    /// Parses a `-L` argument; an error names the part that is wrong.
    pub fn parse(s: &str) -> Result<Spec, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        let (addr, lport, host, port) = match parts[..] {
            [lp, p] => ("127.0.0.1", lp, "127.0.0.1", p),
            [a, b, p] if is_port(a) => ("127.0.0.1", a, b, p),
            [a, lp, p] => (a, lp, "127.0.0.1", p),
            [a, lp, h, p] => (a, lp, h, p),
            _ => return Err(format!("-L {s}: {SYNTAX}")),
        };
        let port_of = |p: &str, what: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "-L {s}: {what} {p:?} is not a port (1-65535); {SYNTAX}"
            )),
        };
        let local_addr = match addr {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            a => a.parse().map_err(|_| {
                format!("-L {s}: the local address {a:?} is not an IP address; {SYNTAX}")
            })?,
        };
        if host != "localhost" && host.parse::<IpAddr>().is_err() {
            return Err(format!(
                "-L {s}: the host {host:?} is not an IP address or localhost (names are not resolved inside the instance); {SYNTAX}"
            ));
        }
        Ok(Spec {
            local_addr,
            local_port: port_of(lport, "the local port")?,
            host: host.to_string(),
            port: port_of(port, "the port")?,
        })
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.local_addr, self.local_port, self.host, self.port
        )
    }
}

/// A line on stderr that reads right on a raw-mode terminal too.
fn say(msg: &str) {
    eprint!("ltc: {msg}\r\n");
}

/// The running listeners (and their connections): stopped when dropped.
pub struct Forwards {
    _tasks: JoinSet<()>,
}

/// Listens on every spec's local address, and forwards what connects to `target`.
pub async fn listen(api: &Arc<Api>, target: &Target, specs: &[Spec]) -> anyhow::Result<Forwards> {
    let mut set = JoinSet::new();
    for spec in specs {
        let listener = TcpListener::bind((spec.local_addr, spec.local_port))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "-L {spec}: cannot listen on {}:{}: {e}",
                    spec.local_addr,
                    spec.local_port
                )
            })?;
        say(&format!(
            "forwarding {}:{} to {}:{} in {target}",
            spec.local_addr, spec.local_port, spec.host, spec.port
        ));
        let (api, path, spec) = (
            api.clone(),
            target.forward_path(&spec.host, spec.port),
            spec.clone(),
        );
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let conn = match listener.accept().await {
                    Ok((conn, _)) => conn,
                    Err(e) => {
                        say(&format!("-L {spec}: accepting a connection: {e}"));
                        continue;
                    }
                };
                let (api, path, spec) = (api.clone(), path.clone(), spec.clone());
                conns.spawn(async move {
                    let r = match api.websocket(&path).await {
                        Ok(ws) => relay(ws, conn).await,
                        Err(e) => Err(format!("{e:#}")),
                    };
                    if let Err(e) = r {
                        say(&format!("-L {spec}: {e}"));
                    }
                });
                // Reap the finished ones.
                while conns.try_join_next().is_some() {}
            }
        });
    }
    Ok(Forwards { _tasks: set })
}

/// Relays one forwarded connection until both sides are done; the server's
/// `ForwardError` (or a broken connection) as the error.
pub async fn relay<T, L>(ws: WebSocketStream<T>, local: L) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin,
    L: AsyncRead + AsyncWrite + Unpin,
{
    let (mut lr, mut lw) = tokio::io::split(local);
    let (mut tx, mut rx) = ws.split();
    let lost = |e| format!("the forwarded connection broke: {e}");
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sending, mut receiving) = (true, true);
    while sending || receiving {
        tokio::select! {
            n = lr.read(&mut buf), if sending => {
                let bytes = match n {
                    Ok(n) if n > 0 => buf[..n].to_vec(),
                    // The local side is done sending: a half close.
                    _ => {
                        sending = false;
                        vec![]
                    }
                };
                tx.send(Message::binary(bytes)).await.map_err(lost)?;
            }
            msg = rx.next(), if receiving => match msg {
                Some(Ok(Message::Binary(b))) if b.is_empty() => {
                    receiving = false;
                    let _ = lw.shutdown().await;
                }
                Some(Ok(Message::Binary(b))) => {
                    if lw.write_all(&b).await.is_err() {
                        // The local side went away.
                        break;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    return Err(serde_json::from_str::<ForwardError>(&t)
                        .map(|e| e.message)
                        .unwrap_or_else(|_| t.to_string()))
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(lost(e)),
            },
        }
    }
    let _ = tx.send(Message::Close(None)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn spec(a: [u8; 4], lp: u16, host: &str, port: u16) -> Spec {
        Spec {
            local_addr: IpAddr::from(a),
            local_port: lp,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn specs_parse_with_defaults() {
        let lo = [127, 0, 0, 1];
        assert_eq!(
            Spec::parse("8080:80").unwrap(),
            spec(lo, 8080, "127.0.0.1", 80)
        );
        assert_eq!(
            Spec::parse("8080:10.0.0.2:80").unwrap(),
            spec(lo, 8080, "10.0.0.2", 80)
        );
        assert_eq!(
            Spec::parse("0.0.0.0:8080:80").unwrap(),
            spec([0, 0, 0, 0], 8080, "127.0.0.1", 80)
        );
        assert_eq!(
            Spec::parse("localhost:8080:localhost:80").unwrap(),
            spec(lo, 8080, "localhost", 80)
        );
    }

    #[test]
    fn bad_specs_name_the_part() {
        for (bad, says) in [
            ("80", "expected [LOCAL_ADDR:]"),
            ("a:b:c:d:e", "expected [LOCAL_ADDR:]"),
            ("8080:0", "the port \"0\""),
            ("x:80", "the local port \"x\""),
            ("8080:70000", "the port \"70000\""),
            ("web:8080:80", "the local address \"web\""),
            ("8080:db.internal:5432", "the host \"db.internal\""),
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert!(
                e.contains(says) && e.starts_with(&format!("-L {bad}:")),
                "{e}"
            );
        }
    }

    /// Relays `local` (the test's end: `peer`) to a fake server `server`.
    async fn relayed<F, Fut>(
        server: F,
    ) -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Result<(), String>>,
    )
    where
        F: FnOnce(WebSocketStream<tokio::io::DuplexStream>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ws = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        tokio::spawn(server(
            WebSocketStream::from_raw_socket(b, Role::Server, None).await,
        ));
        let (local, peer) = tokio::io::duplex(64 * 1024);
        (peer, tokio::spawn(relay(ws, local)))
    }

    #[tokio::test]
    async fn bytes_both_ways_with_half_closes() {
        // An echo server in upper case that answers the half close with its own.
        let (mut peer, relay) = relayed(|mut ws| async move {
            while let Some(Ok(Message::Binary(b))) = ws.next().await {
                let done = b.is_empty();
                ws.send(Message::binary(b.to_ascii_uppercase()))
                    .await
                    .unwrap();
                if done {
                    break;
                }
            }
        })
        .await;
        peer.write_all(b"hello ").await.unwrap();
        peer.write_all(b"there").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut got = String::new();
        peer.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "HELLO THERE");
        assert_eq!(relay.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_forward_error_is_reported_and_the_local_side_closed() {
        let (mut peer, relay) = relayed(|mut ws| async move {
            let e = ForwardError {
                message: "nothing listens on 127.0.0.1:8080 in instance web/0".into(),
            };
            ws.send(Message::text(serde_json::to_string(&e).unwrap()))
                .await
                .unwrap();
            let _ = ws.close(None).await;
        })
        .await;
        assert_eq!(
            relay.await.unwrap(),
            Err("nothing listens on 127.0.0.1:8080 in instance web/0".into())
        );
        let mut got = vec![];
        peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
    }
}
