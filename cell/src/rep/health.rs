//! The health of one LRP instance as a pure state machine: what the shim's events and
//! the health checks' results say, and when to check next. No I/O and no clock of its
//! own: the supervision runner ([`super::lrp`]) feeds it the events it read, the check
//! results it got and the time, and acts on what it answers.

use std::time::{Duration, Instant};

use crate::monitor::Check;
use crate::shim::ShimEvent;

use super::{RepConfig, EVENT_FALLBACK, EVENT_POLL};

/// How often an instance is checked, from the rep's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timing {
    /// While not yet healthy, during the startup window (port and HTTP checks only).
    pub startup_interval: Duration,
    /// How long after supervision starts the startup interval applies.
    pub startup_window: Duration,
    /// While not yet healthy, otherwise.
    pub unhealthy_interval: Duration,
    /// Once healthy.
    pub healthy_interval: Duration,
}

impl Timing {
    pub fn of(cfg: &RepConfig) -> Timing {
        Timing {
            startup_interval: cfg.startup_interval,
            startup_window: cfg.startup_window,
            unhealthy_interval: cfg.unhealthy_interval,
            healthy_interval: cfg.healthy_interval,
        }
    }
}

/// What a health check's result asks of the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// First healthy: report the instance RUNNING.
    ReportRunning,
    /// Nothing to report: check again when [`Health::check_due`] says so.
    KeepChecking,
    /// The instance crashed, for this reason.
    Crash(String),
}

/// One instance's health, from supervision's start to its crash or stop.
#[derive(Debug, Clone)]
pub(super) struct Health {
    timing: Timing,
    start_timeout: Duration,
    /// Only port and HTTP checks: cheap enough to run at the startup interval (a
    /// command check is an exec).
    cheap: bool,
    started: Instant,
    healthy: bool,
    process_started: bool,
    next_check: Instant,
}

impl Health {
    /// A new instance's health (or a re-adopted one's, `already_running` when the BBS
    /// already has it RUNNING here), supervised from `now`.
    pub fn new(
        timing: Timing,
        start_timeout: Duration,
        checks: &[Check],
        already_running: bool,
        now: Instant,
    ) -> Health {
        Health {
            timing,
            start_timeout,
            cheap: !checks.iter().any(|c| matches!(c, Check::Command(_))),
            started: now,
            healthy: already_running,
            process_started: already_running,
            next_check: now,
        }
    }

    /// Takes the shim's new events: the crash reason when the instance's process
    /// exited or its container could not be created (the last such event wins).
    pub fn on_events(&mut self, events: impl IntoIterator<Item = ShimEvent>) -> Option<String> {
        let mut ended = None;
        for e in events {
            match e {
                ShimEvent::RunStarted { .. } => self.process_started = true,
                ShimEvent::Exited { reason, .. } => {
                    ended = Some(if reason.is_empty() {
                        "exited with status 0".to_string()
                    } else {
                        reason
                    })
                }
                ShimEvent::CreateFailed { reason } => ended = Some(reason),
                _ => {}
            }
        }
        ended
    }

    /// Whether a health check is due at `now` (never before the process started).
    pub fn check_due(&self, now: Instant) -> bool {
        self.process_started && now >= self.next_check
    }

    /// How long to wait for the shim's events before looking again: woken by them when
    /// the signal is live (`wakes`), otherwise polled; in time for the next check.
    pub fn wait(&self, now: Instant, wakes: bool) -> Duration {
        if !wakes {
            EVENT_POLL
        } else if self.process_started {
            self.next_check
                .saturating_duration_since(now)
                .min(EVENT_FALLBACK)
        } else {
            EVENT_FALLBACK
        }
    }

    /// Takes a health check's result, got at `now`.
    pub fn on_check(&mut self, result: Result<(), String>, now: Instant) -> Verdict {
        match (self.healthy, result) {
            (false, Ok(())) => {
                self.healthy = true;
                self.next_check = now + self.timing.healthy_interval;
                Verdict::ReportRunning
            }
            (false, Err(e)) => {
                let up_for = now.saturating_duration_since(self.started);
                if up_for > self.start_timeout {
                    return Verdict::Crash(format!(
                        "instance never became healthy within {}s: {e}",
                        self.start_timeout.as_secs()
                    ));
                }
                self.next_check = now
                    + if self.cheap && up_for < self.timing.startup_window {
                        self.timing.startup_interval
                    } else {
                        self.timing.unhealthy_interval
                    };
                Verdict::KeepChecking
            }
            (true, Ok(())) => {
                self.next_check = now + self.timing.healthy_interval;
                Verdict::KeepChecking
            }
            (true, Err(e)) => Verdict::Crash(format!("health check failed: {e}")),
        }
    }
}

/// How long an instance of `start_timeout_ms` (0: none set) may take to be healthy.
pub(super) fn start_timeout(start_timeout_ms: u64, default: Duration) -> Duration {
    if start_timeout_ms > 0 {
        Duration::from_millis(start_timeout_ms)
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            startup_interval: Duration::from_millis(25),
            startup_window: 2 * S,
            unhealthy_interval: Duration::from_millis(500),
            healthy_interval: 30 * S,
        }
    }

    fn tcp() -> Vec<Check> {
        vec![Check::Tcp {
            port: 8080,
            timeout: S,
        }]
    }

    fn run_started() -> ShimEvent {
        ShimEvent::RunStarted {
            path: "/app".into(),
            pid: 7,
        }
    }

    fn exited(reason: &str) -> ShimEvent {
        ShimEvent::Exited {
            failed: !reason.is_empty(),
            reason: reason.into(),
            stopped: false,
            result: None,
        }
    }

    /// A new instance, its process started at `t0`.
    fn started(t0: Instant) -> Health {
        let mut h = Health::new(timing(), 60 * S, &tcp(), false, t0);
        assert_eq!(h.on_events([run_started()]), None);
        h
    }

    #[test]
    fn no_check_before_the_process_starts() {
        let t0 = Instant::now();
        let mut h = Health::new(timing(), 60 * S, &tcp(), false, t0);
        assert!(!h.check_due(t0 + S));
        assert_eq!(h.wait(t0, true), EVENT_FALLBACK);
        assert_eq!(h.wait(t0, false), EVENT_POLL);
        let progress = ShimEvent::Progress {
            message: "pulling".into(),
        };
        assert_eq!(h.on_events([progress]), None);
        assert!(!h.check_due(t0 + S));
        assert_eq!(h.on_events([run_started()]), None);
        assert!(h.check_due(t0 + S));
    }

    #[test]
    fn the_first_healthy_check_reports_running_then_checks_slow_down() {
        let t0 = Instant::now();
        let mut h = started(t0);
        assert!(h.check_due(t0));
        assert_eq!(h.on_check(Ok(()), t0 + S), Verdict::ReportRunning);
        assert!(!h.check_due(t0 + 30 * S));
        assert!(h.check_due(t0 + 31 * S));
        assert_eq!(h.wait(t0 + S, true), EVENT_FALLBACK);
        assert_eq!(h.wait(t0 + 31 * S, true), Duration::ZERO);
        // Healthy again: nothing to report twice.
        assert_eq!(h.on_check(Ok(()), t0 + 31 * S), Verdict::KeepChecking);
        assert!(!h.check_due(t0 + 60 * S));
        assert!(h.check_due(t0 + 61 * S));
    }

    #[test]
    fn a_failed_check_once_healthy_is_a_crash() {
        let t0 = Instant::now();
        let mut h = started(t0);
        assert_eq!(h.on_check(Ok(()), t0), Verdict::ReportRunning);
        assert_eq!(
            h.on_check(Err("connection refused".into()), t0 + 30 * S),
            Verdict::Crash("health check failed: connection refused".into())
        );
    }

    #[test]
    fn an_instance_never_healthy_crashes_after_its_start_timeout() {
        let t0 = Instant::now();
        let mut h = Health::new(timing(), 10 * S, &tcp(), false, t0);
        h.on_events([run_started()]);
        let refused = || Err::<(), _>("connection refused".to_string());
        // Fast while in the startup window, slower after it.
        assert_eq!(h.on_check(refused(), t0 + S), Verdict::KeepChecking);
        assert!(!h.check_due(t0 + S + Duration::from_millis(24)));
        assert!(h.check_due(t0 + S + Duration::from_millis(25)));
        assert_eq!(h.on_check(refused(), t0 + 3 * S), Verdict::KeepChecking);
        assert!(!h.check_due(t0 + 3 * S + Duration::from_millis(499)));
        assert!(h.check_due(t0 + 3 * S + Duration::from_millis(500)));
        // At the timeout itself, not yet.
        assert_eq!(h.on_check(refused(), t0 + 10 * S), Verdict::KeepChecking);
        assert_eq!(
            h.on_check(refused(), t0 + 11 * S),
            Verdict::Crash("instance never became healthy within 10s: connection refused".into())
        );
    }

    #[test]
    fn a_command_check_is_never_run_at_the_startup_interval() {
        let t0 = Instant::now();
        let checks = vec![Check::Command(Default::default())];
        let mut h = Health::new(timing(), 60 * S, &checks, false, t0);
        h.on_events([run_started()]);
        assert_eq!(h.on_check(Err("exit 1".into()), t0), Verdict::KeepChecking);
        assert!(!h.check_due(t0 + Duration::from_millis(499)));
        assert!(h.check_due(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_process_exit_is_a_crash_with_its_reason() {
        let t0 = Instant::now();
        let mut h = started(t0);
        assert_eq!(
            h.on_events([exited("")]),
            Some("exited with status 0".into())
        );
        let mut h = started(t0);
        assert_eq!(
            h.on_events([run_started(), exited("exit status 3")]),
            Some("exit status 3".into())
        );
        let mut h = Health::new(timing(), 60 * S, &tcp(), false, t0);
        assert_eq!(
            h.on_events([ShimEvent::CreateFailed {
                reason: "no such image".into()
            }]),
            Some("no such image".into())
        );
    }

    #[test]
    fn a_readopted_running_instance_is_healthy_and_checked_at_once() {
        let t0 = Instant::now();
        let mut h = Health::new(timing(), 60 * S, &tcp(), true, t0);
        assert!(h.check_due(t0));
        assert_eq!(h.on_check(Ok(()), t0), Verdict::KeepChecking);
        let mut h = Health::new(timing(), 60 * S, &tcp(), true, t0);
        assert!(matches!(
            h.on_check(Err("down".into()), t0),
            Verdict::Crash(_)
        ));
    }

    #[test]
    fn the_start_timeout_is_the_lrps_or_the_default() {
        assert_eq!(start_timeout(0, 60 * S), 60 * S);
        assert_eq!(start_timeout(1500, 60 * S), Duration::from_millis(1500));
    }
}
