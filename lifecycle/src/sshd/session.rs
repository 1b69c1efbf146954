//! One `session` channel: its requests gathered (env, pty-req) until `exec` or
//! `shell` starts the process, then the client's data to its stdin, `window-change`
//! to its terminal, `signal` to its process group, its output back (stderr as
//! extended data without a pty), and its end as `exit-status` or `exit-signal`, then
//! EOF and close. A channel that goes away first (the client left) takes the
//! process group with it.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;

use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::command::{self, Exit};
use super::pty::{self, Size};

/// What every session starts from.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// The daemon's own environment (HOME, USER, and all of it when inherited).
    pub daemon_env: Vec<(String, String)>,
    pub inherit_daemon_env: bool,
}

impl SessionConfig {
    pub fn from_process(inherit_daemon_env: bool) -> SessionConfig {
        SessionConfig {
            daemon_env: std::env::vars().collect(),
            inherit_daemon_env,
        }
    }
}

/// A terminal asked for.
#[derive(Debug, Clone)]
struct PtyRequest {
    term: String,
    size: Size,
}

/// How many chunks of the client's input wait for the process's stdin.
const STDIN_QUEUE: usize = 16;

/// A started process.
struct Running {
    /// Its process group (it leads it).
    pgid: i32,
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    /// The pty's master, for window changes.
    master: Option<Arc<OwnedFd>>,
    /// Becomes true once it ended.
    done: watch::Receiver<bool>,
}

impl Running {
    fn signal(&self, sig: i32) {
        if !*self.done.borrow() {
            // SAFETY: kill on our own child's process group.
            unsafe { libc::kill(-self.pgid, sig) };
        }
    }
}

/// Serves the channel until it closes.
pub async fn run(channel: Channel<Msg>, handle: Handle, cfg: Arc<SessionConfig>) {
    let (mut read, write) = channel.split();
    let write = Arc::new(write);
    let mut env: Vec<(String, String)> = Vec::new();
    let mut pty: Option<PtyRequest> = None;
    let mut running: Option<Running> = None;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                ..
            } => {
                pty = Some(PtyRequest {
                    term,
                    size: Size {
                        cols: col_width,
                        rows: row_height,
                        pix_width,
                        pix_height,
                    },
                })
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => env.push((variable_name, variable_value)),
            ChannelMsg::Exec { command, .. } if running.is_none() => {
                let command = String::from_utf8_lossy(&command).into_owned();
                running = start(&cfg, &env, pty.as_ref(), Some(&command), &write, &handle).await;
            }
            ChannelMsg::RequestShell { .. } if running.is_none() => {
                running = start(&cfg, &env, pty.as_ref(), None, &write, &handle).await;
            }
            ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" && running.is_none() => {
                running = start_sftp(&cfg, &env, &write, &handle).await;
            }
            ChannelMsg::Data { data } => {
                if let Some(r) = &running {
                    if let Some(tx) = &r.stdin {
                        let mut done = r.done.clone();
                        // The process may never read: its end (or the channel's)
                        // must not wait behind a full pipe.
                        tokio::select! {
                            _ = tx.send(data.to_vec()) => {}
                            _ = done.wait_for(|d| *d) => {}
                        }
                    }
                }
            }
            ChannelMsg::Eof => {
                if let Some(r) = &mut running {
                    r.stdin = None;
                }
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                let size = Size {
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                };
                match (&running, &mut pty) {
                    (
                        Some(Running {
                            master: Some(m), ..
                        }),
                        _,
                    ) => {
                        let _ = pty::resize(m.as_ref(), size);
                    }
                    (None, Some(p)) => p.size = size,
                    _ => {}
                }
            }
            ChannelMsg::Signal { signal } => {
                if let (Some(r), Some(sig)) = (&running, command::signal_number(&sig_name(&signal)))
                {
                    r.signal(sig);
                }
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    // The channel is gone: whatever still runs goes with it.
    if let Some(r) = running {
        r.signal(libc::SIGKILL);
    }
}

/// Starts the process; failures are reported on the channel (as OpenSSH: a message
/// on stderr, exit status 127 or 1) and the channel closed.
async fn start(
    cfg: &SessionConfig,
    env: &[(String, String)],
    pty: Option<&PtyRequest>,
    command: Option<&str>,
    write: &Arc<ChannelWriteHalf<Msg>>,
    handle: &Handle,
) -> Option<Running> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(command::DEFAULT_PATH);
    let exists = |p: &str| std::path::Path::new(p).is_file();
    let Some(shell) = command::shell(&exists, path) else {
        fail(write, "no shell found in the container (tried /bin/bash, /usr/local/bin/bash, /bin/sh, bash and sh on PATH)\n", 127).await;
        return None;
    };
    let argv = command::argv(&shell, command);
    let child_env = command::environment(
        &cfg.daemon_env,
        cfg.inherit_daemon_env,
        env,
        pty.map(|p| p.term.as_str()),
    );
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().envs(child_env);
    let spawned = match pty {
        Some(p) => spawn_pty(cmd, p.size),
        None => spawn_pipes(cmd),
    };
    match spawned {
        Ok(s) => Some(supervise(s, write.clone(), handle.clone())),
        Err(e) => {
            fail(write, &format!("cannot run {}: {e}\n", argv[0]), 127).await;
            None
        }
    }
}

/// The `sftp` subsystem: this binary again, as the SFTP server ([`super::sftp`]) on
/// pipes, in the session's home (HOME when it is a directory, else the daemon's own
/// working directory), with the session's environment.
async fn start_sftp(
    cfg: &SessionConfig,
    env: &[(String, String)],
    write: &Arc<ChannelWriteHalf<Msg>>,
    handle: &Handle,
) -> Option<Running> {
    let child_env = command::environment(&cfg.daemon_env, cfg.inherit_daemon_env, env, None);
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg(super::sftp::SFTP_MODE)
        .env_clear()
        .envs(child_env.iter().map(|(k, v)| (k, v)));
    if let Some((_, home)) = child_env.iter().find(|(k, _)| k == "HOME") {
        if std::path::Path::new(home).is_dir() {
            cmd.current_dir(home);
        }
    }
    match spawn_pipes(cmd) {
        Ok(s) => Some(supervise(s, write.clone(), handle.clone())),
        Err(e) => {
            fail(write, &format!("cannot start the sftp server: {e}\n"), 1).await;
            None
        }
    }
}

async fn fail(write: &ChannelWriteHalf<Msg>, message: &str, status: u32) {
    let _ = write
        .extended_data_bytes(1, message.as_bytes().to_vec())
        .await;
    let _ = write.exit_status(status).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// A spawned process and its ends.
struct Spawned {
    child: tokio::process::Child,
    stdin: Box<dyn AsyncWrite + Send + Unpin>,
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    master: Option<Arc<OwnedFd>>,
}

fn spawn_pipes(mut cmd: tokio::process::Command) -> std::io::Result<Spawned> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    Ok(Spawned {
        stdin: Box::new(child.stdin.take().expect("piped")),
        stdout: Box::new(child.stdout.take().expect("piped")),
        stderr: Some(Box::new(child.stderr.take().expect("piped"))),
        master: None,
        child,
    })
}

fn spawn_pty(mut cmd: tokio::process::Command, size: Size) -> std::io::Result<Spawned> {
    let (master, slave) = pty::open(size)?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec: a new session
    // with the pty (its stdin) as the controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(cmd); // the slave's copies go: the master reads EIO once the process is gone
    let reader = std::fs::File::from(master.try_clone()?);
    let writer = std::fs::File::from(master.try_clone()?);
    Ok(Spawned {
        child,
        stdin: Box::new(tokio::fs::File::from_std(writer)),
        stdout: Box::new(tokio::fs::File::from_std(reader)),
        stderr: None,
        master: Some(Arc::new(master)),
    })
}

/// Copies `from` to the channel; a pty's EIO (the process and its terminal gone) is
/// its end.
async fn pump(mut from: Box<dyn AsyncRead + Send + Unpin>, mut to: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.flush().await;
}

/// Runs the process's stdin writer, output pumps and end report.
fn supervise(s: Spawned, write: Arc<ChannelWriteHalf<Msg>>, handle: Handle) -> Running {
    let Spawned {
        mut child,
        mut stdin,
        stdout,
        stderr,
        master,
    } = s;
    let pgid = child.id().map(|p| p as i32).unwrap_or(-1);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STDIN_QUEUE);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
            let _ = stdin.flush().await;
        }
        // Dropped: the process reads EOF (a pty's master stays open for output).
    });
    let is_pty = master.is_some();
    let out = tokio::spawn(pump(stdout, write.make_writer()));
    let err = stderr.map(|e| tokio::spawn(pump(e, write.make_writer_ext(Some(1)))));
    let (done_tx, done) = watch::channel(false);
    let id = write.id();
    tokio::spawn(async move {
        let status = child.wait().await;
        // From here a dropped client no longer kills anything (what the process
        // left in the background stays, as with OpenSSH).
        let _ = done_tx.send(true);
        if is_pty {
            // The terminal's output drains once nothing holds its slave; a
            // background job that keeps it does not hold the session open.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), out).await;
        } else {
            let _ = out.await;
        }
        if let Some(e) = err {
            let _ = e.await;
        }
        let exit = match status {
            Ok(s) => command::exit_of(s),
            Err(_) => Exit::Status(255),
        };
        match exit {
            Exit::Status(code) => {
                let _ = write.exit_status(code).await;
            }
            Exit::Signal { name, core_dumped } => {
                let sig = to_sig(&name);
                let _ = handle
                    .exit_signal_request(id, sig, core_dumped, String::new(), String::new())
                    .await;
            }
        }
        let _ = write.eof().await;
        let _ = write.close().await;
    });
    Running {
        pgid,
        stdin: Some(tx),
        master,
        done,
    }
}

/// A signal's SSH name.
fn sig_name(s: &russh::Sig) -> String {
    use russh::Sig::*;
    match s {
        ABRT => "ABRT",
        ALRM => "ALRM",
        FPE => "FPE",
        HUP => "HUP",
        ILL => "ILL",
        INT => "INT",
        KILL => "KILL",
        PIPE => "PIPE",
        QUIT => "QUIT",
        SEGV => "SEGV",
        TERM => "TERM",
        USR1 => "USR1",
        Custom(c) => c,
    }
    .to_string()
}

/// The russh signal of an SSH name.
fn to_sig(name: &str) -> russh::Sig {
    use russh::Sig::*;
    match name {
        "ABRT" => ABRT,
        "ALRM" => ALRM,
        "FPE" => FPE,
        "HUP" => HUP,
        "ILL" => ILL,
        "INT" => INT,
        "KILL" => KILL,
        "PIPE" => PIPE,
        "QUIT" => QUIT,
        "SEGV" => SEGV,
        "TERM" => TERM,
        "USR1" => USR1,
        other => Custom(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signal_names_both_ways() {
        for name in ["TERM", "KILL", "USR1", "USR2"] {
            assert_eq!(super::sig_name(&super::to_sig(name)), name);
        }
    }
}
