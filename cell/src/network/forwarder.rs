//! The forwarder: a published port is a listener on the cell's address whose
//! connections are copied, in-process, to the container's port. One task per port,
//! one per connection; stopping the port's task stops accepting.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

/// A published port's forwarding task, until it is stopped.
#[derive(Debug)]
pub struct Forwarder {
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens at `at` (with SO_REUSEADDR, as `tokio::net::TcpListener::bind` does)
    /// and forwards what it accepts to `target`, until stopped. Call it on the tokio
    /// runtime.
    pub(super) fn start(at: SocketAddr, target: SocketAddr) -> std::io::Result<Forwarder> {
        let socket = match at {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(at)?;
        let listener = socket.listen(1024)?;
        Ok(Forwarder {
            task: Some(tokio::spawn(forward(listener, target))),
        })
    }

    /// A forwarder that forwards nothing: what a fake host hands out.
    #[cfg(test)]
    pub(super) fn idle() -> Forwarder {
        Forwarder { task: None }
    }

    /// Stops accepting (connections already forwarded run to their end).
    pub(super) fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
        }
    }
}

async fn forward(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(async move {
            // A refused backend closes the client at once: routers retry elsewhere.
            if let Ok(mut backend) = tokio::net::TcpStream::connect(target).await {
                let _ = backend.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A free loopback address (bound, read, released).
    fn free_loopback() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn connections_reach_the_target_until_stopped() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = backend.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = backend.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    c.read_exact(&mut buf).await.unwrap();
                    c.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                        .await
                        .unwrap();
                });
            }
        });
        let at = free_loopback();
        let fwd = Forwarder::start(at, target).unwrap();
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HELLO");
        fwd.stop();
        let mut again = Forwarder::start(at, target);
        for _ in 0..100 {
            if again.is_ok() {
                break;
            }
            // The aborted task drops its listener when next polled.
            tokio::task::yield_now().await;
            again = Forwarder::start(at, target);
        }
        assert!(again.is_ok(), "a stopped forwarder gives its port back");
    }

    #[tokio::test]
    async fn a_refused_target_closes_the_client() {
        let at = free_loopback();
        let fwd = Forwarder::start(at, free_loopback()).unwrap();
        let mut client = tokio::net::TcpStream::connect(at).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed at once");
        fwd.stop();
    }
}
