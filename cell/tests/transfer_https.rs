//! Download and Upload actions against an HTTPS server whose certificate comes from
//! a test CA (issue 22): trusted through the cell's extra CA they work; without it
//! they fail saying what to do, and a download leaves nothing behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use lattice_bbs::test_pki::TestCa;
use lattice_cell::inroot::Rooted;
use lattice_cell::transfer;
use lattice_specs::models::{DownloadAction, UploadAction};

/// A tar holding `hello.txt`.
fn archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let body = b"hello over https\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", &body[..]).unwrap();
    tar.into_inner().unwrap()
}

/// An HTTPS server on loopback, its certificate from `ca`: GET /app.tar, POST /drop
/// (what it received kept in the returned cell).
async fn https_server(
    ca: &TestCa,
) -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<u8>>>,
    tokio::sync::watch::Sender<bool>,
) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = axum::Router::new()
        .route("/app.tar", get(|| async { archive() }))
        .route(
            "/drop",
            post(move |body: axum::body::Bytes| async move {
                kept.lock().unwrap().extend_from_slice(&body);
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tls = ca.server(&["localhost", "127.0.0.1"]).server_config();
    tokio::spawn(lattice_bbs::serve::serve(
        listener,
        app,
        Default::default(),
        Some(tls),
        stopped,
    ));
    (addr, received, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_downloads_and_uploads_work_with_the_extra_ca_and_fail_clearly_without() {
    let ca = TestCa::new("transfer test CA");
    let (addr, received, _stop) = https_server(&ca).await;
    let root = tempfile::tempdir().unwrap();
    let d = |to: &str| DownloadAction {
        from: format!("https://localhost:{}/app.tar", addr.port()),
        to: to.into(),
        ..Default::default()
    };

    // Trusting the test CA besides the system's roots.
    let trusting = transfer::client(std::slice::from_ref(&ca.pem)).unwrap();
    let dest = Rooted::new(root.path(), "/app");
    tokio::time::timeout(
        Duration::from_secs(30),
        transfer::download(&trusting, dest, root.path(), &d("/app")),
    )
    .await
    .unwrap()
    .unwrap();
    let got = std::fs::read_to_string(root.path().join("app/hello.txt")).unwrap();
    assert_eq!(got, "hello over https\n");

    std::fs::write(root.path().join("report.txt"), "done\n").unwrap();
    let u = UploadAction {
        from: "/report.txt".into(),
        to: format!("https://127.0.0.1:{}/drop", addr.port()),
        ..Default::default()
    };
    transfer::upload(&trusting, Rooted::new(root.path(), "/report.txt"), &u)
        .await
        .unwrap();
    assert_eq!(&received.lock().unwrap()[..], b"done\n");

    // The system's roots alone: refused, saying what to do; nothing unpacked.
    let system = transfer::client(&[]).unwrap();
    let dest = Rooted::new(root.path(), "/other");
    let e = transfer::download(&system, dest, root.path(), &d("/other"))
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("not trusted by this cell") && msg.contains("--extra-ca"),
        "{msg}"
    );
    assert!(!root.path().join("other").exists());
    received.lock().unwrap().clear();
    let e = transfer::upload(&system, Rooted::new(root.path(), "/report.txt"), &u)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("--extra-ca"), "{e:#}");
    assert!(received.lock().unwrap().is_empty(), "nothing sent");

    // An extra CA that is no certificate is refused up front.
    let e = transfer::client(&["not a certificate".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("PEM"), "{e:#}");
}
