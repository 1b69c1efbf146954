//! Exec sessions (`SHIM DIR --session`): the helper the rep starts for each
//! `ltc ssh` session. It reads an [`ExecRequest`] and then frames on stdin, writes
//! frames on stdout (see [`super::wire`]), execs the process into the running
//! container as libcontainer's tenant (the container's namespaces, cgroup, user,
//! limits and seccomp), relays its terminal or its three pipes, and ends with a
//! [`Control::Exit`]. Stdin closing (the rep dropped the session) kills the
//! process. The process is the helper's child: the helper starts it before it makes
//! its runtime, from a process with one thread (see [`super`]).

use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{Control, ExecRequest, Frame};
use lattice_specs::models::{self, action::Action as A};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::context::Ctx;
use super::fds::{pipe_pair, pipe_receiver};
use super::process::{process_spec, run_nofile, wait_exit, Confined, ProcessParams};
use super::pty::{ConsoleSocket, Pty};
use super::wire::{read_message, read_message_sync, write_message};
use super::ShimConfig;

/// Why a session could not start (sent as a [`Control::Error`]).
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the container is not running: {0}")]
    NotRunning(String),
    #[error("{0}")]
    Start(String),
}

impl SessionError {
    fn name(&self) -> ErrorName {
        match self {
            SessionError::BadRequest(_) => ErrorName::InvalidRequest,
            SessionError::NotRunning(_) => ErrorName::InstanceNotRunning,
            SessionError::Start(_) => ErrorName::Unknown,
        }
    }
}

/// How long output may keep arriving once the process exited.
const OUTPUT_DRAIN: Duration = Duration::from_millis(250);
/// How long the container's init may take to go after the process was killed with it.
const INSTANCE_GONE: Duration = Duration::from_secs(2);

/// The helper's entry point: never returns.
pub(super) fn main(dir: &Path) -> ! {
    // SAFETY: SIG_IGN installs no handler; one thread here, nothing races it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // Unbuffered: nothing past the request is read here.
    // SAFETY: fd 0 is open for the process's life; ManuallyDrop never closes it.
    let mut stdin = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let started = read_request(&mut stdin).and_then(|req| start(dir, req));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let code = rt.block_on(async move {
        let Ok(mut out) = stdout_sender() else {
            // Nobody to relay to: the process goes at once.
            if let Ok(running) = &started {
                hang_up(running.pid);
                wait_exit(running.pid).await;
            }
            return 1;
        };
        let last = match started {
            Ok(running) => relay(running, &mut out).await,
            Err(e) => {
                eprintln!("exec session: {e}");
                Control::Error {
                    name: e.name().to_string(),
                    message: e.to_string(),
                }
            }
        };
        let _ = write_message(&mut out, &Frame::Control(last).encode()).await;
        0
    });
    std::process::exit(code)
}

fn read_request(stdin: &mut std::fs::File) -> Result<ExecRequest, SessionError> {
    let msg = read_message_sync(stdin)
        .map_err(|e| SessionError::BadRequest(format!("reading the exec request: {e}")))?
        .ok_or_else(|| SessionError::BadRequest("no exec request came".into()))?;
    serde_json::from_slice(&msg)
        .map_err(|e| SessionError::BadRequest(format!("invalid exec request: {e}")))
}

fn stdout_sender() -> std::io::Result<tokio::net::unix::pipe::Sender> {
    let fd = nix::unistd::dup(1)?;
    // SAFETY: `dup` just returned `fd`; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    tokio::net::unix::pipe::Sender::from_owned_fd(fd)
}

/// A started process and its ends.
struct Running {
    pid: Pid,
    io: Io,
    cfg: ShimConfig,
}

enum Io {
    Pipes {
        stdin: OwnedFd,
        out: OwnedFd,
        err: OwnedFd,
    },
    Tty {
        master: OwnedFd,
        /// Removed once the session ends.
        _socket: ConsoleSocket,
    },
}

/// The first Run action of a container's work: whose user, environment, directory
/// and limits a session takes.
fn first_run(a: &models::Action) -> Option<&models::RunAction> {
    match a.action.as_ref()? {
        A::Run(r) => Some(r),
        A::Serial(s) => s.actions.iter().find_map(first_run),
        A::Parallel(p) => p.actions.iter().find_map(first_run),
        A::Codependent(c) => c.actions.iter().find_map(first_run),
        A::Try(t) => first_run(t.action.as_deref()?),
        A::Timeout(t) => first_run(t.action.as_deref()?),
        A::EmitProgress(e) => first_run(e.action.as_deref()?),
        _ => None,
    }
}

/// What to run: the request's command, or the image's shell.
fn command(cfg: &ShimConfig, req: &ExecRequest) -> Vec<String> {
    if !req.command.is_empty() {
        return req.command.clone();
    }
    let bash = crate::inroot::Rooted::new(&cfg.rootfs, "/bin/bash")
        .blocking(|p| p.exists())
        .unwrap_or(false);
    vec![if bash { "/bin/bash" } else { "/bin/sh" }.to_string()]
}

/// The process spec of a session: the container's Run's user (or the request's),
/// environment, directory and limits, then the request's environment.
fn session_spec(ctx: &Ctx, req: &ExecRequest) -> Result<oci_spec::runtime::Process, SessionError> {
    let run = first_run(&ctx.cfg.action);
    let user = if req.user.is_empty() {
        run.map_or("", |r| r.user.as_str())
    } else {
        req.user.as_str()
    };
    let mut env: Vec<(String, String)> = run
        .map(|r| {
            r.env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    env.extend(req.env.iter().map(|e| (e.name.clone(), e.value.clone())));
    process_spec(
        ctx,
        ProcessParams {
            user,
            args: command(&ctx.cfg, req),
            env,
            dir: run.map_or("", |r| r.dir.as_str()),
            nofile: run.map_or(crate::bundle::DEFAULT_NOFILE, run_nofile),
            terminal: req.tty,
        },
    )
    .map_err(SessionError::BadRequest)
}

/// Execs the session's process into the container (this process has one thread).
fn start(dir: &Path, req: ExecRequest) -> Result<Running, SessionError> {
    let cfg: ShimConfig = std::fs::read(dir.join("shim.json"))
        .map_err(|e| SessionError::NotRunning(e.to_string()))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| SessionError::Start(e.to_string())))?;
    if !init_alive(&cfg) {
        return Err(SessionError::NotRunning(cfg.id.clone()));
    }
    let ctx = Ctx::new(cfg.clone(), None, false);
    let process = session_spec(&ctx, &req)?;
    let process_file = dir.join(format!("process-{}.json", uuid::Uuid::new_v4().simple()));
    let setup = |e: &dyn std::fmt::Display| SessionError::Start(e.to_string());
    std::fs::write(
        &process_file,
        serde_json::to_vec(&process).map_err(|e| setup(&e))?,
    )
    .map_err(|e| setup(&e))?;
    let builder = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_executor(Confined {
            seccomp: ctx.seccomp.clone(),
        })
        .with_root_path(&cfg.state_root)
        .map_err(|e| setup(&e));
    let built = builder.and_then(|b| {
        if req.tty {
            let socket = ConsoleSocket::bind(
                dir.join(format!(
                    "tty-{}.sock",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )),
                cfg.state_root.join(&cfg.id),
            )
            .map_err(|e| setup(&e))?;
            let pid = b
                .with_console_socket(Some(&socket.path))
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
                .build()
                .map_err(|e| setup(&e))?;
            let master = socket.receive_master().map_err(|e| setup(&e));
            let master = kill_on_error(pid, master)?;
            super::pty::resize(master.as_raw_fd(), req.cols, req.rows).map_err(|e| setup(&e))?;
            Ok((
                pid,
                Io::Tty {
                    master,
                    _socket: socket,
                },
            ))
        } else {
            let (in_r, in_w) = pipe_pair().map_err(|e| setup(&e))?;
            let (out_r, out_w) = pipe_pair().map_err(|e| setup(&e))?;
            let (err_r, err_w) = pipe_pair().map_err(|e| setup(&e))?;
            let pid = b
                .with_stdin(in_r)
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
                .build()
                .map_err(|e| setup(&e))?;
            Ok((
                pid,
                Io::Pipes {
                    stdin: in_w,
                    out: out_r,
                    err: err_r,
                },
            ))
        }
    });
    let _ = std::fs::remove_file(&process_file);
    let (pid, io) = built.map_err(|e| match e {
        SessionError::Start(m) => SessionError::Start(start_error(&process, &m)),
        e => e,
    })?;
    Ok(Running { pid, io, cfg })
}

/// libcontainer's error for a command that could not start, readable.
fn start_error(process: &oci_spec::runtime::Process, err: &str) -> String {
    let path = process
        .args()
        .as_ref()
        .and_then(|a| a.first().cloned())
        .unwrap_or_default();
    super::process::exec_error(&path, err).to_string()
}

fn kill_on_error<T>(pid: Pid, r: Result<T, SessionError>) -> Result<T, SessionError> {
    if r.is_err() {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    r
}

/// The container's init (from libcontainer's state), when it still runs.
fn init_pid(cfg: &ShimConfig) -> Option<Pid> {
    let c = libcontainer::container::Container::load(cfg.state_root.join(&cfg.id)).ok()?;
    let pid = c.pid()?;
    match super::proc_stat(pid.as_raw()) {
        Some((_, false)) => Some(pid),
        _ => None,
    }
}

fn init_alive(cfg: &ShimConfig) -> bool {
    init_pid(cfg).is_some()
}

/// Whether the container goes within [`INSTANCE_GONE`] (its init exits).
async fn instance_goes(cfg: &ShimConfig) -> bool {
    let Some(pid) = init_pid(cfg) else {
        return true;
    };
    let Some(exit) = super::exit_watch(pid) else {
        return true;
    };
    tokio::time::timeout(INSTANCE_GONE, exit.readable())
        .await
        .is_ok()
}

/// A signal a client may send, by its name.
pub(super) fn signal_named(name: &str) -> Option<Signal> {
    Some(match name.trim_start_matches("SIG") {
        "INT" => Signal::SIGINT,
        "TERM" => Signal::SIGTERM,
        "KILL" => Signal::SIGKILL,
        "HUP" => Signal::SIGHUP,
        "QUIT" => Signal::SIGQUIT,
        _ => return None,
    })
}

/// Bytes for the process's stdin, in order, from the stdin reader to the writer.
enum Input {
    Data(Vec<u8>),
    Eof,
}

/// Reads the rep's frames: stdin bytes to `data`, control messages to `control`.
/// Both close when the rep closes the pipe.
async fn read_frames(data: mpsc::Sender<Input>, control: mpsc::Sender<Control>) {
    let Ok(fd) = nix::unistd::dup(0) else { return };
    // SAFETY: `dup` just returned `fd`; nothing else owns it.
    let Ok(mut input) = pipe_receiver(unsafe { OwnedFd::from_raw_fd(fd) }) else {
        return;
    };
    while let Ok(Some(msg)) = read_message(&mut input).await {
        let sent = match Frame::decode(&msg) {
            Ok(Frame::Stdin(b)) => data.send(Input::Data(b)).await.is_ok(),
            Ok(Frame::Control(Control::Eof)) => data.send(Input::Eof).await.is_ok(),
            Ok(Frame::Control(c)) => control.send(c).await.is_ok(),
            Ok(_) => true,
            Err(e) => {
                eprintln!("exec session: {e}");
                true
            }
        };
        if !sent {
            return;
        }
    }
}

/// Where stdin bytes go.
enum Sink {
    Pipe(tokio::net::unix::pipe::Sender),
    Pty(Arc<Pty>),
}

/// Writes stdin bytes to the process (on a terminal, EOF is its ^D); stops at a
/// write error (the process is gone) or, on a pipe, at EOF.
async fn write_input(mut sink: Sink, mut data: mpsc::Receiver<Input>) {
    use tokio::io::AsyncWriteExt;
    while let Some(input) = data.recv().await {
        let written = match (&mut sink, input) {
            (Sink::Pipe(p), Input::Data(b)) => p.write_all(&b).await,
            (Sink::Pipe(_), Input::Eof) => return,
            (Sink::Pty(t), Input::Data(b)) => t.write_all(&b).await,
            (Sink::Pty(t), Input::Eof) => t.write_all(&[4]).await,
        };
        if written.is_err() {
            return;
        }
    }
}

/// The process's output: two pipes, or one terminal.
enum Output {
    Pipes(
        tokio::net::unix::pipe::Receiver,
        tokio::net::unix::pipe::Receiver,
    ),
    Pty(Arc<Pty>),
}

/// Relays a running session until its process ends; the exit to send last.
async fn relay(running: Running, out: &mut tokio::net::unix::pipe::Sender) -> Control {
    let Running { pid, io, cfg } = running;
    let (data_tx, data_rx) = mpsc::channel(16);
    let (control_tx, mut control_rx) = mpsc::channel(16);
    let (sink, output, pty) = match io {
        Io::Pipes { stdin, out, err } => {
            let sink = tokio::net::unix::pipe::Sender::from_owned_fd(stdin).map(Sink::Pipe);
            let output = pipe_receiver(out).and_then(|o| Ok(Output::Pipes(o, pipe_receiver(err)?)));
            (sink, output, None)
        }
        Io::Tty { master, _socket } => match Pty::new(master) {
            Ok(t) => {
                let t = Arc::new(t);
                (
                    Ok(Sink::Pty(t.clone())),
                    Ok(Output::Pty(t.clone())),
                    Some((t, _socket)),
                )
            }
            Err(e) => (Err(e), Err(std::io::Error::other("no terminal")), None),
        },
    };
    let (sink, mut output) = match (sink, output) {
        (Ok(s), Ok(o)) => (s, o),
        (Err(e), _) | (_, Err(e)) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            wait_exit(pid).await;
            return Control::Error {
                name: ErrorName::Unknown.to_string(),
                message: format!("relaying the session: {e}"),
            };
        }
    };
    tokio::spawn(read_frames(data_tx, control_tx));
    tokio::spawn(write_input(sink, data_rx));
    let exit = wait_exit(pid);
    tokio::pin!(exit);
    let mut closed = false;
    let mut bufs = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut done = (false, false);
    let status = loop {
        tokio::select! {
            status = &mut exit => break status,
            c = control_rx.recv(), if !closed => match c {
                None => {
                    closed = true;
                    hang_up(pid);
                }
                Some(c) => control(pid, pty.as_ref().map(|(t, _)| t.as_ref()), c),
            },
            Some(f) = read_output(&mut output, &mut bufs, &mut done) => {
                if write_message(out, &f.encode()).await.is_err() && !closed {
                    closed = true;
                    hang_up(pid);
                }
            }
        }
    };
    // What is already written gets a moment to arrive (a daemon the process started
    // may hold its output open for ever).
    let _ = tokio::time::timeout(OUTPUT_DRAIN, async {
        while done != (true, true) {
            if let Some(f) = read_output(&mut output, &mut bufs, &mut done).await {
                let _ = write_message(out, &f.encode()).await;
            }
        }
    })
    .await;
    let reason = if closed {
        "the session was closed".to_string()
    } else if status >= 128 && instance_goes(&cfg).await {
        "the instance stopped".to_string()
    } else {
        String::new()
    };
    Control::Exit { status, reason }
}

/// The rep dropped the session: the process and its process group go.
fn hang_up(pid: Pid) {
    let _ = nix::sys::signal::kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
}

/// A client's control message.
fn control(pid: Pid, pty: Option<&Pty>, c: Control) {
    match c {
        Control::Resize { cols, rows } => {
            if let Some(t) = pty {
                if let Err(e) = t.resize(cols, rows) {
                    eprintln!("exec session: resizing the terminal: {e}");
                }
            }
        }
        Control::Signal { signal } => match signal_named(&signal) {
            Some(s) => {
                let _ = nix::sys::signal::kill(pid, s);
            }
            None => eprintln!("exec session: unknown signal {signal:?} ignored"),
        },
        _ => {}
    }
}

/// The next output frame; `None` when an output ended (marked in `done`). Never
/// resolves once both are done.
async fn read_output(
    output: &mut Output,
    bufs: &mut (Vec<u8>, Vec<u8>),
    done: &mut (bool, bool),
) -> Option<Frame> {
    use tokio::io::AsyncReadExt;
    if *done == (true, true) {
        return std::future::pending().await;
    }
    match output {
        Output::Pty(t) => match t.read(&mut bufs.0).await {
            Ok(n) if n > 0 => Some(Frame::Stdout(bufs.0[..n].to_vec())),
            _ => {
                *done = (true, true);
                None
            }
        },
        Output::Pipes(o, e) => tokio::select! {
            r = o.read(&mut bufs.0), if !done.0 => match r {
                Ok(n) if n > 0 => Some(Frame::Stdout(bufs.0[..n].to_vec())),
                _ => {
                    done.0 = true;
                    None
                }
            },
            r = e.read(&mut bufs.1), if !done.1 => match r {
                Ok(n) if n > 0 => Some(Frame::Stderr(bufs.1[..n].to_vec())),
                _ => {
                    done.1 = true;
                    None
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_may_send_five_signals() {
        assert_eq!(signal_named("INT"), Some(Signal::SIGINT));
        assert_eq!(signal_named("SIGTERM"), Some(Signal::SIGTERM));
        assert_eq!(signal_named("KILL"), Some(Signal::SIGKILL));
        assert_eq!(signal_named("HUP"), Some(Signal::SIGHUP));
        assert_eq!(signal_named("QUIT"), Some(Signal::SIGQUIT));
        assert_eq!(signal_named("STOP"), None);
    }

    fn run(user: &str, dir: &str) -> models::Action {
        models::Action {
            action: Some(A::Run(models::RunAction {
                path: "/bin/app".into(),
                user: user.into(),
                dir: dir.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_session_takes_the_first_run_of_the_work() {
        let serial = models::Action {
            action: Some(A::Serial(models::SerialAction {
                actions: vec![
                    models::Action {
                        action: Some(A::Download(Default::default())),
                    },
                    run("vcap", "/app"),
                    run("other", "/"),
                ],
                ..Default::default()
            })),
        };
        let r = first_run(&serial).unwrap();
        assert_eq!((r.user.as_str(), r.dir.as_str()), ("vcap", "/app"));
        assert!(first_run(&models::Action::default()).is_none());
    }
}
