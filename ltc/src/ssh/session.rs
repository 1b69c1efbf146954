//! One exec session's relay: the request, then local stdin as `Stdin` frames (its end
//! as `Control::Eof`) and local events (resize, Ctrl-C) as control frames, the
//! process's output to local stdout/stderr, until the server's `Exit` or `Error`.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use lattice_specs::exec::{Control, ExecRequest, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::api::ApiError;

/// How the remote process ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Its exit status (shell style: 128+N for signal N).
    pub status: i32,
    /// Why, when it was not the process's own doing.
    pub reason: String,
}

/// The local ends of a session.
pub struct Io<I, O, E> {
    pub stdin: I,
    pub stdout: O,
    pub stderr: E,
}

impl Io<tokio::io::Stdin, tokio::io::Stdout, tokio::io::Stderr> {
    /// ltc's own stdin, stdout and stderr.
    pub fn std() -> Self {
        Io {
            stdin: tokio::io::stdin(),
            stdout: tokio::io::stdout(),
            stderr: tokio::io::stderr(),
        }
    }
}

/// Runs the session on `ws` until the process ends; an `Error` from the server is an
/// [`ApiError`] with its name.
pub async fn run<T, I, O, E>(
    ws: WebSocketStream<T>,
    req: ExecRequest,
    mut io: Io<I, O, E>,
    mut events: mpsc::Receiver<Control>,
) -> anyhow::Result<Outcome>
where
    T: AsyncRead + AsyncWrite + Unpin,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let lost = |e| anyhow::anyhow!("the session's connection broke: {e}");
    tx.send(Message::text(serde_json::to_string(&req)?))
        .await
        .map_err(lost)?;
    let mut buf = vec![0u8; 16 * 1024];
    let (mut stdin_open, mut events_open) = (true, true);
    loop {
        tokio::select! {
            msg = rx.next() => {
                let frame = match msg {
                    Some(Ok(Message::Binary(b))) => Frame::decode(&b)
                        .context("the server sent a frame ltc does not understand")?,
                    // Pings are answered by the stream; text is not part of the protocol.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => anyhow::bail!(
                        "the session ended without an exit status (the connection was closed)"
                    ),
                    Some(Err(e)) => return Err(lost(e)),
                };
                match frame {
                    Frame::Stdout(b) => write(&mut io.stdout, &b).await?,
                    Frame::Stderr(b) => write(&mut io.stderr, &b).await?,
                    Frame::Control(Control::Exit { status, reason }) => {
                        let _ = tx.send(Message::Close(None)).await;
                        return Ok(Outcome { status, reason });
                    }
                    Frame::Control(Control::Error { name, message }) => {
                        return Err(ApiError { name, message }.into())
                    }
                    // Client-bound frames only; anything else is ignored.
                    Frame::Stdin(_) | Frame::Control(_) => {}
                }
            }
            n = io.stdin.read(&mut buf), if stdin_open => {
                let frame = match n {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        Frame::Control(Control::Eof)
                    }
                    Ok(n) => Frame::Stdin(buf[..n].to_vec()),
                };
                tx.send(Message::binary(frame.encode())).await.map_err(lost)?;
            }
            ev = events.recv(), if events_open => match ev {
                Some(c) => tx.send(Message::binary(Frame::Control(c).encode())).await.map_err(lost)?,
                None => events_open = false,
            },
        }
    }
}

async fn write(w: &mut (impl AsyncWrite + Unpin), b: &[u8]) -> anyhow::Result<()> {
    w.write_all(b)
        .await
        .context("writing the session's output")?;
    w.flush().await.context("writing the session's output")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A session against `server`, a fake API end run on the other side of a pipe.
    async fn session<F, Fut>(
        stdin: &'static [u8],
        events: Vec<Control>,
        server: F,
    ) -> (anyhow::Result<Outcome>, Vec<u8>, Vec<u8>)
    where
        F: FnOnce(WebSocketStream<tokio::io::DuplexStream>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ws = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = tokio::spawn(server(
            WebSocketStream::from_raw_socket(b, Role::Server, None).await,
        ));
        let (etx, erx) = mpsc::channel(8);
        for e in events {
            etx.send(e).await.unwrap();
        }
        let (mut out, mut err) = (vec![], vec![]);
        let io = Io {
            stdin,
            stdout: &mut out,
            stderr: &mut err,
        };
        let r = run(ws, ExecRequest::default(), io, erx).await;
        server.await.unwrap();
        (r, out, err)
    }

    async fn next_frame(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Frame {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => Frame::decode(&b).unwrap(),
            m => panic!("not a frame: {m:?}"),
        }
    }

    async fn send(ws: &mut WebSocketStream<tokio::io::DuplexStream>, f: Frame) {
        ws.send(Message::binary(f.encode())).await.unwrap();
    }

    #[tokio::test]
    async fn stdin_then_eof_out_and_the_exit_status() {
        let (r, out, err) = session(b"echo hi\n", vec![], |mut ws| async move {
            // The request first, as text.
            let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
                panic!("no request")
            };
            let req: ExecRequest = serde_json::from_str(&t).unwrap();
            assert_eq!(req, ExecRequest::default());
            assert_eq!(
                next_frame(&mut ws).await,
                Frame::Stdin(b"echo hi\n".to_vec())
            );
            assert_eq!(next_frame(&mut ws).await, Frame::Control(Control::Eof));
            send(&mut ws, Frame::Stdout(b"hi\n".to_vec())).await;
            send(&mut ws, Frame::Stderr(b"warn\n".to_vec())).await;
            let exit = Control::Exit {
                status: 3,
                reason: String::new(),
            };
            send(&mut ws, Frame::Control(exit)).await;
        })
        .await;
        assert_eq!(
            r.unwrap(),
            Outcome {
                status: 3,
                reason: String::new()
            }
        );
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"hi\n"[..], &b"warn\n"[..])
        );
    }

    #[tokio::test]
    async fn events_become_control_frames() {
        let events = vec![
            Control::Resize {
                cols: 100,
                rows: 30,
            },
            Control::Signal {
                signal: "INT".into(),
            },
        ];
        let (r, _, _) = session(b"", events, |mut ws| async move {
            ws.next().await.unwrap().unwrap();
            let mut got = vec![];
            for _ in 0..3 {
                got.push(next_frame(&mut ws).await);
            }
            // Eof and the events, in whatever order they raced.
            assert!(got.contains(&Frame::Control(Control::Eof)), "{got:?}");
            assert!(got.contains(&Frame::Control(Control::Resize {
                cols: 100,
                rows: 30
            })));
            assert!(got.contains(&Frame::Control(Control::Signal {
                signal: "INT".into()
            })));
            let exit = Control::Exit {
                status: 130,
                reason: "the instance stopped".into(),
            };
            send(&mut ws, Frame::Control(exit)).await;
        })
        .await;
        assert_eq!(
            r.unwrap(),
            Outcome {
                status: 130,
                reason: "the instance stopped".into()
            }
        );
    }

    #[tokio::test]
    async fn a_server_error_keeps_its_name_and_a_close_is_no_exit() {
        let (r, _, _) = session(b"", vec![], |mut ws| async move {
            ws.next().await.unwrap().unwrap();
            let e = Control::Error {
                name: "InstanceNotRunning".into(),
                message: "web/0 is CRASHED".into(),
            };
            send(&mut ws, Frame::Control(e)).await;
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(
            crate::api::error_name(&e),
            Some(lattice_specs::errors::ErrorName::InstanceNotRunning)
        );
        assert!(e.to_string().contains("web/0 is CRASHED"), "{e}");

        let (r, _, _) = session(b"", vec![], |mut ws| async move {
            ws.next().await.unwrap().unwrap();
            ws.close(None).await.unwrap();
        })
        .await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("without an exit status"), "{e}");
    }
}
