//! The shim's state for one container ([`Ctx`]): its configuration, events file, log
//! socket with its rate and read pace, and the container's own process spec; the lines
//! of its processes' output sent to the log; and the real [`Steps`] the action
//! interpreter runs (processes, transfers, progress events, log lines).

use std::os::fd::OwnedFd;
use std::time::Duration;

use lattice_specs::models;
use tokio_util::sync::CancellationToken;

use super::actions::Steps;
use super::events::{Events, ShimEvent};
use super::fds::pipe_receiver;
use super::process::{run_process, RunError};
use super::{LogLine, ShimConfig};
use crate::loglines::{dropped_message, Admit, LineSplitter, LogSender, RateLimit, ReadPace};

/// The shim's state for one container.
pub(super) struct Ctx {
    pub(super) cfg: ShimConfig,
    /// None for `--exec` runs, which report only their exit status.
    events: Option<Events>,
    logs: Option<tokio::sync::Mutex<LogSender>>,
    /// The container's log rate (shared by its stdout and stderr).
    rate: std::sync::Mutex<RateLimit>,
    /// How fast its output is read at all (shared too).
    pace: std::sync::Mutex<ReadPace>,
    pub(super) grace: Duration,
    /// The container's own process spec (capabilities, no_new_privs), read once:
    /// exec'd processes get what it grants, not the runtime's defaults.
    pub(super) init_process: Result<oci_spec::runtime::Process, String>,
    /// The container's seccomp profile: libcontainer drops it for exec'd processes,
    /// so [`super::process`] applies it to each of them.
    pub(super) seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

impl Ctx {
    pub(super) fn new(cfg: ShimConfig, events: Option<Events>, logs: bool) -> Ctx {
        let spec = oci_spec::runtime::Spec::load(cfg.bundle.join("config.json"))
            .map_err(|e| format!("cannot read the container spec: {e}"));
        let seccomp = spec
            .as_ref()
            .ok()
            .and_then(|s| s.linux().as_ref()?.seccomp().clone());
        let init_process = spec.map(|spec| spec.process().clone().unwrap_or_default());
        Ctx {
            grace: Duration::from_millis(cfg.grace_ms),
            logs: logs.then(|| tokio::sync::Mutex::new(LogSender::new(&cfg.log_socket))),
            rate: std::sync::Mutex::new(RateLimit::new(std::time::Instant::now())),
            pace: std::sync::Mutex::new(ReadPace::new(std::time::Instant::now())),
            cfg,
            events,
            init_process,
            seccomp,
        }
    }

    pub(super) fn emit(&self, e: &ShimEvent) {
        if let Some(ev) = &self.events {
            ev.emit(e);
        }
    }

    /// Sends a line to the rep, within the container's log rate; past it the line is
    /// dropped, and the next line sent is preceded by one saying how many were.
    async fn send_log(&self, source: &str, stream: &str, line: &str) {
        let Some(logs) = &self.logs else { return };
        match self.admit(line.len()) {
            Admit::Drop => return,
            Admit::SendAfterDropped(n) => {
                self.send_line(logs, source, "stderr", &dropped_message(n))
                    .await
            }
            Admit::Send => {}
        }
        self.send_line(logs, source, stream, line).await;
    }

    fn admit(&self, len: usize) -> Admit {
        self.rate
            .lock()
            .unwrap()
            .admit(len, std::time::Instant::now())
    }

    /// Says how many lines the rate limit dropped since the last one sent, if any.
    async fn log_dropped(&self, source: &str) {
        let n = self.rate.lock().unwrap().take_dropped();
        if let (Some(logs), true) = (&self.logs, n > 0) {
            self.send_line(logs, source, "stderr", &dropped_message(n))
                .await;
        }
    }

    async fn send_line(
        &self,
        logs: &tokio::sync::Mutex<LogSender>,
        source: &str,
        stream: &str,
        line: &str,
    ) {
        let msg = |stream: &str, line: String| LogLine {
            handle: self.cfg.id.clone(),
            source: source.to_string(),
            stream: stream.to_string(),
            line,
            time: lattice_specs::now_nanos(),
        };
        let Ok(bytes) = serde_json::to_vec(&msg(stream, line.to_string())) else {
            return;
        };
        let mut sender = logs.lock().await;
        if let Ok(lost) = sender.send(&bytes).await {
            if lost > 0 {
                let note = format!("lattice: {lost} log line(s) lost while the cell was down");
                if let Ok(b) = serde_json::to_vec(&msg("stderr", note)) {
                    let _ = sender.send(&b).await;
                }
            }
        }
    }

    pub(super) fn source<'a>(&'a self, own: &'a str) -> &'a str {
        if own.is_empty() {
            &self.cfg.log_source
        } else {
            own
        }
    }
}

/// Sends a process's output to the log, line by line (lines cut at
/// [`crate::loglines::MAX_LINE`], held to the container's log rate, read no faster
/// than [`crate::loglines::READ_BYTES_PER_SEC`]); `quiet` reads and discards it.
pub(super) async fn forward_lines(ctx: &Ctx, fd: OwnedFd, source: &str, stream: &str, quiet: bool) {
    use tokio::io::AsyncReadExt as _;
    let Ok(mut rx) = pipe_receiver(fd) else {
        return;
    };
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    // What is admitted; `true` for a dropped-lines notice (it goes to stderr).
    let mut lines: Vec<(bool, String)> = Vec::new();
    let take = |rate: &mut RateLimit,
                now: std::time::Instant,
                l: &[u8],
                lines: &mut Vec<(bool, String)>| {
        if quiet {
            return;
        }
        // Dropped lines are only counted: no copy of a flood is made.
        match rate.admit(l.len(), now) {
            Admit::Drop => {}
            Admit::Send => lines.push((false, String::from_utf8_lossy(l).into_owned())),
            Admit::SendAfterDropped(n) => {
                lines.push((true, dropped_message(n)));
                lines.push((false, String::from_utf8_lossy(l).into_owned()));
            }
        }
    };
    loop {
        // A flood that stops is reported within a second, not at the next line.
        let n = match tokio::time::timeout(Duration::from_secs(1), rx.read(&mut buf)).await {
            Err(_) => {
                ctx.log_dropped(source).await;
                continue;
            }
            Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        // One clock read and one lock per chunk, not per line (a flood of short lines
        // is millions a second).
        let now = std::time::Instant::now();
        let mut count = 0;
        {
            let mut rate = ctx.rate.lock().unwrap();
            let mut each = |l: &[u8]| {
                count += 1;
                take(&mut rate, now, l, &mut lines)
            };
            if n == 0 {
                splitter.finish(&mut each);
            } else {
                splitter.push(&buf[..n], &mut each);
            }
        }
        if let Some(logs) = &ctx.logs {
            for (notice, line) in lines.drain(..) {
                let to = if notice { "stderr" } else { stream };
                ctx.send_line(logs, source, to, &line).await;
            }
        }
        if n == 0 {
            break;
        }
        let pause = ctx.pace.lock().unwrap().read(n, count, now);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    ctx.log_dropped(source).await;
}

/// The real steps: processes exec'd into the container, transfers to and from its
/// filesystem (or the volumes bound over it), events for the rep, the cell's log.
impl Steps for Ctx {
    async fn run(&self, r: &models::RunAction, cancel: CancellationToken) -> Result<(), RunError> {
        run_process(self, r, cancel).await
    }

    fn read_only(&self, path: &str) -> bool {
        self.cfg.host_path(path).1
    }

    async fn download(&self, d: &models::DownloadAction) -> anyhow::Result<()> {
        let (dest, _) = self.cfg.host_path(&d.to);
        let http = crate::transfer::client(&self.cfg.extra_ca)?;
        let mut d = d.clone();
        d.from = crate::transfer::redirect(&d.from, &self.cfg.redirects);
        crate::transfer::download(&http, dest, &self.cfg.rootfs, &d).await
    }

    async fn upload(&self, u: &models::UploadAction) -> anyhow::Result<()> {
        let http = crate::transfer::client(&self.cfg.extra_ca)?;
        crate::transfer::upload(&http, self.cfg.host_path(&u.from).0, u).await
    }

    async fn repository(&self, r: &models::RepositoryAction) -> anyhow::Result<()> {
        super::repository::run(self, r).await
    }

    fn progress(&self, message: &str) {
        self.emit(&ShimEvent::Progress {
            message: message.to_string(),
        });
    }

    async fn log(&self, source: &str, stream: &str, line: &str) {
        self.send_log(self.source(source), stream, line).await
    }
}
