//! Issue 26's lifecycle path end to end: `lattice up`, and LRPs shaped exactly like
//! the original `ltc create`'s (v0.7) in the preloaded busybox image — the setup
//! download of `buildpack_app_lifecycle.tgz` from
//! `file-server.service.cf.internal:8080`, `diego-sshd` in parallel with the app,
//! `/tmp/healthcheck -timeout 1s -port 8080` (and `-uri`) as the monitor. They come
//! up RUNNING (the monitor passes), serve through the router, and Debian's `ssh`
//! logs into the instance's `diego-sshd` with the authorized key: a command with its
//! status, run as the LRP's user; from inside the container the file server's name
//! resolves and answers (an unknown lifecycle 404s). `scp` (SFTP) into the daemon;
//! through Diego's ssh proxy, sessions, `scp` and `-L` relayed into the instance's own
//! `diego-sshd` when its LRP has a `diego-ssh` route, the exec path (with the
//! downloaded daemon's SFTP server) when it has none.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lattice_tests::openssh::{page_through, OpenSsh};
use lattice_tests::{wait_for, UpProcess};
use serde_json::{json, Value};

/// A fresh RSA key pair as ltc makes one: the PKCS#1 PEM private key and the
/// `ssh-rsa BASE64` public key (no comment).
fn keypair(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args([
            "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", "", "-f",
        ])
        .arg(&path)
        .status()
        .expect("running ssh-keygen (Debian's openssh-client: scripts/setup.sh installs it)");
    assert!(st.success());
    let private = std::fs::read_to_string(&path).unwrap();
    assert!(
        private.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1, as ltc's"
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (private, public.trim().to_string())
}

/// The DesiredLRP `ltc create NAME preloaded:busybox` POSTs (spec §3), with `app`
/// as the app's shell command and `monitor_args` as the healthcheck's.
fn ltc_lrp(
    name: &str,
    app: &str,
    monitor_args: &[&str],
    host_key: &str,
    authorized: &str,
    proxy_key: &str,
) -> Value {
    json!({
        "process_guid": name,
        "domain": "lattice",
        "rootfs": "preloaded:busybox",
        "instances": 1,
        "env": [
            {"name": "PROCESS_GUID", "value": name},
            {"name": "PORT", "value": "8080"},
            {"name": "VCAP_SERVICES", "value": "{}"}
        ],
        "setup": {"download": {
            "from": "http://file-server.service.cf.internal:8080/v1/static/buildpack_app_lifecycle/buildpack_app_lifecycle.tgz",
            "to": "/tmp", "cache_key": "", "user": "nobody"}},
        "action": {"parallel": {"actions": [
            {"run": {"path": "/tmp/diego-sshd",
                     "args": ["-address=0.0.0.0:2222",
                              format!("-authorizedKey={authorized}"),
                              format!("-hostKey={host_key}")],
                     "dir": "/tmp", "user": "nobody", "log_source": "SSH"}},
            {"run": {"path": "/bin/sh", "args": ["-c", app], "dir": "/tmp", "user": "nobody"}}
        ]}},
        "monitor": {"run": {"path": "/tmp/healthcheck", "args": monitor_args,
                             "user": "nobody", "log_source": "HEALTH"}},
        "start_timeout": 0, "disk_mb": 0, "memory_mb": 128, "cpu_weight": 100,
        "privileged": false, "ports": [8080, 2222],
        "routes": {
            "cf-router": [{"hostnames": [format!("{name}.lattice.localhost")], "port": 8080}],
            "diego-ssh": {"container_port": 2222, "private_key": proxy_key}
        },
        "log_guid": name, "log_source": "APP", "metrics_guid": name
    })
}

/// The instance's host port for `container_port`, once it is RUNNING.
fn running_port(api: &str, guid: &str, container_port: u64) -> u16 {
    let url = format!("{api}/v1/actual_lrps/{guid}");
    wait_for(&format!("{guid} RUNNING"), Duration::from_secs(90), || {
        let actual: Value = api::get(&url)?;
        let a = actual.as_array()?.first()?.clone();
        if a["state"] != "RUNNING" {
            return None;
        }
        a["ports"].as_array()?.iter().find_map(|p| {
            (p["container_port"].as_u64()? == container_port)
                .then(|| p["host_port"].as_u64().map(|h| h as u16))?
        })
    })
}

mod api {
    //! Blocking JSON calls on a runtime of their own (the test is synchronous).
    pub fn get(url: &str) -> Option<serde_json::Value> {
        rt().block_on(async {
            let r = reqwest::get(url).await.ok()?;
            r.status().is_success().then_some(())?;
            r.json().await.ok()
        })
    }

    pub fn send(method: reqwest::Method, url: &str, body: Option<&serde_json::Value>) -> u16 {
        rt().block_on(async {
            let mut req = reqwest::Client::new().request(method, url);
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.expect("calling the API");
            let status = r.status().as_u16();
            if status >= 300 {
                panic!("{url}: {status} {}", r.text().await.unwrap_or_default());
            }
            status
        })
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}

/// Debian's OpenSSH `program` (`ssh` or `scp`) towards 127.0.0.1:`port` with `key`,
/// any host key taken.
fn openssh(program: &str, key: &Path, port: u16) -> Command {
    let port_flag = if program == "scp" { "-P" } else { "-p" };
    let mut c = Command::new(program);
    c.args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args([port_flag, &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]);
    c
}

/// `ssh` into 127.0.0.1:`port` with `key`, running `command`: (exit status, stdout,
/// stderr).
fn ssh(key: &Path, port: u16, command: &str) -> (i32, String, String) {
    let out = openssh("ssh", key, port)
        .args(["vcap@127.0.0.1", command])
        .output()
        .expect("running ssh (Debian's openssh-client: scripts/setup.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn ltc_shaped_lrps_download_the_lifecycle_pass_healthcheck_and_take_ssh() {
    let up = UpProcess::start();
    let keys = tempfile::tempdir().unwrap();
    let (host_key, _) = keypair(keys.path(), "host");
    let (proxy_key, authorized) = keypair(keys.path(), "proxy");
    let client_key = keys.path().join("proxy");

    api::send(
        reqwest::Method::PUT,
        &format!("{}/v1/domains/lattice", up.api),
        None,
    );
    let app = "mkdir -p /tmp/www && echo hello-$PROCESS_GUID > /tmp/www/index.html && echo ok > /tmp/www/health && exec httpd -f -p 8080 -h /tmp/www";
    let port_lrp = ltc_lrp(
        "lc-port",
        app,
        &["-timeout", "1s", "-port", "8080"],
        &host_key,
        &authorized,
        &proxy_key,
    );
    api::send(
        reqwest::Method::POST,
        &format!("{}/v1/desired_lrps", up.api),
        Some(&port_lrp),
    );
    let mut uri_lrp = ltc_lrp(
        "lc-uri",
        app,
        &["-timeout", "5s", "-port", "8080", "-uri", "/health"],
        &host_key,
        &authorized,
        &proxy_key,
    );
    // Without its diego-ssh route: the ssh proxy takes the exec path into this one.
    uri_lrp["routes"]
        .as_object_mut()
        .unwrap()
        .remove("diego-ssh");
    api::send(
        reqwest::Method::POST,
        &format!("{}/v1/desired_lrps", up.api),
        Some(&uri_lrp),
    );

    // RUNNING means the monitor (our healthcheck, from the downloaded tarball) passed.
    let ssh_port = running_port(&up.api, "lc-port", 2222);
    running_port(&up.api, "lc-uri", 2222);
    for name in ["lc-port", "lc-uri"] {
        let page = wait_for(
            "the app through the router",
            Duration::from_secs(20),
            || up.get(name).filter(|(s, _)| *s == 200),
        );
        assert_eq!(page.1.trim(), format!("hello-{name}"));
    }

    // Debian's ssh into the instance's diego-sshd with the authorized key.
    let (code, out, err) = wait_for("diego-sshd answering", Duration::from_secs(20), || {
        let r = ssh(&client_key, ssh_port, "id -un; echo $PATH; exit 5");
        (r.0 != 255).then_some(r)
    });
    assert_eq!(
        (code, out.as_str()),
        (5, "nobody\n/bin:/usr/bin\n"),
        "{err}"
    );

    // Inside the container the file server's name resolves (the cell's DNS) and
    // answers at port 8080 (the cell's firewall sends it to the cell's server).
    let fetch = "wget -q -O - http://file-server.service.cf.internal:8080/v1/static/docker_app_lifecycle/docker_app_lifecycle.tgz | tar tzf -";
    let (code, out, err) = ssh(&client_key, ssh_port, fetch);
    assert_eq!(
        (code, out.as_str()),
        (0, "healthcheck\ndiego-sshd\n"),
        "{err}"
    );
    let unknown = "wget -q -O /dev/null http://file-server.service.cf.internal:8080/v1/static/cell-helpers/cell-helpers.tgz 2>&1; echo status=$?";
    let (_, out, _) = ssh(&client_key, ssh_port, unknown);
    assert!(out.contains("404") && !out.contains("status=0"), "{out}");

    // scp (SFTP, as today's OpenSSH speaks it) straight to the instance's diego-sshd.
    let data: String = (0..40_000).map(|i| format!("{i}\n")).collect();
    let local = keys.path().join("payload.txt");
    std::fs::write(&local, &data).unwrap();
    let direct = scp_direct(
        &client_key,
        ssh_port,
        &[local.to_str().unwrap(), "nobody@127.0.0.1:/tmp/direct.txt"],
    );
    assert_eq!(direct.0, 0, "{}", direct.1);

    // Through Diego's ssh proxy: lc-port has a diego-ssh route, so its sessions are
    // relayed into its own diego-sshd (the shell is the daemon's child, as its user);
    // lc-uri has none, so they take the exec path.
    let proxy = OpenSsh::new(&up);
    let (status, out, err) = proxy.run(
        ":",
        "diego:lc-port/0",
        &[],
        &["id -un; cat /proc/$PPID/comm; exit 3"],
        b"",
    );
    assert_eq!((status, out.as_str()), (3, "nobody\ndiego-sshd\n"), "{err}");
    // 1 MB up and back through the relay at once: neither direction waits on the
    // other. (Not more: russh widens a channel's window as data arrives, not as it is
    // consumed, so a bulk echo beyond what its channel buffers hold, ~3 MB, can stall
    // both sessions of the relay: a known limit, see docs/features.md.)
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 95 + 32) as u8).collect();
    let (status, out, err) = proxy.run(":", "diego:lc-port/0", &[], &["cat"], &big);
    assert_eq!(status, 0, "{err}");
    assert_eq!(out.len(), big.len(), "all of it came back");
    assert!(out.as_bytes() == &big[..], "as it went");
    let (_, out, _) = proxy.run(":", "diego:lc-uri/0", &[], &["cat /proc/$PPID/comm"], b"");
    assert_ne!(out.trim(), "diego-sshd", "the exec path: {out}");
    // scp both ways through each: the relayed one reaches the daemon's sftp
    // subsystem, the exec path runs the downloaded diego-sshd's SFTP server (busybox
    // has no sftp-server).
    for app in ["lc-port", "lc-uri"] {
        let back = keys.path().join(format!("back-{app}.txt"));
        let user = format!("diego:{app}/0");
        let up_to = [local.to_str().unwrap(), "127.0.0.1:/tmp/up.txt"];
        let (status, err) = proxy.scp(":", &user, &up_to);
        assert_eq!(status, 0, "{app}: {err}");
        let down_from = ["127.0.0.1:/tmp/up.txt", back.to_str().unwrap()];
        let (status, err) = proxy.scp(":", &user, &down_from);
        assert_eq!(status, 0, "{app}: {err}");
        assert_eq!(std::fs::read_to_string(&back).unwrap(), data, "{app}");
    }
    // -L through the relay: the daemon connects inside the instance.
    let local_port = lattice_tests::free_port();
    let mut fwd = proxy
        .command(
            ":",
            "diego:lc-port/0",
            &["-N", "-L", &format!("{local_port}:localhost:8080")],
            &[],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let page = wait_for(
        "the relayed forward to answer",
        Duration::from_secs(30),
        || page_through(local_port, "hello-lc-port"),
    );
    assert!(page.contains("hello-lc-port"), "{page}");
    fwd.kill().unwrap();
    fwd.wait().unwrap();

    // A key other than the authorized one is refused.
    keypair(keys.path(), "other");
    let (code, _, err) = ssh(&keys.path().join("other"), ssh_port, "true");
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

/// `scp` to 127.0.0.1:`port` with `key`: (status, stderr).
fn scp_direct(key: &Path, port: u16, args: &[&str]) -> (i32, String) {
    let out = openssh("scp", key, port)
        .args(args)
        .output()
        .expect("running scp (Debian's openssh-client: scripts/setup.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
