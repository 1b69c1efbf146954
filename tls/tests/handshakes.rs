//! Real TLS handshakes over loopback sockets between a [`Listener`] and [`ClientTls`]:
//! who is let in, who is refused and with what error, and renewal on disk.

mod common;

use common::node_for as node;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lattice_tls::ca::{Ca, SubjectKey};
use lattice_tls::client::ClientTls;
use lattice_tls::files::TlsFiles;
use lattice_tls::server::Listener;
use lattice_tls::{ClientAuth, Identity, NodeTls, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn id(role: Role, name: &str) -> Identity {
    Identity::new(role, name).unwrap()
}

/// A cell with a certificate from `other` that trusts `ca` (to reach its servers).
fn stranger(other: &Ca, ca: &Ca) -> NodeTls {
    let k = other
        .issue_new_key(&id(Role::Cell, "cell-a"), &[], Duration::from_secs(3600))
        .unwrap();
    NodeTls::from_pem(
        k.cert.cert_pem.as_bytes(),
        k.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap()
}

/// A TLS echo server: answers each line with the client's identity, then echoes.
async fn server(node: &NodeTls, auth: ClientAuth) -> (std::net::SocketAddr, Listener) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l = Listener::new(tcp, Some(node.server_config(auth).unwrap())).unwrap();
    (l.local_addr(), l)
}

fn spawn_echo(mut l: Listener) {
    tokio::spawn(async move {
        while let Some(mut c) = l.next().await {
            tokio::spawn(async move {
                let who = match &c.peer().identity {
                    Some(i) => i.dns_name(),
                    None => "nobody".to_string(),
                };
                let _ = c.write_all(format!("{who}\n").as_bytes()).await;
                let mut buf = [0u8; 64];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

async fn first_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8(out).unwrap());
        }
        out.push(b[0]);
    }
}

/// What the client sees: the identity line, or the error (handshake or first read:
/// TLS 1.3 reports a refused client certificate on the first read).
async fn ask(client: &ClientTls, addr: std::net::SocketAddr) -> Result<String, String> {
    let mut s = client
        .connect(&addr.to_string())
        .await
        .map_err(|e| e.to_string())?;
    first_line(&mut s).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_server_learns_the_clients_identity_and_refuses_strangers() {
    let ca = Ca::generate().unwrap();
    let bbs = id(Role::Bbs, "bbs");
    let (addr, l) = server(&node(&ca, &bbs), ClientAuth::Required).await;
    spawn_echo(l);
    let cell = ClientTls::new(&node(&ca, &id(Role::Cell, "cell-a")), bbs.clone()).unwrap();
    assert_eq!(
        ask(&cell, addr).await,
        Ok("cell-a.cell.lattice".to_string())
    );

    // A client whose certificate comes from another CA (trusting ours).
    let other = Ca::generate().unwrap();
    let stranger = ClientTls::new(&stranger(&other, &ca), bbs.clone());
    let e = ask(&stranger.unwrap(), addr).await.unwrap_err();
    assert!(
        e.contains("UnknownCA") || e.contains("BadCertificate"),
        "{e}"
    );

    // A plaintext client gets no answer but a closed connection / TLS alert.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
        .await
        .expect("the server closes a plaintext connection");
    assert!(!String::from_utf8_lossy(&buf).contains("cell"), "{buf:?}");
}

#[tokio::test]
async fn a_client_refuses_a_server_proving_another_identity() {
    let ca = Ca::generate().unwrap();
    // A cell's certificate serving where the BBS is expected.
    let (addr, l) = server(&node(&ca, &id(Role::Cell, "cell-b")), ClientAuth::Required).await;
    spawn_echo(l);
    let brain = node(&ca, &id(Role::Brain, "brain-1"));
    let e = ask(&ClientTls::new(&brain, id(Role::Bbs, "bbs")).unwrap(), addr)
        .await
        .unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    assert!(
        e.contains("bbs bbs"),
        "the error names who was expected: {e}"
    );
    // The right expectation works.
    let ok = ask(
        &ClientTls::new(&brain, id(Role::Cell, "cell-b")).unwrap(),
        addr,
    )
    .await;
    assert_eq!(ok, Ok("brain-1.brain.lattice".to_string()));
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_with_a_clear_error() {
    let ca = Ca::generate().unwrap();
    let bbs = id(Role::Bbs, "bbs");
    let (addr, l) = server(&node(&ca, &bbs), ClientAuth::Required).await;
    spawn_echo(l);
    let key = rcgen_key();
    let now = SystemTime::now();
    let day = Duration::from_secs(86400);
    let old = ca
        .issue_for_period(
            &id(Role::Cell, "cell-a"),
            SubjectKey::PublicKeyPem(&key.1),
            &[],
            now - 3 * day,
            now - day,
        )
        .unwrap();
    let expired = NodeTls::from_pem(
        old.cert_pem.as_bytes(),
        key.0.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap();
    let e = ask(&ClientTls::new(&expired, bbs).unwrap(), addr)
        .await
        .unwrap_err();
    assert!(e.contains("CertificateExpired"), "{e}");
}

/// A key pair as (private PEM, public PEM), made by issuing through the library.
fn rcgen_key() -> (String, String) {
    let ca = Ca::generate().unwrap();
    let k = ca
        .issue_new_key(&id(Role::Cell, "x"), &[], Duration::from_secs(120))
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&k.cert.cert_der).unwrap();
    let spki = cert.public_key().raw.to_vec();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64_lines(&spki)
    );
    (k.key_pem, pem)
}

fn base64_lines(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn optional_client_auth_lets_a_joining_client_in_without_identity() {
    let ca = Ca::generate().unwrap();
    let bbs_node = node(&ca, &id(Role::Bbs, "bbs"));
    let (addr, l) = server(&bbs_node, ClientAuth::Optional).await;
    spawn_echo(l);
    // Server-auth only: trusts the CA, presents nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca.cert_der().to_vec(),
        ))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(lattice_tls::config::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("bbs.bbs.lattice").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(first_line(&mut s).await.unwrap(), "nobody");
    // A certificate presented must still be the CA's.
    let cell = ClientTls::new(&node(&ca, &id(Role::Cell, "c")), id(Role::Bbs, "bbs")).unwrap();
    assert_eq!(ask(&cell, addr).await, Ok("c.cell.lattice".to_string()));
    let other = Ca::generate().unwrap();
    let stranger = ClientTls::new(&stranger(&other, &ca), id(Role::Bbs, "bbs"));
    let e = ask(&stranger.unwrap(), addr).await.unwrap_err();
    assert!(
        e.contains("UnknownCA") || e.contains("BadCertificate"),
        "{e}"
    );
}

#[tokio::test]
async fn plaintext_is_refused_beyond_loopback() {
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = Listener::new(tcp, None).err().expect("refused").to_string();
    assert!(e.contains("--tls-cert") && e.contains("0.0.0.0"), "{e}");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(Listener::new(tcp, None).is_ok());
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_used_by_new_handshakes_while_open_ones_continue() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    let bbs = id(Role::Bbs, "bbs");
    let files = TlsFiles::in_dir(dir.path(), "bbs");
    let first = ca
        .issue_new_key(&bbs, &[], Duration::from_secs(3600))
        .unwrap();
    files.write(&first, ca.cert_pem()).unwrap();
    let server_node = NodeTls::from_files(&files).unwrap();
    let (addr, l) = server(&server_node, ClientAuth::Required).await;
    spawn_echo(l);
    // A new client config each time: no session resumption, a full handshake.
    let cell = node(&ca, &id(Role::Cell, "a"));
    let client = || ClientTls::new(&cell, bbs.clone()).unwrap();
    let served_cert = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let mut open = client().connect(&addr.to_string()).await.unwrap();
    first_line(&mut open).await.unwrap();
    assert_eq!(served_cert(&open), first.cert.cert_der);

    let renewed = ca
        .issue_new_key(&bbs, &[], Duration::from_secs(7200))
        .unwrap();
    files.write(&renewed, ca.cert_pem()).unwrap();
    tokio::time::sleep(lattice_tls::files::RELOAD_CHECK_EVERY + Duration::from_millis(200)).await;
    let mut fresh = client().connect(&addr.to_string()).await.unwrap();
    first_line(&mut fresh).await.unwrap();
    assert_eq!(served_cert(&fresh), renewed.cert.cert_der);

    // The connection opened before the renewal still carries data.
    open.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    open.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");

    // A certificate for someone else written there is not taken.
    let other = ca
        .issue_new_key(&id(Role::Cell, "a"), &[], Duration::from_secs(3600))
        .unwrap();
    files.write(&other, ca.cert_pem()).unwrap();
    tokio::time::sleep(lattice_tls::files::RELOAD_CHECK_EVERY + Duration::from_millis(200)).await;
    let mut third = client().connect(&addr.to_string()).await.unwrap();
    first_line(&mut third).await.unwrap();
    assert_eq!(served_cert(&third), renewed.cert.cert_der);
}
