//! The public API over TLS (issue 22), for real on loopback: HTTP/1.1 and HTTP/2
//! chosen by ALPN, a client that does not trust the CA and a plaintext client
//! refused, silent clients dropped within the header-read timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::serve::ApiLimits;
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs::test_pki::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

async fn start_tls(ca: &TestCa, limits: ApiLimits) -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        api_limits: limits,
        api_tls: Some(ca.server(&["localhost", "127.0.0.1"]).server_config()),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

/// A TLS client trusting only `ca`, offering `alpn`.
fn connector(ca: &TestCa, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// The chain of errors of `e`, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(&format!(": {c}"));
        cur = c.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_tls_by_alpn_and_refuses_plaintext_and_unknown_cas() {
    let ca = TestCa::new("api test CA");
    let (bbs, _dir) = start_tls(&ca, ApiLimits::default()).await;
    let port = bbs.api_addr.port();
    let failures = lattice_bbs::metrics::API_TLS_HANDSHAKE_FAILURES.get();

    // HTTP/1.1, by name and by address, with a client trusting only the test CA.
    // A client offering only HTTP/1.1 gets it.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&ca.der).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let r = client
            .get(format!("https://{host}:{port}/v1/version"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert!(r.text().await.unwrap().contains("version"));
    }

    // HTTP/2, chosen by ALPN.
    let tcp = tokio::net::TcpStream::connect(bbs.api_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector(&ca, &[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://localhost:{port}/v1/version"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), hyper::Version::HTTP_2);

    // A client that trusts only the system's roots refuses the server.
    let e = reqwest::get(format!("https://localhost:{port}/v1/version"))
        .await
        .unwrap_err();
    let why = chain(&e);
    assert!(why.contains("UnknownIssuer"), "{why}");

    // Plain HTTP gets no HTTP answer.
    let mut s = tokio::net::TcpStream::connect(bbs.api_addr).await.unwrap();
    s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server hangs up on plaintext");
    assert!(
        !String::from_utf8_lossy(&out).contains("HTTP/1.1"),
        "{out:?}"
    );
    // The server counts a failed handshake after it has hung up, so the count may
    // trail the client's view of the failure by a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lattice_bbs::metrics::API_TLS_HANDSHAKE_FAILURES.get() < failures + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two failed handshakes were not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_within_the_header_read_timeout_over_tls() {
    let ca = TestCa::new("api test CA");
    let limits = ApiLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ApiLimits::default()
    };
    let (bbs, _dir) = start_tls(&ca, limits).await;

    // No handshake at all.
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(bbs.api_addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("dropped");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(t0.elapsed() >= Duration::from_millis(400));

    // A handshake, then nothing (HTTP/1.1 and HTTP/2 alike).
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let t0 = Instant::now();
        let tcp = tokio::net::TcpStream::connect(bbs.api_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector(&ca, &[alpn]).connect(name, tcp).await.unwrap();
        // (An HTTP/2 server says its SETTINGS first.) Then it hangs up.
        let mut said = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut said)).await;
        assert!(end.is_ok(), "{alpn:?}: still open");
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{alpn:?} {end:?}"
        );
    }

    // A client that speaks in time is served.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&ca.der).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/version", bbs.api_addr.port());
    assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    bbs.shutdown().await;
}
