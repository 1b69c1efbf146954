//! Sessions inside running containers (`ltc ssh`): exec, through the shim's session
//! helper (`SHIM DIR --session`, see [`crate::shim`]: the rep never forks from its
//! runtime), and port forwards, a socket connected from inside the container's
//! network namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{ExecRequest, Frame};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::Executor;
use crate::shim::wire::{read_message, write_message};
use crate::shim::ShimEvent;

/// How long connecting a forwarded port may take.
pub const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("instance {handle} is not running on this cell")]
    NotRunning { handle: String },
    #[error("starting the exec helper: {0}")]
    Helper(String),
    #[error(
        "forward host {host:?} is not an IP address or localhost: give an address inside the instance, e.g. 127.0.0.1"
    )]
    BadHost { host: String },
    /// The forwarded connection could not be made (the message says where and why).
    #[error("{0}")]
    Connect(String),
}

impl SessionError {
    /// The error's name for clients.
    pub fn name(&self) -> ErrorName {
        match self {
            SessionError::NotRunning { .. } => ErrorName::InstanceNotRunning,
            SessionError::BadHost { .. } => ErrorName::InvalidRequest,
            SessionError::Helper(_) | SessionError::Connect(_) => ErrorName::Unknown,
        }
    }
}

/// The init pid of a container whose shim reported it created and not yet ended.
pub fn running_init(events: &[ShimEvent]) -> Option<i32> {
    let mut init = None;
    for e in events {
        match e {
            ShimEvent::Created { init_pid } => init = Some(*init_pid),
            ShimEvent::Exited { .. } | ShimEvent::Destroyed | ShimEvent::CreateFailed { .. } => {
                return None
            }
            _ => {}
        }
    }
    init
}

/// Where a forward connects: `host` ("" and `localhost` are the instance's loopback).
pub fn forward_addr(host: &str, port: u16) -> Result<SocketAddr, SessionError> {
    let ip = match host {
        "" | "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| SessionError::BadHost {
            host: host.to_string(),
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// The message of a forward that could not connect.
pub fn connect_error(addr: SocketAddr, handle: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("nothing listens on {addr} in instance {handle}")
        }
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!(
            "connecting to {addr} in instance {handle} timed out after {}s",
            FORWARD_CONNECT_TIMEOUT.as_secs()
        ),
        _ => format!("connecting to {addr} in instance {handle}: {e}"),
    }
}

/// An open exec session: frames to the process, frames from it (the last a
/// [`lattice_specs::exec::Control::Exit`] or `Error`). Dropping it ends the session:
/// the helper kills the process.
pub struct ExecSession {
    pub sender: ExecSender,
    pub receiver: ExecReceiver,
}

/// Frames to the session's process.
pub struct ExecSender(ChildStdin);

/// Frames from the session's process; holds the helper, reaped once this goes.
pub struct ExecReceiver {
    stdout: ChildStdout,
    helper: Option<Child>,
}

impl ExecSession {
    pub async fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        self.sender.send(f).await
    }

    pub async fn recv(&mut self) -> std::io::Result<Option<Frame>> {
        self.receiver.recv().await
    }
}

impl ExecSender {
    pub async fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        write_message(&mut self.0, &f.encode()).await
    }
}

impl ExecReceiver {
    /// The next frame; `None` once the helper is done.
    pub async fn recv(&mut self) -> std::io::Result<Option<Frame>> {
        match read_message(&mut self.stdout).await? {
            None => Ok(None),
            Some(m) => Frame::decode(&m)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

impl Drop for ExecReceiver {
    fn drop(&mut self) {
        // The helper ends once its stdin closes (it kills the process first): it is
        // reaped here, and killed if it does not end.
        let Some(mut helper) = self.helper.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if tokio::time::timeout(Duration::from_secs(10), helper.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!("an exec helper did not end 10 s after its session: killed");
                    let _ = helper.kill().await;
                }
            });
        }
    }
}

impl Executor {
    /// The init pid of `handle` when it is a running container of this executor
    /// (else [`SessionError::NotRunning`]).
    pub fn running(&self, handle: &str) -> Result<i32, SessionError> {
        let not_running = || SessionError::NotRunning {
            handle: handle.to_string(),
        };
        if !self.containers.lock().unwrap().contains_key(handle) {
            return Err(not_running());
        }
        let (events, _) = self.events(handle, 0);
        let init = running_init(&events).ok_or_else(not_running)?;
        self.shim_pid(handle).ok_or_else(not_running)?;
        Ok(init)
    }

    /// Opens an exec session in the running container `handle`.
    pub async fn exec(&self, handle: &str, req: &ExecRequest) -> Result<ExecSession, SessionError> {
        self.running(handle)?;
        let shim = &self.cfg.shim;
        let helper_err = |e: &dyn std::fmt::Display| SessionError::Helper(e.to_string());
        let mut helper =
            crate::launcher::with_default_signals(&mut tokio::process::Command::new(&shim[0]))
                .args(&shim[1..])
                .arg(self.dir(handle))
                .arg(crate::shim::SESSION_ARG)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group: a signal for the rep's (Ctrl-C on `lattice up`)
                // is not one for the helper, which must outlive the rep long enough to
                // kill its process when its stdin closes.
                .process_group(0)
                .spawn()
                .map_err(|e| helper_err(&e))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) = (
            helper.stdin.take(),
            helper.stdout.take(),
            helper.stderr.take(),
        ) else {
            return Err(SessionError::Helper("its pipes are missing".into()));
        };
        let h = handle.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(handle = %h, "{line}");
            }
        });
        let json = serde_json::to_vec(req).map_err(|e| helper_err(&e))?;
        write_message(&mut stdin, &json)
            .await
            .map_err(|e| helper_err(&e))?;
        Ok(ExecSession {
            sender: ExecSender(stdin),
            receiver: ExecReceiver {
                stdout,
                helper: Some(helper),
            },
        })
    }

    /// A TCP connection to `host:port` inside the running container `handle`'s
    /// network namespace (the cell's for host networking).
    pub async fn forward(
        &self,
        handle: &str,
        host: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, SessionError> {
        let addr = forward_addr(host, port)?;
        self.running(handle)?;
        let netns = self
            .get(handle)
            .and_then(|c| c.network)
            .map(|a| a.netns_path());
        let stream = connect_in(netns, addr)
            .await
            .map_err(|e| SessionError::Connect(connect_error(addr, handle, &e)))?;
        stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
            .map_err(|e| SessionError::Connect(connect_error(addr, handle, &e)))
    }
}

/// Connects to `addr` from inside the network namespace at `netns`: on a thread of
/// its own that enters the namespace, connects and ends (the socket stays in the
/// namespace it was made in).
async fn connect_in(
    netns: Option<PathBuf>,
    addr: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("forward-connect".into())
        .spawn(move || {
            let connect = || -> std::io::Result<std::net::TcpStream> {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns)?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                std::net::TcpStream::connect_timeout(&addr, FORWARD_CONNECT_TIMEOUT)
            };
            let _ = tx.send(connect());
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the connecting thread died")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_runs_between_created_and_its_end() {
        assert_eq!(running_init(&[]), None);
        let created = ShimEvent::Created { init_pid: 7 };
        assert_eq!(running_init(std::slice::from_ref(&created)), Some(7));
        let exited = ShimEvent::Exited {
            failed: false,
            reason: String::new(),
            stopped: true,
            result: None,
        };
        assert_eq!(running_init(&[created.clone(), exited]), None);
        assert_eq!(running_init(&[created, ShimEvent::Destroyed]), None);
    }

    #[test]
    fn forward_hosts_are_addresses_or_localhost() {
        assert_eq!(
            forward_addr("", 80).unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            forward_addr("localhost", 8080).unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            forward_addr("10.0.0.2", 1).unwrap(),
            "10.0.0.2:1".parse().unwrap()
        );
        let e = forward_addr("db.internal", 5432).unwrap_err();
        assert_eq!(e.name(), ErrorName::InvalidRequest);
        assert!(e.to_string().contains("\"db.internal\""), "{e}");
    }

    #[test]
    fn a_refused_forward_says_nothing_listens() {
        let addr = "127.0.0.1:8080".parse().unwrap();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            connect_error(addr, "web-0", &refused),
            "nothing listens on 127.0.0.1:8080 in instance web-0"
        );
        let late = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(connect_error(addr, "web-0", &late).contains("timed out"));
    }
}
