//! `ltc ssh` end to end: `lattice up`, a busybox app, and `ltc` as a user runs it. An
//! interactive shell driven through a pseudo-terminal (ltc's controlling terminal):
//! the prompt, a command, the initial size and a resize seen by `stty size`, Ctrl-C
//! reaching the container, `exit 3` becoming ltc's status and the terminal restored.
//! Commands with their output, stderr and status; stdin piped into `sh -s`; `-L` to a
//! server on the instance's own loopback (unreachable from the host) and to a port
//! nothing listens on; `--task` into a running Task; a viewer, an unknown app, an
//! index out of range and an app scaled to zero refused with the problem named.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_tests::{free_port, ltc_bin, signal, wait_for, UpProcess};

/// A busybox app `web` whose page (`page-INDEX`) is served on 8080 and also on the
/// instance's own 127.0.0.1:8081 only.
fn cluster_with_web() -> UpProcess {
    let up = UpProcess::start();
    up.target();
    let root = format!("/tmp/ssh-www-{}", std::process::id());
    let cmd = format!(
        "mkdir -p {root} && echo page-$INSTANCE_INDEX > {root}/index.html && httpd -p 127.0.0.1:8081 -h {root} && exec httpd -f -p 8080 -h {root}"
    );
    let out = up.ltc_ok(&["create", "web", "preloaded:busybox", "--", "sh", "-c", &cmd]);
    assert!(out.contains("App web is running"), "{out}");
    up
}

/// `ltc ARGS` against `up` with `stdin` and extra environment: (status, stdout, stderr).
fn ltc(up: &UpProcess, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(ltc_bin())
        .args(args)
        .env("LTC_HOME", up.data_dir.path().join("ltc"))
        .env_remove("LTC_TARGET")
        .env_remove("LTC_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ltc");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A pseudo-terminal: the test holds the master, ltc gets the slave as its
/// controlling terminal; what ltc writes is collected by a reader thread.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
    /// How much of `output` [`Pty::expect`] has consumed.
    seen: usize,
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    fn open(cols: u16, rows: u16) -> Pty {
        let (mut m, mut s) = (-1, -1);
        let ws = winsize(cols, rows);
        // SAFETY: openpty writes two fds to our ints; the name and termios are null.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened for us and are owned by nothing else.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let output = Arc::new(Mutex::new(vec![]));
        let (mut reader, out) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once no process holds the slave any more.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            output,
            seen: 0,
        }
    }

    /// `ltc ARGS` with this terminal as its controlling terminal and stdin/out/err.
    fn spawn(&self, up: &UpProcess, args: &[&str]) -> Child {
        let fd = || Stdio::from(self.slave.try_clone().unwrap());
        let mut cmd = Command::new(ltc_bin());
        cmd.args(args)
            .env("LTC_HOME", up.data_dir.path().join("ltc"))
            .env("TERM", "xterm")
            .env_remove("LTC_TARGET")
            .stdin(fd())
            .stdout(fd())
            .stderr(fd());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().expect("running ltc on the pty")
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits for `needle` in what ltc wrote after the last match; panics with the
    /// whole screen after `within`.
    fn expect(&mut self, needle: &str, within: Duration) {
        let t0 = Instant::now();
        loop {
            {
                let out = self.output.lock().unwrap();
                let text = String::from_utf8_lossy(&out[self.seen..]);
                if let Some(at) = text.find(needle) {
                    self.seen += text[..at + needle.len()].len();
                    return;
                }
                assert!(
                    t0.elapsed() < within,
                    "{needle:?} not shown within {within:?}; the terminal shows:\n{}",
                    String::from_utf8_lossy(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at ours.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// The terminal's local flags (ICANON, ECHO, …) as ltc left them.
    fn lflags(&self) -> libc::tcflag_t {
        // SAFETY: tcgetattr fills the termios we pass; zeroed is a valid start.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) },
            0
        );
        t.c_lflag
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let status = wait_for("ltc to exit", within, || child.try_wait().unwrap());
    status.code().unwrap_or(-1)
}

#[test]
fn an_interactive_shell_on_a_terminal() {
    let up = cluster_with_web();
    let mut pty = Pty::open(100, 30);
    let before = pty.lflags();
    let mut child = pty.spawn(&up, &["ssh", "web"]);
    let t = Duration::from_secs(30);
    // busybox sh's prompt (root's `#`).
    pty.expect("# ", t);
    pty.send("echo answer=$((40+2))\r");
    pty.expect("answer=42", t);
    // The initial size, then a resize.
    pty.send("stty size\r");
    pty.expect("30 100", t);
    pty.resize(132, 50);
    // The resize travels ahead of the next command (SIGWINCH is immediate).
    std::thread::sleep(Duration::from_millis(500));
    pty.send("stty size\r");
    pty.expect("50 132", t);
    // Ctrl-C interrupts the remote command, not ltc.
    pty.send("sleep 100\r");
    std::thread::sleep(Duration::from_secs(1));
    pty.send("\x03");
    pty.send("echo status=$?\r");
    pty.expect("status=130", t);
    assert!(child.try_wait().unwrap().is_none(), "ltc ended on Ctrl-C");
    pty.send("exit 3\r");
    assert_eq!(wait_exit(&mut child, t), 3);
    // ltc put the terminal back as it found it.
    assert_eq!(pty.lflags(), before);
    assert_ne!(before & libc::ICANON, 0);
}

/// `ltc ssh ARGS` in the background with its stderr collected, stopped by
/// [`stop`](Background::stop).
struct Background(Child);

impl Background {
    fn start(up: &UpProcess, args: &[&str]) -> Background {
        Background(
            Command::new(ltc_bin())
                .args(args)
                .env("LTC_HOME", up.data_dir.path().join("ltc"))
                .env_remove("LTC_TARGET")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Ctrl-C: (status, stderr).
    fn stop(mut self) -> (i32, String) {
        signal(self.0.id(), libc::SIGINT);
        let status = wait_exit(&mut self.0, Duration::from_secs(10));
        let mut err = String::new();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /` on 127.0.0.1:PORT: the whole answer, or None when refused or closed early.
fn get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp)
}

fn submit_running_task(up: &UpProcess, guid: &str) {
    let file = up.data_dir.path().join(format!("{guid}.json"));
    let task = serde_json::json!({
        "task_guid": guid, "rootfs": "preloaded:busybox", "memory_mb": 32,
        "action": {"run": {"path": "sh", "args": ["-c", "exec sleep 3001"]}},
    });
    std::fs::write(&file, task.to_string()).unwrap();
    up.ltc_ok(&["submit-task", file.to_str().unwrap()]);
    wait_for("the task to run", Duration::from_secs(60), || {
        let out = up.ltc_ok(&["task", guid, "--json"]);
        let t: serde_json::Value = serde_json::from_str(&out).unwrap();
        (t["state"] == "RUNNING").then_some(())
    });
}

#[test]
fn commands_stdin_forwards_and_tasks() {
    let up = cluster_with_web();
    // A command: its stdout, stderr and status, no terminal.
    let (status, out, err) = ltc(
        &up,
        &[
            "ssh",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; [ -t 0 ] || echo no-tty; exit 7",
        ],
        b"",
        &[],
    );
    assert_eq!((status, out.as_str()), (7, "out\nno-tty\n"), "{err}");
    assert!(err.contains("err"), "{err}");
    // stdin passed through: `ltc ssh web -- sh -s < script`.
    let (status, out, err) = ltc(
        &up,
        &["ssh", "web", "--", "sh", "-s"],
        b"echo $((6*7))\nexit 5\n",
        &[],
    );
    assert_eq!((status, out.as_str()), (5, "42\n"), "{err}");
    // The end of stdin reaches the process (cat ends).
    let (status, out, err) = ltc(&up, &["ssh", "web", "--", "cat"], b"hello\n", &[]);
    assert_eq!((status, out.as_str()), (0, "hello\n"), "{err}");

    // -L: the instance's own loopback (unreachable from the host), and a port nothing
    // listens on: that connection is closed and the problem printed.
    let (port, dead) = (free_port(), free_port());
    let fwd = Background::start(
        &up,
        &[
            "ssh",
            "web",
            "-N",
            "-L",
            &format!("{port}:8081"),
            "-L",
            &format!("127.0.0.1:{dead}:localhost:9"),
        ],
    );
    let page = wait_for("the forwarded page", Duration::from_secs(30), || get(port));
    assert!(
        page.starts_with("HTTP/1.") && page.ends_with("page-0\n"),
        "{page}"
    );
    // Closed without an answer (or reset, the request unread).
    assert_eq!(get(dead).unwrap_or_default(), "");
    let (status, err) = fwd.stop();
    assert_eq!(status, 0, "{err}");
    assert!(
        err.contains(&format!(
            "forwarding 127.0.0.1:{port} to 127.0.0.1:8081 in web/0"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "-L 127.0.0.1:{dead}:localhost:9: nothing listens on"
        )),
        "{err}"
    );

    // --task: inside the running Task's container (its own processes).
    let guid = format!("ssh-task-{}", std::process::id());
    submit_running_task(&up, &guid);
    // RUNNING in the BBS comes as the cell starts it, a moment before its container
    // runs: the rep waits for the container.
    let (status, out, err) = ltc(&up, &["ssh", "--task", &guid, "--", "ps"], b"", &[]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("sleep 3001"), "{out}");
    let (_, web_ps, _) = ltc(&up, &["ssh", "web", "--", "ps"], b"", &[]);
    assert!(
        !web_ps.contains("sleep 3001") && web_ps.contains("httpd"),
        "{web_ps}"
    );
    up.ltc_ok(&["cancel-task", &guid]);
}

#[test]
fn refusals_name_the_problem() {
    let up = cluster_with_web();
    let refused = |args: &[&str], env: &[(&str, &str)], says: &[&str]| {
        let (status, out, err) = ltc(&up, args, b"", env);
        assert_eq!(status, 255, "{args:?}: {out}{err}");
        for s in says {
            assert!(err.contains(s), "{args:?}: {s:?} not in {err}");
        }
    };
    // A viewer may look, not get in.
    let made = up.ltc_ok(&["token", "create", "watcher", "--role", "viewer"]);
    let token = made
        .split_whitespace()
        .find(|w| w.starts_with("lat_"))
        .unwrap_or_else(|| panic!("no token in {made}"));
    refused(
        &["ssh", "web", "--", "true"],
        &[("LTC_TOKEN", token)],
        &["a viewer token may not open a session", "(Forbidden)"],
    );
    refused(
        &["ssh", "nope", "--", "true"],
        &[],
        &["(DesiredLRPNotFound)", "ltc list"],
    );
    refused(
        &["ssh", "web", "-i", "3", "--", "true"],
        &[],
        &[
            "no instance 3",
            "web has 1 instance (index 0)",
            "ltc status web",
        ],
    );
    refused(
        &["ssh", "--task", "nope", "--", "true"],
        &[],
        &["(TaskNotFound)"],
    );
    up.ltc_ok(&["scale", "web", "0"]);
    refused(&["ssh", "web", "--", "true"], &[], &["web has 0 instances"]);
}
