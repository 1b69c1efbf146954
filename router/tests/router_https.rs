//! The router terminating HTTPS over real sockets: certificates read from
//! files, chosen by the name the client asks for, checked by a client that
//! verifies names with the test CA as its only root; h2 and HTTP/1.1 by ALPN;
//! `X-Forwarded-Proto: https` to the instance; plain HTTP redirected.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lattice_router::proxy::ProxyConfig;
use lattice_router::tls::{self, HttpsConfig, Terminator};
use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

mod support;
use support::{backend, bbs, router_with, Bbs, Router};

/// A test certificate authority: the verifying client's only root.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "router test CA");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Issues a certificate for `names`, written as PEM to `cert` and `key`;
    /// returns it as DER.
    fn issue(&self, names: &[&str], cert: &Path, key: &Path) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &self.issuer)
            .unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
        leaf.der().clone()
    }

    /// A client trusting this CA alone, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr` asking for (and verifying) `name`.
    async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_string()).unwrap();
        self.client(alpn).connect(name, tcp).await
    }
}

/// Two domains with a certificate each: `*.alpha.test` as NAME.crt + NAME.key
/// in a directory, `web.beta.test` in a certbot-style folder of another
/// directory; each routed to its own backend.
struct Setup {
    ca: Ca,
    alpha: CertificateDer<'static>,
    beta: CertificateDer<'static>,
    router: Router,
    _bbs: Bbs,
    _dir: tempfile::TempDir,
}

async fn setup(cfg: ProxyConfig, redirect_http: bool) -> Setup {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (pairs, live) = (dir.path().join("pairs"), dir.path().join("live"));
    std::fs::create_dir_all(&pairs).unwrap();
    std::fs::create_dir_all(live.join("beta")).unwrap();
    let alpha = ca.issue(
        &["*.alpha.test"],
        &pairs.join("alpha.crt"),
        &pairs.join("alpha.key"),
    );
    let beta = ca.issue(
        &["web.beta.test"],
        &live.join("beta/fullchain.pem"),
        &live.join("beta/privkey.pem"),
    );
    let certs = tls::load(&[], &[pairs, live]).unwrap();
    let b = bbs().await;
    for (guid, host, name) in [
        ("alpha", "web.alpha.test", "alpha-app"),
        ("beta", "web.beta.test", "beta-app"),
    ] {
        b.desire(guid, host, 1).await;
        b.run(guid, 0, backend(name).await.port()).await;
    }
    let https = HttpsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Terminator::new(certs),
        redirect_http,
    };
    let router = router_with(&b, cfg, Some(https)).await;
    Setup {
        ca,
        alpha,
        beta,
        router,
        _bbs: b,
        _dir: dir,
    }
}

/// GET `path` for `host` over an established connection, HTTP/1.1 or h2 as
/// negotiated.
async fn get(tls: TlsStream<TcpStream>, host: &str, path: &str) -> Response<Bytes> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let req = Request::get(format!("https://{host}{path}"))
        .header("x-forwarded-proto", "http")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut().insert("host", host.parse().unwrap());
        sender.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_domain_gets_its_own_certificate_and_the_app_sees_https() {
    let s = setup(ProxyConfig::default(), false).await;
    let https = s.router.https.unwrap();
    for (host, cert, app) in [
        ("web.alpha.test", &s.alpha, "alpha-app"),
        ("web.beta.test", &s.beta, "beta-app"),
    ] {
        let tls = s.ca.connect(https, host, &[b"http/1.1"]).await.unwrap();
        assert_eq!(&presented(&tls), cert, "{host} gets its own certificate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let resp = get(tls, host, "/hello?x=1").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body(), app);
        assert_eq!(
            resp.headers()["seen-x-forwarded-proto"],
            "https",
            "https to the app, whatever the client claimed"
        );
        assert_eq!(resp.headers()["seen-x-forwarded-for"], "127.0.0.1");
        assert_eq!(resp.headers()["seen-host"], host);
    }
    // The wildcard covers any one label under alpha.test; the router answers 404 for
    // an app it does not know, over TLS.
    let tls =
        s.ca.connect(https, "nothing.alpha.test", &[b"http/1.1"])
            .await
            .unwrap();
    assert_eq!(presented(&tls), s.alpha);
    assert_eq!(get(tls, "nothing.alpha.test", "/").await.status(), 404);
    // Plain HTTP still serves (no redirect asked) and says http.
    let resp = reqwest::Client::new()
        .get(format!("http://{}/", s.router.addr))
        .header("host", "web.beta.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["seen-x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_chosen_by_alpn() {
    let s = setup(ProxyConfig::default(), false).await;
    let https = s.router.https.unwrap();
    let tls =
        s.ca.connect(https, "web.beta.test", &[b"h2", b"http/1.1"])
            .await
            .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let resp = get(tls, "web.beta.test", "/over-h2").await;
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body(), "beta-app");
    assert_eq!(resp.headers()["seen-x-forwarded-proto"], "https");
    // A client offering no ALPN gets HTTP/1.1.
    let tls = s.ca.connect(https, "web.beta.test", &[]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let resp = get(tls, "web.beta.test", "/").await;
    assert_eq!(resp.version(), hyper::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

fn refused(reason: &str) -> u64 {
    lattice_router::metrics::TLS_REFUSED
        .with_label_values(&[reason])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_gets_an_unrecognized_name_alert_and_a_silent_client_is_cut_off() {
    let cfg = ProxyConfig {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let s = setup(cfg, false).await;
    let https = s.router.https.unwrap();
    let before = refused("unknown_name");
    let err =
        s.ca.connect(https, "shop.gamma.test", &[b"http/1.1"])
            .await
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("received fatal alert: UnrecognisedName"),
        "{err}"
    );
    // Counted once the router's side of the handshake ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused("unknown_name") == before {
        assert!(Instant::now() < deadline, "the refusal is counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // beta's certificate covers web.beta.test only, not its siblings.
    let err =
        s.ca.connect(https, "api.beta.test", &[])
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("UnrecognisedName"), "{err}");

    // A client that connects and says nothing is closed after the header read time.
    let began = Instant::now();
    let mut tcp = TcpStream::connect(https).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the router closes a silent TLS client")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(began.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https_when_asked() {
    let s = setup(ProxyConfig::default(), true).await;
    let https = s.router.https.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("http://{}/cart/add?item=3", s.router.addr))
        .header("host", "Web.Alpha.Test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308, "308 keeps the method and body");
    assert_eq!(
        resp.headers()["location"],
        format!("https://web.alpha.test:{}/cart/add?item=3", https.port()).as_str()
    );
    // HTTPS itself serves.
    let tls =
        s.ca.connect(https, "web.alpha.test", &[b"http/1.1"])
            .await
            .unwrap();
    assert_eq!(get(tls, "web.alpha.test", "/").await.status(), 200);
}
