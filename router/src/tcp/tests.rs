//! The TCP listeners over loopback: real sockets, instances that are tokio tasks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{serve, PortEntry, TcpConfig, TcpPorts};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An instance: says its one-letter name, then echoes.
async fn instance(name: u8) -> SocketAddr {
    let l = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                s.write_all(&[name]).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
fn dead() -> SocketAddr {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    l.local_addr().unwrap()
}

fn free_port() -> u16 {
    dead().port()
}

fn ports(port: u16, backends: &[SocketAddr]) -> Arc<TcpPorts> {
    let entry = PortEntry {
        process_guid: "echo".into(),
        backends: backends.to_vec(),
    };
    Arc::new(TcpPorts::from([(port, Arc::new(entry))]))
}

struct Proxy {
    ports: watch::Sender<Arc<TcpPorts>>,
    stop: watch::Sender<bool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn start(cfg: TcpConfig, initial: Arc<TcpPorts>) -> Proxy {
    let (ports, rx) = watch::channel(initial);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve(cfg, rx, stopped));
    Proxy { ports, stop }
}

/// Connects once the port listens (within 5 s).
async fn dial(port: u16) -> TcpStream {
    for _ in 0..500 {
        if let Ok(s) = TcpStream::connect((LOOPBACK, port)).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("port {port} never listened");
}

/// Which instance answered, after an echo through it.
async fn who(port: u16) -> u8 {
    let mut s = dial(port).await;
    let mut name = [0u8; 1];
    s.read_exact(&mut name).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    name[0]
}

/// Whether the proxy closes `s` (EOF or reset) within 5 s.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_take_turns_skipping_an_instance_that_refuses() {
    let (a, b) = (instance(b'A').await, instance(b'B').await);
    let port = free_port();
    let _p = start(TcpConfig::on(LOOPBACK), ports(port, &[a, dead(), b]));
    let mut seen = vec![];
    for _ in 0..4 {
        seen.push(who(port).await);
    }
    // Turn 1 lands on the dead one and moves on to B.
    assert_eq!(seen, b"ABBA");
}

#[tokio::test]
async fn an_instance_that_leaves_gets_no_new_connection() {
    let (a, b) = (instance(b'A').await, instance(b'B').await);
    let port = free_port();
    let p = start(TcpConfig::on(LOOPBACK), ports(port, &[a, b]));
    assert_eq!(who(port).await, b'A');
    p.ports.send_replace(ports(port, &[b]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        assert_eq!(who(port).await, b'B');
    }
    // None left: a connection is closed at once.
    p.ports.send_replace(ports(port, &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(closed(&mut dial(port).await).await);
}

#[tokio::test]
async fn a_route_gone_closes_its_port_and_connections() {
    let port = free_port();
    let p = start(
        TcpConfig::on(LOOPBACK),
        ports(port, &[instance(b'A').await]),
    );
    let mut open = dial(port).await;
    let mut name = [0u8; 1];
    open.read_exact(&mut name).await.unwrap();
    p.ports.send_replace(Arc::new(TcpPorts::new()));
    assert!(
        closed(&mut open).await,
        "its connection ends with the route"
    );
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect((LOOPBACK, port)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the port is closed");
}

#[tokio::test]
async fn connections_past_the_bound_are_closed() {
    let port = free_port();
    let cfg = TcpConfig {
        max_connections: 1,
        ..TcpConfig::on(LOOPBACK)
    };
    let _p = start(cfg, ports(port, &[instance(b'A').await]));
    let mut first = dial(port).await;
    let mut name = [0u8; 1];
    first.read_exact(&mut name).await.unwrap();
    assert!(closed(&mut dial(port).await).await, "the second is closed");
    first.write_all(b"ok").await.unwrap();
    let mut echo = [0u8; 2];
    first.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ok", "the first still works");
    drop(first);
    // Its slot is free again once it has ended.
    let mut freed = false;
    for _ in 0..100 {
        let mut s = dial(port).await;
        if s.read_exact(&mut name).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed);
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let port = free_port();
    let cfg = TcpConfig {
        idle_timeout: Duration::from_millis(300),
        ..TcpConfig::on(LOOPBACK)
    };
    let _p = start(cfg, ports(port, &[instance(b'A').await]));
    let mut s = dial(port).await;
    let started = std::time::Instant::now();
    let mut name = [0u8; 1];
    s.read_exact(&mut name).await.unwrap();
    assert!(closed(&mut s).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
}
