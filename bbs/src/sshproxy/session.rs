//! One SSH `session` channel carried over the exec path (`lattice_specs::exec`): the
//! client's `pty-req` and `env` requests shape the [`ExecRequest`], its `shell`,
//! `exec` or `subsystem` starts it at the rep of the instance's cell, then stdin,
//! EOF, `window-change` and `signal` go up as exec frames and stdout, stderr and the
//! exit status come down, until the process ends (its status is the channel's
//! `exit-status`) or the client goes (the rep's end is closed: the process is killed
//! there). The translation is pure ([`Setup`], [`exec_request`], [`up_frame`],
//! [`Down`]); [`run`] is the thin loop around it.

use futures::{SinkExt, StreamExt};
use lattice_specs::exec::{Control, EnvVar, ExecRequest, Frame};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio_tungstenite::tungstenite::Message as RepMessage;

use crate::cell_client::RepSocket;

/// The most `env` requests one session takes (more are ignored).
pub const MAX_ENV: usize = 64;
/// The longest `env` name plus value taken.
pub const MAX_ENV_BYTES: usize = 4096;
/// The longest command an `exec` request may carry.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Where OpenSSH's SFTP server lives in the common images (Debian, Alpine, Fedora):
/// the `sftp` subsystem (what today's `scp` speaks) runs the first one the
/// instance's image has; else the SFTP server of the lifecycle's `diego-sshd`, which
/// the original `ltc create`'s instances download to /tmp.
const SFTP_SERVER: &str = "for s in /usr/lib/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/openssh/sftp-server /usr/libexec/sftp-server; do [ -x $s ] && exec $s; done; [ -x /tmp/diego-sshd ] && exec /tmp/diego-sshd --lattice-sftp-server; echo 'this instance has no sftp-server (openssh-sftp-server) and no /tmp/diego-sshd: scp -O uses its scp instead' >&2; exit 127";

/// The terminal a `pty-req` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pty {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// What the client asked for before starting the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    pub pty: Option<Pty>,
    pub env: Vec<EnvVar>,
}

impl Setup {
    /// Takes an `env` request within the bounds ([`MAX_ENV`], [`MAX_ENV_BYTES`]);
    /// false: ignored.
    pub fn add_env(&mut self, name: &str, value: &str) -> bool {
        if self.env.len() >= MAX_ENV
            || name.is_empty()
            || name.contains('=')
            || name.len() + value.len() > MAX_ENV_BYTES
        {
            return false;
        }
        self.env.push(EnvVar {
            name: name.to_string(),
            value: value.to_string(),
        });
        true
    }
}

/// How the client starts the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

/// Why a start cannot be carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("subsystem {0:?} is not offered (only sftp)")]
    Subsystem(String),
    #[error("the command is longer than {MAX_COMMAND_BYTES} bytes")]
    CommandTooLong,
}

fn clamp(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

impl Pty {
    pub fn new(term: &str, cols: u32, rows: u32) -> Pty {
        Pty {
            term: term.to_string(),
            cols: clamp(cols),
            rows: clamp(rows),
        }
    }
}

/// The exec request of a session: a shell is the image's shell; a command runs as
/// OpenSSH runs it (`/bin/sh -c COMMAND`, so `scp -t`/`scp -f` find the image's own
/// `scp`); `sftp` runs the image's `sftp-server`. On a terminal `TERM` is the
/// terminal's type. `who` says who opened it (the rep logs it).
pub fn exec_request(setup: &Setup, start: &Start, who: &str) -> Result<ExecRequest, Unsupported> {
    let sh = |c: String| vec!["/bin/sh".to_string(), "-c".to_string(), c];
    let command = match start {
        Start::Shell => vec![],
        Start::Exec(c) if c.len() > MAX_COMMAND_BYTES => return Err(Unsupported::CommandTooLong),
        Start::Exec(c) => sh(String::from_utf8_lossy(c).into_owned()),
        Start::Subsystem(name) if name == "sftp" => sh(SFTP_SERVER.to_string()),
        Start::Subsystem(name) => return Err(Unsupported::Subsystem(name.clone())),
    };
    let mut env = setup.env.clone();
    if let Some(p) = &setup.pty {
        if !p.term.is_empty() {
            env.retain(|e| e.name != "TERM");
            env.push(EnvVar {
                name: "TERM".into(),
                value: p.term.clone(),
            });
        }
    }
    Ok(ExecRequest {
        command,
        tty: setup.pty.is_some(),
        cols: setup.pty.as_ref().map_or(0, |p| p.cols),
        rows: setup.pty.as_ref().map_or(0, |p| p.rows),
        env,
        user: String::new(),
        who: who.to_string(),
    })
}

/// The signals the exec path delivers, by SSH's names.
pub fn signal_name(sig: &Sig) -> Option<&'static str> {
    Some(match sig {
        Sig::INT => "INT",
        Sig::TERM => "TERM",
        Sig::KILL => "KILL",
        Sig::HUP => "HUP",
        Sig::QUIT => "QUIT",
        _ => return None,
    })
}

/// The exec frame a client's channel message becomes (None: nothing to send).
/// `Close` is handled by the loop (it ends the session).
pub fn up_frame(m: &ChannelMsg) -> Option<Frame> {
    Some(match m {
        ChannelMsg::Data { data } => Frame::Stdin(data.to_vec()),
        ChannelMsg::Eof => Frame::Control(Control::Eof),
        ChannelMsg::WindowChange {
            col_width,
            row_height,
            ..
        } => Frame::Control(Control::Resize {
            cols: clamp(*col_width),
            rows: clamp(*row_height),
        }),
        ChannelMsg::Signal { signal } => Frame::Control(Control::Signal {
            signal: signal_name(signal)?.to_string(),
        }),
        _ => return None,
    })
}

/// What a rep frame does to the client's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process ended: its exit status, then EOF and close.
    Exit(u32),
    /// The session broke: the message on stderr, then close (no status: the client
    /// reports the failure as OpenSSH does when the server gives none).
    Failed(String),
    Nothing,
}

/// What a frame from the rep means for the client.
pub fn down(f: Frame) -> Down {
    match f {
        Frame::Stdout(b) => Down::Stdout(b),
        Frame::Stderr(b) => Down::Stderr(b),
        Frame::Control(Control::Exit { status, .. }) => {
            Down::Exit(u32::try_from(status).map_or(255, |s| s.min(255)))
        }
        Frame::Control(Control::Error { name, message }) => {
            Down::Failed(format!("lattice: {name}: {message}\r\n"))
        }
        Frame::Stdin(_) | Frame::Control(_) => Down::Nothing,
    }
}

/// How a session ended, for the log line and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited,
    Failed,
    ClosedByClient,
    RepBroke,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Exited => "exited",
            Ended::Failed => "failed",
            Ended::ClosedByClient => "closed_by_client",
            Ended::RepBroke => "rep_broke",
        }
    }
}

/// Reads the client's setup requests until it starts the session; None: it closed
/// the channel first.
pub async fn setup(channel: &mut Channel<Msg>) -> Option<(Setup, Start)> {
    let mut setup = Setup::default();
    loop {
        match channel.wait().await? {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => setup.pty = Some(Pty::new(&term, col_width, row_height)),
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                setup.add_env(&variable_name, &variable_value);
            }
            ChannelMsg::RequestShell { .. } => return Some((setup, Start::Shell)),
            ChannelMsg::Exec { command, .. } => return Some((setup, Start::Exec(command))),
            ChannelMsg::RequestSubsystem { name, .. } => {
                return Some((setup, Start::Subsystem(name)))
            }
            ChannelMsg::Close => return None,
            _ => {}
        }
    }
}

/// Carries the session between the client's channel and the rep until it ends.
/// `request` is the exec request, sent first.
pub async fn run(channel: Channel<Msg>, mut rep: RepSocket, request: &ExecRequest) -> Ended {
    let json = serde_json::to_string(request).expect("an exec request serializes");
    if rep.send(RepMessage::text(json)).await.is_err() {
        let _ = channel
            .extended_data_bytes(
                1,
                &b"lattice: the instance's cell did not take the session\r\n"[..],
            )
            .await;
        let _ = channel.close().await;
        return Ended::RepBroke;
    }
    let (mut reader, writer) = channel.split();
    let ended = loop {
        tokio::select! {
            m = reader.wait() => match m {
                None | Some(ChannelMsg::Close) => break Ended::ClosedByClient,
                Some(m) => {
                    if let Some(f) = up_frame(&m) {
                        if rep.send(RepMessage::binary(f.encode())).await.is_err() {
                            break Ended::RepBroke;
                        }
                    }
                }
            },
            m = rep.next() => {
                let frame = match m {
                    Some(Ok(RepMessage::Binary(b))) => match Frame::decode(&b) {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::debug!("a bad frame from the rep ignored: {e}");
                            continue;
                        }
                    },
                    Some(Ok(RepMessage::Close(_))) | None | Some(Err(_)) => break Ended::RepBroke,
                    Some(Ok(_)) => continue,
                };
                let sent = match down(frame) {
                    Down::Stdout(b) => writer.data_bytes(b).await,
                    Down::Stderr(b) => writer.extended_data_bytes(1, b).await,
                    Down::Exit(status) => {
                        let _ = writer.exit_status(status).await;
                        let _ = writer.eof().await;
                        break Ended::Exited;
                    }
                    Down::Failed(message) => {
                        let _ = writer.extended_data_bytes(1, message.into_bytes()).await;
                        break Ended::Failed;
                    }
                    Down::Nothing => Ok(()),
                };
                if sent.is_err() {
                    break Ended::ClosedByClient;
                }
            }
        }
    };
    if ended == Ended::RepBroke {
        let _ = writer
            .extended_data_bytes(
                1,
                &b"lattice: the connection to the instance's cell broke\r\n"[..],
            )
            .await;
    }
    let _ = writer.close().await;
    // The rep's end closes: a process still running there is killed.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rep.close(None)).await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_on_a_terminal_gets_its_size_and_type() {
        let mut s = Setup {
            pty: Some(Pty::new("xterm-256color", 120, 40)),
            ..Default::default()
        };
        assert!(s.add_env("LANG", "C.UTF-8"));
        assert!(s.add_env("TERM", "vt100"), "the terminal's type wins below");
        let r = exec_request(&s, &Start::Shell, "ci").unwrap();
        assert!(r.command.is_empty(), "the image's shell");
        assert!(r.tty);
        assert_eq!((r.cols, r.rows), (120, 40));
        assert_eq!(r.who, "ci");
        let names: Vec<_> = r
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(names, [("LANG", "C.UTF-8"), ("TERM", "xterm-256color")]);
    }

    #[test]
    fn a_command_runs_as_openssh_runs_it() {
        let s = Setup::default();
        let r = exec_request(&s, &Start::Exec(b"echo hi; exit 3".to_vec()), "local").unwrap();
        assert_eq!(r.command, ["/bin/sh", "-c", "echo hi; exit 3"]);
        assert!(!r.tty);
        assert_eq!((r.cols, r.rows), (0, 0));
        let sftp = exec_request(&s, &Start::Subsystem("sftp".into()), "x").unwrap();
        assert!(sftp.command[2].contains("sftp-server"));
        assert_eq!(
            exec_request(&s, &Start::Subsystem("netconf".into()), "x"),
            Err(Unsupported::Subsystem("netconf".into()))
        );
        let long = vec![b'x'; MAX_COMMAND_BYTES + 1];
        assert_eq!(
            exec_request(&s, &Start::Exec(long), "x"),
            Err(Unsupported::CommandTooLong)
        );
    }

    #[test]
    fn the_environment_a_client_sends_is_bounded() {
        let mut s = Setup::default();
        for i in 0..MAX_ENV {
            assert!(s.add_env(&format!("V{i}"), "x"));
        }
        assert!(!s.add_env("ONE_MORE", "x"));
        let mut s = Setup::default();
        assert!(!s.add_env("", "x"));
        assert!(!s.add_env("A=B", "x"));
        assert!(!s.add_env("BIG", &"x".repeat(MAX_ENV_BYTES)));
        assert!(s.env.is_empty());
    }

    #[test]
    fn client_messages_become_frames() {
        let data = ChannelMsg::Data {
            data: bytes::Bytes::from_static(b"ls\n"),
        };
        assert_eq!(up_frame(&data), Some(Frame::Stdin(b"ls\n".to_vec())));
        assert_eq!(
            up_frame(&ChannelMsg::Eof),
            Some(Frame::Control(Control::Eof))
        );
        let resize = ChannelMsg::WindowChange {
            col_width: 100,
            row_height: 30,
            pix_width: 0,
            pix_height: 0,
        };
        assert_eq!(
            up_frame(&resize),
            Some(Frame::Control(Control::Resize {
                cols: 100,
                rows: 30
            }))
        );
        let int = ChannelMsg::Signal { signal: Sig::INT };
        assert_eq!(
            up_frame(&int),
            Some(Frame::Control(Control::Signal {
                signal: "INT".into()
            }))
        );
        let usr = ChannelMsg::Signal { signal: Sig::USR1 };
        assert_eq!(up_frame(&usr), None, "not one the exec path delivers");
    }

    #[test]
    fn rep_frames_become_output_and_the_exit_status() {
        assert_eq!(
            down(Frame::Stdout(b"a".to_vec())),
            Down::Stdout(b"a".to_vec())
        );
        assert_eq!(
            down(Frame::Stderr(b"e".to_vec())),
            Down::Stderr(b"e".to_vec())
        );
        let exit = |status| {
            down(Frame::Control(Control::Exit {
                status,
                reason: String::new(),
            }))
        };
        assert_eq!(exit(3), Down::Exit(3));
        assert_eq!(exit(130), Down::Exit(130));
        assert_eq!(exit(-1), Down::Exit(255));
        let Down::Failed(m) = down(Frame::Control(Control::Error {
            name: "InstanceNotRunning".into(),
            message: "the container is stopping".into(),
        })) else {
            panic!("an error fails the session")
        };
        assert!(
            m.contains("InstanceNotRunning: the container is stopping"),
            "{m}"
        );
    }
}
