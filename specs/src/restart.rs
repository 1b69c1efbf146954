//! The crash-restart policy (Diego's restart calculator, configurable).
//!
//! With the defaults: the first 3 crashes restart at once; crash number n > 3
//! waits `30 s × 2^(n−4)` after the crash (30 s, 60 s, 120 s, … capped at
//! 16 min); after 200 crashes the instance is left CRASHED for good; an
//! instance that had been RUNNING for 5 minutes starts counting from zero again.

use std::time::Duration;

use crate::models::CrashPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub immediate_restarts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub max_restarts: u32,
    pub healthy_reset: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            immediate_restarts: 3,
            base_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(16 * 60),
            max_restarts: 200,
            healthy_reset: Duration::from_secs(5 * 60),
        }
    }
}

impl RestartPolicy {
    /// The policy for an LRP: its overrides on top of the defaults (0 = default).
    pub fn from_overrides(p: Option<&CrashPolicy>) -> Self {
        let d = RestartPolicy::default();
        let Some(p) = p else { return d };
        let ms = |v: u64, dflt: Duration| {
            if v == 0 {
                dflt
            } else {
                Duration::from_millis(v)
            }
        };
        RestartPolicy {
            immediate_restarts: if p.immediate_restarts == 0 {
                d.immediate_restarts
            } else {
                p.immediate_restarts
            },
            base_backoff: ms(p.base_backoff_ms, d.base_backoff),
            max_backoff: ms(p.max_backoff_ms, d.max_backoff),
            max_restarts: if p.max_restarts == 0 {
                d.max_restarts
            } else {
                p.max_restarts
            },
            healthy_reset: ms(p.healthy_reset_ms, d.healthy_reset),
        }
    }

    /// After crash number `crash_count` (counting this one), restart at once?
    pub fn restart_immediately(&self, crash_count: u32) -> bool {
        crash_count <= self.immediate_restarts
    }

    /// How long after the crash the instance may be restarted, or `None` if
    /// it must never be restarted again.
    pub fn backoff(&self, crash_count: u32) -> Option<Duration> {
        if crash_count > self.max_restarts {
            return None;
        }
        if self.restart_immediately(crash_count) {
            return Some(Duration::ZERO);
        }
        let exponent = crash_count - self.immediate_restarts - 1;
        let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
        let backoff = self
            .base_backoff
            .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .unwrap_or(self.max_backoff);
        Some(backoff.min(self.max_backoff))
    }

    /// Should a CRASHED instance with `crash_count` crashes, the last at
    /// `crashed_at_ns`, be restarted at `now_ns`?
    pub fn should_restart(&self, now_ns: i64, crashed_at_ns: i64, crash_count: u32) -> bool {
        match self.backoff(crash_count) {
            None => false,
            Some(b) => now_ns.saturating_sub(crashed_at_ns) >= b.as_nanos() as i64,
        }
    }

    /// The crash count after a crash at `now_ns` of an instance that was
    /// RUNNING since `running_since_ns` (None if it was not running).
    pub fn next_crash_count(
        &self,
        previous: u32,
        running_since_ns: Option<i64>,
        now_ns: i64,
    ) -> u32 {
        match running_since_ns {
            Some(since) if now_ns.saturating_sub(since) >= self.healthy_reset.as_nanos() as i64 => {
                1
            }
            _ => previous.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn first_three_crashes_restart_immediately() {
        let p = RestartPolicy::default();
        for n in 1..=3 {
            assert!(p.restart_immediately(n), "crash {n}");
            assert_eq!(p.backoff(n), Some(Duration::ZERO));
            assert!(p.should_restart(0, 0, n));
        }
        assert!(!p.restart_immediately(4));
    }

    #[test]
    fn backoff_doubles_from_30s_and_caps_at_16_minutes() {
        let p = RestartPolicy::default();
        let expect = [
            (4, 30),
            (5, 60),
            (6, 120),
            (7, 240),
            (8, 480),
            (9, 960),
            (10, 960),
            (60, 960),
            (200, 960),
        ];
        for (n, secs) in expect {
            assert_eq!(p.backoff(n), Some(Duration::from_secs(secs)), "crash {n}");
        }
    }

    #[test]
    fn should_restart_waits_for_the_backoff_with_a_fake_clock() {
        let p = RestartPolicy::default();
        let crashed = 1_000 * S;
        assert!(!p.should_restart(crashed + 29 * S, crashed, 4));
        assert!(p.should_restart(crashed + 30 * S, crashed, 4));
        assert!(!p.should_restart(crashed + 59 * S, crashed, 5));
        assert!(p.should_restart(crashed + 60 * S, crashed, 5));
        assert!(!p.should_restart(crashed + 959 * S, crashed, 40));
        assert!(p.should_restart(crashed + 960 * S, crashed, 40));
    }

    #[test]
    fn gives_up_after_200_crashes() {
        let p = RestartPolicy::default();
        assert!(p.backoff(200).is_some());
        assert_eq!(p.backoff(201), None);
        assert!(!p.should_restart(i64::MAX, 0, 201));
    }

    #[test]
    fn count_resets_after_five_healthy_minutes() {
        let p = RestartPolicy::default();
        let start = 10 * S;
        assert_eq!(p.next_crash_count(7, Some(start), start + 299 * S), 8);
        assert_eq!(p.next_crash_count(7, Some(start), start + 300 * S), 1);
        assert_eq!(p.next_crash_count(7, None, start + 10_000 * S), 8);
        assert_eq!(p.next_crash_count(u32::MAX, None, 0), u32::MAX);
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let p = RestartPolicy::from_overrides(Some(&CrashPolicy {
            immediate_restarts: 1,
            base_backoff_ms: 1_000,
            max_restarts: 5,
            ..Default::default()
        }));
        assert!(p.restart_immediately(1));
        assert!(!p.restart_immediately(2));
        assert_eq!(p.backoff(2), Some(Duration::from_secs(1)));
        assert_eq!(p.backoff(3), Some(Duration::from_secs(2)));
        assert_eq!(p.backoff(6), None);
        assert_eq!(p.max_backoff, RestartPolicy::default().max_backoff);
        assert_eq!(
            RestartPolicy::from_overrides(None),
            RestartPolicy::default()
        );
    }
}
