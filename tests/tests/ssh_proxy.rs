//! The original Lattice `ltc`'s doors on `lattice up`: Diego's ssh proxy (port 2222 of
//! the API host) and the WebDAV blob store (port 8444), with real clients.
//! - ssh: a russh client (as `ltc ssh` speaks it: user `diego:APP/INDEX`, the API's
//!   credential as password; also with exactly the algorithms the 2015 ltc offers)
//!   and Debian's OpenSSH `ssh` (host key checked against the kept one): a command
//!   with its output, stderr and exit status, a shell on a terminal, `-L` to a server
//!   on the instance's own loopback; unknown app, index out of range, wrong password
//!   and `:` on an API with credentials refused, the refusal in the audit trail.
//! - WebDAV over raw HTTP: PROPFIND (207, RFC 1123 dates, lengths), PUT, GET, DELETE;
//!   `Basic Og==` taken only when the API has no credentials.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use lattice_tests::openssh::{page_through, proxy_host_key, OpenSsh};
use lattice_tests::{free_port, wait_for, UpProcess};
use russh::client;
use russh::keys::{PrivateKey, PublicKey};
use russh::ChannelMsg;

/// A busybox app `web` serving `page-INDEX` on 8080 and on the instance's own
/// 127.0.0.1:8081 only. `login`: ltc's target flags for an API with credentials.
fn with_web(up: &UpProcess, login: &[&str]) {
    let port = up.router.rsplit(':').next().unwrap();
    let domain = format!("lattice.localhost:{port}");
    let mut args = vec!["target", &up.api, "--domain", &domain];
    args.extend_from_slice(login);
    up.ltc_ok(&args);
    let root = format!("/tmp/sshproxy-www-{}", std::process::id());
    let cmd = format!(
        "mkdir -p {root} && echo page-$INSTANCE_INDEX > {root}/index.html && httpd -p 127.0.0.1:8081 -h {root} && exec httpd -f -p 8080 -h {root}"
    );
    let out = up.ltc_ok(&["create", "web", "preloaded:busybox", "--", "sh", "-c", &cmd]);
    assert!(out.contains("App web is running"), "{out}");
}

/// A client that trusts only the proxy's kept host key.
struct Known(PublicKey);

impl client::Handler for Known {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } if *key == self.0),
        )
    }
}

/// The algorithms golang.org/x/crypto of 2015 (the original ltc) offers, one of each
/// (with the host key the proxy has).
fn ltc_2015() -> russh::Preferred {
    russh::Preferred {
        kex: vec![russh::kex::CURVE25519_PRE_RFC_8731].into(),
        key: vec![russh::keys::Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        }]
        .into(),
        cipher: vec![russh::cipher::AES_128_CTR].into(),
        mac: vec![russh::mac::HMAC_SHA256].into(),
        ..Default::default()
    }
}

/// Logs in; None when refused.
async fn login(
    up: &UpProcess,
    preferred: russh::Preferred,
    user: &str,
    password: &str,
) -> Option<client::Handle<Known>> {
    let cfg = Arc::new(client::Config {
        preferred,
        ..Default::default()
    });
    let mut h = client::connect(cfg, up.ssh.as_str(), Known(proxy_host_key(up)))
        .await
        .expect("the handshake (host key, algorithms)");
    let ok = h
        .authenticate_password(user, password)
        .await
        .unwrap()
        .success();
    ok.then_some(h)
}

#[derive(Debug, Default)]
struct Ran {
    stdout: String,
    stderr: String,
    status: Option<u32>,
}

/// Everything a channel sends until it closes.
async fn collect(ch: &mut russh::Channel<client::Msg>) -> Ran {
    let mut r = Ran::default();
    let read = async {
        while let Some(m) = ch.wait().await {
            match m {
                ChannelMsg::Data { data } => r.stdout.push_str(&String::from_utf8_lossy(&data)),
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    r.stderr.push_str(&String::from_utf8_lossy(&data))
                }
                ChannelMsg::ExitStatus { exit_status } => r.status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the channel closes");
    r
}

async fn run(h: &client::Handle<Known>, command: &str) -> Ran {
    let mut ch = h.channel_open_session().await.unwrap();
    ch.exec(true, command).await.unwrap();
    collect(&mut ch).await
}

/// Reads the channel until its output holds `needle`; returns all of it.
async fn until(ch: &mut russh::Channel<client::Msg>, needle: &str) -> String {
    let mut seen = String::new();
    let read = async {
        while let Some(m) = ch.wait().await {
            if let ChannelMsg::Data { data } = m {
                seen.push_str(&String::from_utf8_lossy(&data));
                if seen.contains(needle) {
                    return;
                }
            }
        }
    };
    let found = tokio::time::timeout(Duration::from_secs(30), read).await;
    assert!(
        found.is_ok(),
        "{needle:?} not seen; the terminal shows {seen:?}"
    );
    seen
}

/// `GET path` of the API (no credentials: loopback): the body, de-chunked.
fn api_get(up: &UpProcess, path: &str) -> String {
    let addr = up.api.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = vec![];
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let mut body = resp[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = lattice_tests::dechunk(&body).unwrap();
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The audit trail (the debug log the API serves).
fn debug_log(up: &UpProcess) -> String {
    let guid = lattice_specs::logs::DEBUG_LOG_GUID;
    api_get(up, &format!("/v1/logs/{guid}?follow=false"))
}

async fn russh_sessions(up: &UpProcess) {
    // A command: stdout, stderr, the exit status; with the 2015 ltc's algorithms.
    let h = login(up, ltc_2015(), "diego:web/0", ":")
        .await
        .expect("`:` logs in where the API has no credentials (loopback)");
    let r = run(&h, "echo out-$INSTANCE_INDEX; echo err >&2; exit 3").await;
    assert_eq!(r.stdout, "out-0\n", "{r:?}");
    assert_eq!(r.stderr, "err\n", "{r:?}");
    assert_eq!(r.status, Some(3), "{r:?}");

    // A shell on a terminal: the prompt, a command, its size, `exit 5`.
    let mut ch = h.channel_open_session().await.unwrap();
    ch.request_pty(true, "xterm", 90, 33, 0, 0, &[])
        .await
        .unwrap();
    ch.request_shell(true).await.unwrap();
    until(&mut ch, "# ").await;
    ch.data(&b"echo answer=$((40+2)); stty size\n"[..])
        .await
        .unwrap();
    until(&mut ch, "33 90").await;
    ch.data(&b"exit 5\n"[..]).await.unwrap();
    let r = collect(&mut ch).await;
    assert_eq!(r.status, Some(5), "{r:?}");

    // -L: a server only the instance's own loopback reaches.
    let mut ch = h
        .channel_open_direct_tcpip("127.0.0.1", 8081, "0.0.0.0", 0)
        .await
        .unwrap();
    ch.data(&b"GET / HTTP/1.0\r\n\r\n"[..]).await.unwrap();
    ch.eof().await.unwrap();
    let r = collect(&mut ch).await;
    assert!(r.stdout.contains("page-0"), "{r:?}");
    // Nothing listens there: the channel closes at once, with nothing.
    let mut ch = h
        .channel_open_direct_tcpip("127.0.0.1", 8099, "0.0.0.0", 0)
        .await
        .unwrap();
    let r = collect(&mut ch).await;
    assert!(r.stdout.is_empty(), "{r:?}");

    // A client that goes away takes its process with it.
    let gone = login(up, Default::default(), "diego:web/0", ":")
        .await
        .unwrap();
    let ch = gone.channel_open_session().await.unwrap();
    ch.exec(true, "sleep 4321").await.unwrap();
    let count = "ps | grep -c '[s]leep 4321'";
    let mut seen = String::new();
    for _ in 0..60 {
        seen = run(&h, count).await.stdout;
        if seen.trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen.trim(), "1", "the command runs");
    gone.disconnect(russh::Disconnect::ByApplication, "bye", "")
        .await
        .unwrap();
    drop(ch);
    for _ in 0..60 {
        seen = run(&h, count).await.stdout;
        if seen.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen.trim(), "0", "the dropped client's process is gone");

    // Index 0 by default; an API token as the password.
    let token = std::fs::read_to_string(up.data_dir.path().join("lattice/admin.token")).unwrap();
    let h = login(up, Default::default(), "diego:web", token.trim())
        .await
        .expect("an API token logs in");
    assert_eq!(run(&h, "echo $INSTANCE_INDEX").await.stdout, "0\n");

    // Unknown app, index out of range, not a diego user, a wrong token.
    for (user, password) in [
        ("diego:nope/0", ":"),
        ("diego:web/1", ":"),
        ("root", ":"),
        ("diego:web/0", "not-a-token"),
    ] {
        assert!(
            login(up, Default::default(), user, password)
                .await
                .is_none(),
            "{user} with {password:?} logged in"
        );
    }
}

fn openssh_sessions(up: &UpProcess) {
    let ssh = OpenSsh::new(up);
    let (status, out, err) = ssh.run(
        ":",
        "diego:web/0",
        &[],
        &["echo out-$INSTANCE_INDEX; echo err >&2; exit 4"],
        b"",
    );
    assert_eq!((status, out.as_str()), (4, "out-0\n"), "{err}");
    assert!(err.contains("err"), "{err}");

    // A terminal (-tt: stdin is a pipe here), the shell reading it.
    let (status, out, err) = ssh.run(
        ":",
        "diego:web/0",
        &["-tt"],
        &[],
        b"echo answer=$((40+2)); exit 6\n",
    );
    assert!(out.contains("answer=42"), "{out} {err}");
    assert_eq!(status, 6, "{out} {err}");

    // -L to the instance's own loopback.
    let local = free_port();
    let mut fwd = ssh
        .command(
            ":",
            "diego:web/0",
            &["-N", "-L", &format!("{local}:127.0.0.1:8081")],
            &[],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let page = wait_for("the forward to answer", Duration::from_secs(30), || {
        page_through(local, "page-0")
    });
    assert!(page.contains("200"), "{page}");
    fwd.kill().unwrap();
    fwd.wait().unwrap();

    // Today's scp speaks SFTP: busybox has no sftp-server and this instance (ours,
    // not the original ltc's) no diego-sshd: refused, saying so.
    let local = ssh.dir.path().join("up.txt");
    std::fs::write(&local, "x").unwrap();
    let (status, err) = ssh.scp(
        ":",
        "diego:web/0",
        &[local.to_str().unwrap(), "127.0.0.1:/tmp/up.txt"],
    );
    assert_ne!(status, 0, "{err}");
    assert!(err.contains("no sftp-server"), "{err}");

    // A host key other than the kept one is refused by ssh itself.
    std::fs::write(
        ssh.dir.path().join("known_hosts"),
        format!(
            "[127.0.0.1]:{} {}\n",
            ssh.port,
            PrivateKey::random(
                &mut russh::keys::key::safe_rng(),
                russh::keys::Algorithm::Ecdsa {
                    curve: russh::keys::EcdsaCurve::NistP256
                }
            )
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap()
        ),
    )
    .unwrap();
    let (status, _, err) = ssh.run(":", "diego:web/0", &[], &["true"], b"");
    assert_eq!(status, 255, "{err}");
    assert!(err.contains("HOST IDENTIFICATION HAS CHANGED"), "{err}");
}

/// One raw HTTP/1.1 request to the WebDAV port: (status, head, body).
fn dav(
    up: &UpProcess,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(&up.dav).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: lattice.test:8444\r\nConnection: close\r\nDepth: 1\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = vec![];
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

fn webdav_without_credentials(up: &UpProcess) {
    // What `ltc target` checks: PROPFIND /blobs/ with `Basic Og==` (":").
    let none = Some("Basic Og==");
    let (status, head, body) = dav(up, "PROPFIND", "/blobs/", none, b"");
    assert_eq!(status, 207, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("application/xml"),
        "{head}"
    );
    let (status, ..) = dav(up, "PUT", "/blobs/app-droplet.tgz", none, b"droplet-bytes");
    assert_eq!(status, 201);
    let (status, _, body) = dav(up, "PROPFIND", "/blobs", none, b"");
    assert_eq!(status, 207, "{body}");
    assert!(
        body.contains("<D:href>/blobs/app-droplet.tgz</D:href>"),
        "{body}"
    );
    assert!(
        body.contains("<D:getcontentlength>13</D:getcontentlength>"),
        "{body}"
    );
    let date = body
        .split("<D:getlastmodified>")
        .nth(2)
        .and_then(|d| d.split('<').next())
        .unwrap();
    chrono::DateTime::parse_from_rfc2822(date).unwrap_or_else(|e| panic!("{date:?}: {e}"));
    assert!(date.ends_with(" GMT"), "{date}");
    let (status, _, got) = dav(up, "GET", "/blobs/app-droplet.tgz", none, b"");
    assert_eq!((status, got.as_str()), (200, "droplet-bytes"));
    // The same blob store as /v1/blobs.
    let listed = api_get(up, "/v1/blobs");
    assert!(listed.contains("app-droplet.tgz"), "{listed}");
    let (status, ..) = dav(up, "DELETE", "/blobs/app-droplet.tgz", none, b"");
    assert_eq!(status, 204);
    let (status, ..) = dav(up, "GET", "/blobs/app-droplet.tgz", none, b"");
    assert_eq!(status, 404);
    let (status, ..) = dav(up, "PUT", "/blobs/..%2Fescape", none, b"x");
    assert_eq!(status, 400);
}

#[test]
fn the_original_ltcs_ssh_proxy_and_droplet_store_on_lattice_up() {
    let up = UpProcess::start();
    with_web(&up, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(russh_sessions(&up));
    let log = debug_log(&up);
    assert!(
        log.contains("ssh login refused: user=diego:nope/0"),
        "the refusal is audited: {log}"
    );
    assert!(
        log.contains("verb=EXEC object=/v1/actual_lrps/web/index/0/exec"),
        "the session is audited: {log}"
    );
    openssh_sessions(&up);
    webdav_without_credentials(&up);
}

#[test]
fn with_credentials_only_they_open_ssh_and_webdav() {
    let up = UpProcess::start_with(&["--basic-auth", "admin:s3cret"]);
    with_web(&up, &["--user", "admin", "--password", "s3cret"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let h = login(&up, ltc_2015(), "diego:web/0", "admin:s3cret")
            .await
            .expect("the API's Basic credential logs in");
        let r = run(&h, "echo ok").await;
        assert_eq!((r.stdout.as_str(), r.status), ("ok\n", Some(0)), "{r:?}");
        for password in [":", "admin:wrong", "admin"] {
            assert!(
                login(&up, Default::default(), "diego:web/0", password)
                    .await
                    .is_none(),
                "{password:?} logged in"
            );
        }
    });
    let ssh = OpenSsh::new(&up);
    let (status, _, err) = ssh.run("admin:wrong", "diego:web/0", &[], &["true"], b"");
    assert_eq!(status, 255, "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (status, out, err) = ssh.run("admin:s3cret", "diego:web/0", &[], &["echo", "in"], b"");
    assert_eq!((status, out.as_str()), (0, "in\n"), "{err}");

    // WebDAV: `Og==`, none and a wrong password are refused; the credential works.
    for auth in [Some("Basic Og=="), None, Some(&*basic("admin:wrong"))] {
        let (status, head, _) = dav(&up, "PROPFIND", "/blobs/", auth, b"");
        assert_eq!(status, 401, "{auth:?}: {head}");
        assert!(
            head.contains("WWW-Authenticate") || head.contains("www-authenticate"),
            "{head}"
        );
    }
    let good = basic("admin:s3cret");
    let (status, ..) = dav(&up, "PROPFIND", "/blobs/", Some(&good), b"");
    assert_eq!(status, 207);
    let (status, ..) = dav(&up, "PUT", "/blobs/d.tgz", Some(&good), b"abc");
    assert_eq!(status, 201);
    let (status, ..) = dav(&up, "GET", "/blobs/d.tgz", None, b"");
    assert_eq!(status, 401);
}
