//! The `diego-sshd` binary as a process, as the original `ltc create` starts it
//! (`-address`, a PKCS#1 RSA `-hostKey`, `-authorizedKey`), with real SSH clients:
//! russh's client (public-key authentication with an RSA key, `exec` with its
//! output, stderr and exit status, `env`, a pty shell with its size and a resize, a
//! signal and its exit-signal, `direct-tcpip`, a refused subsystem, a wrong key
//! refused, a dropped client taking its process along) and Debian's OpenSSH `ssh`,
//! `scp` and `sftp` (the sftp subsystem).

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::PrivateKeyWithHashAlg;
use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST_KEY: &str = include_str!("keys/rsa_pkcs1.pem");
const CLIENT_KEY: &str = include_str!("keys/other_rsa.pem");
const CLIENT_PUB: &str = include_str!("keys/other_rsa.pub");

/// A diego-sshd process on a free loopback port; killed when dropped.
struct Sshd {
    child: Child,
    addr: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sshd(extra: &[&str]) -> Sshd {
    sshd_in(extra, std::path::Path::new("/root"))
}

/// A daemon whose HOME is `home`.
fn sshd_with_home(home: &std::path::Path) -> Sshd {
    sshd_in(&[], home)
}

fn sshd_in(extra: &[&str], home: &std::path::Path) -> Sshd {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        format!("-address={addr}"),
        format!("-hostKey={HOST_KEY}"),
        format!("-authorizedKey={}", CLIENT_PUB.trim()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_diego-sshd"))
        .args(&args)
        .env("HOME", home)
        .env("USER", "root")
        .stdout(Stdio::null())
        .spawn()
        .expect("running diego-sshd");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "diego-sshd never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Sshd { child, addr }
}

struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // The host key is the one given with -hostKey.
        let host = russh::keys::decode_secret_key(HOST_KEY, None).unwrap();
        Ok(
            matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
            if key.key_data() == host.public_key().key_data()),
        )
    }
}

async fn connect(addr: &str, key_pem: &str) -> (Handle<Client>, bool) {
    let config = Arc::new(client::Config::default());
    let mut session = client::connect(config, addr, Client)
        .await
        .expect("connecting");
    let key = russh::keys::decode_secret_key(key_pem, None).unwrap();
    let hash = session.best_supported_rsa_hash().await.unwrap().flatten();
    let auth = session
        .authenticate_publickey("vcap", PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .unwrap();
    (session, auth.success())
}

/// Everything a channel says until it closes: stdout, stderr, exit status, signal.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<u32>,
    signal: Option<String>,
}

async fn collect(channel: &mut russh::Channel<client::Msg>) -> Outcome {
    let mut o = Outcome::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => o.stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => o.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => o.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                o.signal = Some(format!("{signal_name:?}"))
            }
            _ => {}
        }
    }
    o
}

#[tokio::test]
async fn exec_gives_output_stderr_env_and_exit_status() {
    let d = sshd(&[]);
    let (session, ok) = connect(&d.addr, CLIENT_KEY).await;
    assert!(ok, "the authorized key is let in");
    let mut ch = session.channel_open_session().await.unwrap();
    ch.set_env(true, "GREETING", "hello").await.unwrap();
    ch.exec(true, "echo $GREETING $USER $PATH; echo oops >&2; exit 7")
        .await
        .unwrap();
    let o = collect(&mut ch).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello root /bin:/usr/bin\n"
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
    assert_eq!(o.status, Some(7));
    // stdin reaches the command; EOF ends it.
    let mut ch = session.channel_open_session().await.unwrap();
    ch.exec(true, "tr a-z A-Z").await.unwrap();
    ch.data(&b"shout\n"[..]).await.unwrap();
    ch.eof().await.unwrap();
    let o = collect(&mut ch).await;
    assert_eq!((o.stdout.as_slice(), o.status), (&b"SHOUT\n"[..], Some(0)));
}

#[tokio::test]
async fn a_pty_shell_has_its_terminal_and_size() {
    let d = sshd(&[]);
    let (session, ok) = connect(&d.addr, CLIENT_KEY).await;
    assert!(ok);
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_pty(true, "xterm-test", 91, 33, 0, 0, &[])
        .await
        .unwrap();
    ch.request_shell(true).await.unwrap();
    ch.data(&b"stty size; echo term=$TERM; tty >/dev/null && echo is-a-tty-$((6*7))\n"[..])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while !String::from_utf8_lossy(&seen).contains("is-a-tty-42") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{}",
            String::from_utf8_lossy(&seen)
        );
        match tokio::time::timeout(Duration::from_secs(20), ch.wait()).await {
            Ok(Some(ChannelMsg::Data { data })) => seen.extend_from_slice(&data),
            Ok(Some(_)) => {}
            other => panic!("{other:?}: {}", String::from_utf8_lossy(&seen)),
        }
    }
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.contains("33 91"), "{text}");
    assert!(text.contains("term=xterm-test"), "{text}");
    ch.window_change(120, 40, 0, 0).await.unwrap();
    ch.data(&b"stty size; exit 3\n"[..]).await.unwrap();
    let o = collect(&mut ch).await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("40 120"),
        "{o:?}"
    );
    assert_eq!(o.status, Some(3));
}

#[tokio::test]
async fn a_signal_reaches_the_process_and_comes_back_as_exit_signal() {
    let d = sshd(&[]);
    let (session, _) = connect(&d.addr, CLIENT_KEY).await;
    let mut ch = session.channel_open_session().await.unwrap();
    ch.exec(true, "echo started; exec sleep 60").await.unwrap();
    loop {
        match ch.wait().await {
            Some(ChannelMsg::Data { data }) if data.starts_with(b"started") => break,
            Some(_) => {}
            None => panic!("closed before starting"),
        }
    }
    ch.signal(russh::Sig::TERM).await.unwrap();
    let o = collect(&mut ch).await;
    assert_eq!(o.signal.as_deref(), Some("TERM"), "{o:?}");
    assert_eq!(o.status, None);
}

#[tokio::test]
async fn direct_tcpip_reaches_a_port_on_the_daemons_side() {
    let d = sshd(&[]);
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut c, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        c.write_all(&buf.map(|b| b.to_ascii_uppercase()))
            .await
            .unwrap();
    });
    let (session, _) = connect(&d.addr, CLIENT_KEY).await;
    let ch = session
        .channel_open_direct_tcpip("localhost", u32::from(port), "0.0.0.0", 0)
        .await
        .unwrap();
    let mut stream = ch.into_stream();
    stream.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"HELLO");
    // Nothing listening: the channel is refused.
    let closed = free_port();
    assert!(session
        .channel_open_direct_tcpip("127.0.0.1", u32::from(closed), "0.0.0.0", 0)
        .await
        .is_err());
}

#[tokio::test]
async fn other_requests_and_keys_are_refused() {
    let d = sshd(&[]);
    let (_, ok) = connect(&d.addr, HOST_KEY).await;
    assert!(!ok, "a key that is not the authorized one is refused");
    let (session, ok) = connect(&d.addr, CLIENT_KEY).await;
    assert!(ok);
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_subsystem(true, "netconf").await.unwrap();
    let reply = loop {
        match ch.wait().await {
            Some(ChannelMsg::Success) => break true,
            Some(ChannelMsg::Failure) => break false,
            Some(_) => {}
            None => panic!("channel closed"),
        }
    };
    assert!(!reply, "subsystems other than sftp are refused");
    // The channel is still usable after the refusal.
    ch.exec(true, "exit 0").await.unwrap();
    assert_eq!(collect(&mut ch).await.status, Some(0));
}

#[tokio::test]
async fn a_dropped_client_takes_its_process_along() {
    let d = sshd(&[]);
    let (session, _) = connect(&d.addr, CLIENT_KEY).await;
    let mut ch = session.channel_open_session().await.unwrap();
    ch.exec(true, "echo $$; exec sleep 600").await.unwrap();
    let pid = loop {
        match ch.wait().await {
            Some(ChannelMsg::Data { data }) => {
                break String::from_utf8_lossy(&data)
                    .trim()
                    .parse::<u32>()
                    .unwrap()
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    };
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(ch);
    drop(session);
    let t0 = Instant::now();
    // Gone, or a zombie the daemon has yet to reap: not running `sleep` any more.
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sleep {pid} outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn configuration_failures_exit_1_and_bad_flags_2() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_diego-sshd"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["-address=127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configure-failed"));
    assert_eq!(run(&["-nope"]).status.code(), Some(2));
    let out = run(&["-hostKey=garbage", "-authorizedKey", CLIENT_PUB.trim()]);
    assert_eq!(out.status.code(), Some(1));
}

/// Debian's OpenSSH client, as a user (or the SSH proxy's successor) would use it.
#[test]
fn openssh_runs_a_command_with_its_status() {
    let d = sshd(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_rsa");
    std::fs::write(&key, CLIENT_KEY).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = d.addr.rsplit(':').next().unwrap();
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&key)
        .args([
            "-p",
            port,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "vcap@127.0.0.1",
            "echo from-openssh; exit 4",
        ])
        .output()
        .expect("running ssh (Debian's openssh-client: scripts/setup.sh installs it)");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(4), "from-openssh\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// OpenSSH's `ssh` options for the test daemon, with `key`.
fn openssh_opts(key: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
    v.push(key.into());
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "LogLevel=ERROR",
    ] {
        v.push("-o".into());
        v.push(o.into());
    }
    v
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("running an OpenSSH client (scripts/setup.sh installs openssh-client)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Today's `scp` speaks SFTP: files go up and come back byte for byte, with their
/// mode under `-p`; `sftp` lists, renames, makes and removes; relative paths start
/// in the session's HOME.
#[test]
fn openssh_scp_and_sftp_move_files_through_the_sftp_subsystem() {
    let home = tempfile::tempdir().unwrap();
    let d = sshd_with_home(home.path());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_rsa");
    std::fs::write(&key, CLIENT_KEY).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    // 1 MiB and a bit, not a multiple of any buffer: several reads and writes.
    let data: Vec<u8> = (0..(1 << 20) + 12345u32)
        .map(|i| (i * 7 + i / 255) as u8)
        .collect();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();

    run(Command::new("scp")
        .args(openssh_opts(&key))
        .args(["-p", "-P", &port])
        .arg(&local)
        .arg("vcap@127.0.0.1:up.bin"));
    let remote = home.path().join("up.bin");
    assert_eq!(
        std::fs::read(&remote).unwrap(),
        data,
        "uploaded into HOME byte for byte"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&remote).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640, "scp -p kept the mode");

    let back = dir.path().join("back.bin");
    run(Command::new("scp")
        .args(openssh_opts(&key))
        .args(["-P", &port])
        .arg(format!("vcap@127.0.0.1:{}", remote.display()))
        .arg(&back));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        data,
        "downloaded byte for byte"
    );

    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        "mkdir sub\nrename up.bin sub/moved.bin\nls -l sub\nsymlink sub/moved.bin link\nrm sub/moved.bin\nrmdir sub\n",
    )
    .unwrap();
    let out = run(Command::new("sftp")
        .args(openssh_opts(&key))
        .args(["-P", &port, "-b"])
        .arg(&batch)
        .arg("vcap@127.0.0.1"));
    assert!(
        out.contains("moved.bin"),
        "ls shows the renamed file: {out}"
    );
    assert!(!home.path().join("sub").exists(), "removed");
    assert_eq!(
        std::fs::read_link(home.path().join("link")).unwrap(),
        std::path::PathBuf::from("sub/moved.bin"),
        "a link named as OpenSSH's sftp names it"
    );

    // A file that is not there: scp fails with the reason, nothing is left behind.
    let out = Command::new("scp")
        .args(openssh_opts(&key))
        .args(["-P", &port])
        .arg("vcap@127.0.0.1:/nonexistent/file")
        .arg(dir.path().join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sessions' servers are gone with them.
    let t0 = Instant::now();
    loop {
        let left = Command::new("pgrep")
            .args(["-f", "lattice-sftp-server"])
            .output()
            .unwrap();
        let ours: Vec<String> = String::from_utf8_lossy(&left.stdout)
            .lines()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| s.contains(&format!("PPid:\t{}", d.child.id())))
                    .unwrap_or(false)
            })
            .map(String::from)
            .collect();
        if ours.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "sftp servers left: {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
