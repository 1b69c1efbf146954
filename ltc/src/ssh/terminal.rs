//! The local side of an `ltc ssh` session: the user's terminal in raw mode (restored
//! when [`Local`] is dropped: on return, error, panic unwinding, and TERM/HUP, which
//! end the session first), its size, and the signals that become control messages.

use std::os::fd::AsRawFd;

use anyhow::Context;
use lattice_specs::exec::Control;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// The user's terminal (ltc's stdin), in raw mode while this lives.
pub struct Local {
    saved: Termios,
}

impl Local {
    /// Puts the terminal in raw mode: keys (Ctrl-C too) go to the remote terminal as
    /// bytes, and its output is shown as it comes.
    pub fn raw() -> anyhow::Result<Local> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(Local { saved })
    }

    /// The terminal's size (columns, rows), if it has one.
    pub fn size(&self) -> Option<(u16, u16)> {
        size()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Flush what the session wrote before the terminal changes back.
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// The size (columns, rows) of the terminal on stdin.
fn size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which points at ours.
    let r = unsafe { tiocgwinsz(std::io::stdin().as_raw_fd(), &mut ws) };
    (r.is_ok() && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Control messages from local signals: on a terminal, its new size on SIGWINCH;
/// without one, SIGINT (Ctrl-C) delivered to the remote process as `INT`.
pub fn events(tty: bool) -> mpsc::Receiver<Control> {
    let (tx, rx) = mpsc::channel(16);
    let kind = if tty {
        SignalKind::window_change()
    } else {
        SignalKind::interrupt()
    };
    match signal(kind) {
        Ok(mut sig) => {
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    let msg = if tty {
                        match size() {
                            Some((cols, rows)) => Control::Resize { cols, rows },
                            None => continue,
                        }
                    } else {
                        Control::Signal {
                            signal: "INT".into(),
                        }
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => eprintln!("ltc: cannot watch signals ({e}): resizes and Ctrl-C stay local"),
    }
    rx
}

/// Resolves when ltc is asked to stop (TERM or HUP).
pub async fn terminated() {
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// Resolves on Ctrl-C, TERM or HUP (`-N`: forward until stopped).
pub async fn interrupted() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
    }
}
