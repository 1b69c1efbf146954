//! [`lattice_tls::http::serve`] (the rep's port) over real sockets: a client that
//! sends nothing, or a request's headers too slowly, is dropped after the header-read
//! timeout, over plaintext and over mutual TLS; a well-behaved caller gets its answer
//! (HTTP/1 and HTTP/2) with its identity, and the server stops when told.

mod common;

use common::node;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Extension;
use lattice_tls::ca::Ca;
use lattice_tls::client::{lazy_channel, ClientTls};
use lattice_tls::http::{serve, HttpLimits};
use lattice_tls::server::{with_identity, Listener};
use lattice_tls::{ClientAuth, Identity, Role};
use tower_service::Service;

const TIMEOUT: Duration = Duration::from_millis(300);

fn app() -> axum::Router {
    with_identity(axum::Router::new().route(
        "/who",
        get(|id: Option<Extension<Identity>>| async move {
            id.map(|Extension(i)| i.dns_name())
                .unwrap_or("nobody".into())
        }),
    ))
}

/// Serves [`app`] on a loopback listener with `tls`; stops when the sender drops.
async fn start(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l = Listener::new(tcp, tls).unwrap();
    let addr = l.local_addr();
    let limits = HttpLimits {
        header_read_timeout: TIMEOUT,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(l, app(), limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop, served)
}

/// Whether the server closed the connection (within a generous 5 s): a read gives
/// end of file or a reset rather than blocking.
fn closed_by_server(mut read: impl Read) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match read.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn slow_plain_client(addr: std::net::SocketAddr, send: &[u8]) -> bool {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(send).unwrap();
    closed_by_server(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_over_plaintext() {
    let (addr, stop, served) = start(None).await;
    // A whole request is answered.
    let (answer, silent, partial) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let t0 = Instant::now();
        let silent = slow_plain_client(addr, b"");
        let partial = slow_plain_client(addr, b"GET /who HTTP/1.1\r\nHost: x\r\n");
        eprintln!("both slow clients dropped in {:?}", t0.elapsed());
        (answer, silent, partial)
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("nobody"),
        "{answer}"
    );
    assert!(silent, "a client saying nothing is dropped");
    assert!(partial, "a client sending half its headers is dropped");
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the server stops when told")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_over_mutual_tls() {
    let ca = Ca::generate().unwrap();
    let cell = node(&ca, Role::Cell, "cell-a");
    let bbs = node(&ca, Role::Bbs, "bbs");
    let (addr, _stop, _served) =
        start(Some(cell.server_config(ClientAuth::Required).unwrap())).await;

    // HTTP/2 (gRPC's way) with the caller's identity.
    let to_rep = ClientTls::new(&bbs, cell.identity().clone()).unwrap();
    let mut ch = lazy_channel(&addr.to_string(), Some(&to_rep), |e| e).unwrap();
    futures::future::poll_fn(|cx| ch.poll_ready(cx))
        .await
        .unwrap();
    let req = http::Request::get("http://x/who")
        .body(tonic::body::Body::empty())
        .unwrap();
    let res = ch.call(req).await.unwrap();
    assert_eq!(res.status(), 200);

    // Handshaken, then silent or slow: dropped.
    let config = bbs.client_config(&[b"http/1.1"]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("cell-a.cell.lattice").unwrap();
    let dropped = tokio::task::spawn_blocking(move || {
        [&b""[..], b"GET /who HTTP/1.1\r\nHost: x\r\n"].map(|send| {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut conn = rustls::ClientConnection::new(config.clone(), name.clone()).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).unwrap();
            }
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(send).unwrap();
            tls.flush().unwrap();
            closed_by_server(tls)
        })
    })
    .await
    .unwrap();
    assert_eq!(dropped, [true, true], "silent and slow TLS clients dropped");
}
