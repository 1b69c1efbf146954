//! Debian's OpenSSH clients (`ssh`, `scp`) against `lattice up`'s ssh proxy, the
//! password (the API's credential) from an askpass script, the proxy's kept host key
//! the only one trusted.

use std::io::Write;
use std::process::{Command, Stdio};

use russh::keys::{PrivateKey, PublicKey};

use crate::UpProcess;

/// The proxy's host key as `lattice up` keeps it.
pub fn proxy_host_key(up: &UpProcess) -> PublicKey {
    let pem = std::fs::read_to_string(up.data_dir.path().join("lattice/ssh_host_key")).unwrap();
    PrivateKey::from_openssh(pem.as_bytes())
        .unwrap()
        .public_key()
        .clone()
}

pub struct OpenSsh {
    pub dir: tempfile::TempDir,
    pub port: String,
}

impl OpenSsh {
    pub fn new(up: &UpProcess) -> OpenSsh {
        let dir = tempfile::tempdir().unwrap();
        let askpass = dir.path().join("askpass");
        std::fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$LATTICE_TEST_PASSWORD\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = up.ssh.rsplit(':').next().unwrap().to_string();
        // The kept host key is the only one trusted.
        let known = format!(
            "[127.0.0.1]:{port} {}\n",
            proxy_host_key(up).to_openssh().unwrap()
        );
        std::fs::write(dir.path().join("known_hosts"), known).unwrap();
        OpenSsh { dir, port }
    }

    /// `program` (ssh or scp) with the options every run shares and `password`.
    fn client(&self, program: &str, password: &str) -> Command {
        let mut c = Command::new(program);
        c.args(["-F", "/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ))
            .args(["-o", "PreferredAuthentications=password"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .args(["-o", "LogLevel=ERROR"])
            .env("SSH_ASKPASS", self.dir.path().join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("LATTICE_TEST_PASSWORD", password)
            .env_remove("DISPLAY");
        c
    }

    /// `ssh OPTS USER@127.0.0.1 REMOTE…`.
    pub fn command(&self, password: &str, user: &str, opts: &[&str], remote: &[&str]) -> Command {
        let mut c = self.client("ssh", password);
        c.args(["-p", &self.port])
            .args(opts)
            .arg(format!("{user}@127.0.0.1"))
            .args(remote);
        c
    }

    /// Runs ssh with `stdin` (written from a thread of its own while the output is
    /// read: a large input and output do not wait on each other): (status, stdout,
    /// stderr).
    pub fn run(
        &self,
        password: &str,
        user: &str,
        opts: &[&str],
        remote: &[&str],
        stdin: &[u8],
    ) -> (i32, String, String) {
        let mut child = self
            .command(password, user, opts, remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running ssh (openssh-client: scripts/setup.sh installs it)");
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// `scp -P PORT -o User=USER ARGS…`, remote paths as `127.0.0.1:PATH` (scp would
    /// take `diego:APP/0@HOST:PATH` for host `diego`): (status, stderr).
    pub fn scp(&self, password: &str, user: &str, args: &[&str]) -> (i32, String) {
        let out = self
            .client("scp", password)
            .args(["-P", &self.port])
            .arg("-o")
            .arg(format!("User={user}"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running scp (openssh-client: scripts/setup.sh installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
}

/// `GET /` over HTTP/1.0 from 127.0.0.1:`port` (a `-L` forward's local end): the
/// whole answer, when it contains `needle`.
pub fn page_through(port: u16, needle: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    page.contains(needle).then_some(page)
}
