//! Pure decisions of Task completion callbacks: what an answer means, how long to
//! wait before the next attempt, when to give up, which tasks a sweep takes, what is
//! POSTed and what the task's log says. No I/O here; the runner (`super::runner`)
//! makes the requests and applies these.

use std::time::Duration;

use lattice_specs::models::task::State;
use lattice_specs::models::Task;
use lattice_specs::receptor::TaskResponse;

/// Retry timing: attempts back off from `first_backoff`, doubling up to
/// `max_backoff`, for `retry_for` counted from the task's completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_for: Duration,
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server answered with this status.
    Status(u16),
    /// No answer: the connection (or TLS handshake) failed; the error's text.
    Unreachable(String),
    /// No answer within the per-request timeout.
    TimedOut(Duration),
}

impl Answer {
    /// A short, bounded name for metrics: `2xx` … `5xx`, `unreachable`, `timeout`.
    pub fn class(&self) -> &'static str {
        match self {
            Answer::Status(s) => match s / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                _ => "5xx",
            },
            Answer::Unreachable(_) => "unreachable",
            Answer::TimedOut(_) => "timeout",
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Status(s) => write!(f, "{s}"),
            Answer::Unreachable(e) => write!(f, "unreachable ({e})"),
            Answer::TimedOut(t) => write!(f, "no answer within {}", human(*t)),
        }
    }
}

/// How a callback ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered { status: u16, attempts: u32 },
    /// A final answer that is not a success (4xx, or a 1xx/3xx left unfollowed):
    /// not retried, as Diego does.
    Refused { status: u16, attempts: u32 },
    /// Connection errors, timeouts or 5xx until the retry window closed.
    GaveUp { last: Answer, attempts: u32 },
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Refused { .. } => "refused",
            Outcome::GaveUp { .. } => "failed",
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Done: resolve and delete the task.
    Finish(Outcome),
    /// Try again after this long.
    Retry(Duration),
}

/// The wait before attempt `attempts + 1`: `first_backoff` doubled per earlier
/// retry, at most `max_backoff`.
pub fn backoff(b: &Backoff, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    b.first_backoff
        .saturating_mul(1u32 << doublings)
        .min(b.max_backoff)
}

/// After attempt number `attempts` answered `answer`, with `remaining` of the retry
/// window left: finish, or retry after a backoff that still fits in the window
/// (a retry that would start after the window closed is not made).
pub fn next(b: &Backoff, answer: Answer, attempts: u32, remaining: Duration) -> Next {
    match answer {
        Answer::Status(s) if (200..300).contains(&s) => Next::Finish(Outcome::Delivered {
            status: s,
            attempts,
        }),
        Answer::Status(s) if s < 500 => Next::Finish(Outcome::Refused {
            status: s,
            attempts,
        }),
        last => {
            let wait = backoff(b, attempts);
            if wait > remaining {
                Next::Finish(Outcome::GaveUp { last, attempts })
            } else {
                Next::Retry(wait)
            }
        }
    }
}

/// How much of the retry window is left at `now` (unix ns) for a task that
/// completed at `completed_at` (unix ns): nothing once it has closed.
pub fn remaining(b: &Backoff, completed_at: i64, now: i64) -> Duration {
    let elapsed = Duration::from_nanos(now.saturating_sub(completed_at).max(0) as u64);
    b.retry_for.saturating_sub(elapsed)
}

/// When the task completed (unix ns).
pub fn completed_at(t: &Task) -> i64 {
    if t.first_completed_at > 0 {
        t.first_completed_at
    } else {
        t.updated_at
    }
}

/// The task's callback URL, if it has one.
pub fn url_of(t: &Task) -> Option<&str> {
    t.definition
        .as_ref()
        .map(|d| d.completion_callback_url.as_str())
        .filter(|u| !u.is_empty())
}

/// Should a sweep (at `now`, unix ns) start a callback for `t`? A COMPLETED task
/// with a URL, always; a RESOLVING one (its callback started and not finished) on
/// the first sweep after start (the process that started it may be gone), or later
/// once it has been resolving for `stale_after` (whoever started it is not coming
/// back). Tasks whose callback runs here already are never taken twice.
pub fn pick(
    t: &Task,
    in_flight_here: bool,
    first_sweep: bool,
    now: i64,
    stale_after: Duration,
) -> bool {
    if in_flight_here || url_of(t).is_none() {
        return false;
    }
    match t.state() {
        State::Completed => true,
        State::Resolving => {
            first_sweep
                || Duration::from_nanos(now.saturating_sub(t.updated_at).max(0) as u64)
                    >= stale_after
        }
        _ => false,
    }
}

/// The POSTed body: the task as `GET /v1/tasks/GUID` shows it, in its COMPLETED
/// state (the record itself is RESOLVING while the callback is made).
pub fn body(t: &Task) -> Vec<u8> {
    let mut r = TaskResponse::from(t.clone());
    r.state = lattice_specs::task::state_name(State::Completed).to_string();
    serde_json::to_vec(&r).expect("a TaskResponse serializes")
}

/// The URL as logs show it: no user info, query or fragment (they may hold secrets).
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(an invalid URL)".to_string(),
    }
}

/// The line in the task's log (source `CALLBACK`) and whether it reports a failure.
pub fn log_line(url: &str, outcome: &Outcome, took: Duration) -> (String, bool) {
    let url = shown_url(url);
    let tries = |n: u32| {
        if n == 1 {
            "1 attempt".to_string()
        } else {
            format!("{n} attempts")
        }
    };
    match outcome {
        Outcome::Delivered { status, attempts } => (
            format!(
                "completion callback to {url}: {status} after {}",
                tries(*attempts)
            ),
            false,
        ),
        Outcome::Refused { status, attempts } => (
            format!(
                "completion callback to {url} refused: {status} after {} (not retried)",
                tries(*attempts)
            ),
            true,
        ),
        Outcome::GaveUp { last, attempts } => (
            format!(
                "completion callback to {url} failed: {last}, gave up after {} ({})",
                human(took),
                tries(*attempts)
            ),
            true,
        ),
    }
}

/// A duration as people write it: `450ms`, `12s`, `10m`, `1h30m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        first_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
        retry_for: Duration::from_secs(600),
    };
    const LOTS: Duration = Duration::from_secs(3600);

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(&B, n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(&B, u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn success_and_client_errors_are_final_server_errors_and_no_answer_retry() {
        assert_eq!(
            next(&B, Answer::Status(200), 2, LOTS),
            Next::Finish(Outcome::Delivered {
                status: 200,
                attempts: 2
            })
        );
        assert_eq!(
            next(&B, Answer::Status(204), 1, Duration::ZERO),
            Next::Finish(Outcome::Delivered {
                status: 204,
                attempts: 1
            })
        );
        for s in [400, 404, 410, 429, 302] {
            assert_eq!(
                next(&B, Answer::Status(s), 1, LOTS),
                Next::Finish(Outcome::Refused {
                    status: s,
                    attempts: 1
                }),
                "{s}"
            );
        }
        for a in [
            Answer::Status(500),
            Answer::Status(503),
            Answer::Unreachable("connection refused".into()),
            Answer::TimedOut(Duration::from_secs(10)),
        ] {
            assert_eq!(
                next(&B, a.clone(), 3, LOTS),
                Next::Retry(Duration::from_secs(2)),
                "{a}"
            );
        }
    }

    #[test]
    fn gives_up_when_the_next_wait_would_end_after_the_window() {
        assert_eq!(
            next(&B, Answer::Status(503), 1, Duration::from_millis(500)),
            Next::Retry(Duration::from_millis(500))
        );
        assert_eq!(
            next(&B, Answer::Status(503), 1, Duration::from_millis(499)),
            Next::Finish(Outcome::GaveUp {
                last: Answer::Status(503),
                attempts: 1
            })
        );
        // Summed up: with a 10 s window, the attempts are at 0, .5, 1.5, 3.5, 7.5 s.
        let window = Backoff {
            retry_for: Duration::from_secs(10),
            ..B
        };
        let (mut at, mut attempts) = (Duration::ZERO, 0);
        let outcome = loop {
            attempts += 1;
            match next(
                &window,
                Answer::Status(503),
                attempts,
                window.retry_for.saturating_sub(at),
            ) {
                Next::Retry(w) => at += w,
                Next::Finish(o) => break o,
            }
        };
        assert_eq!(at, Duration::from_millis(7500));
        assert_eq!(outcome.label(), "failed");
        assert!(matches!(outcome, Outcome::GaveUp { attempts: 5, .. }));
    }

    #[test]
    fn the_window_counts_from_completion_and_never_goes_negative() {
        let s = 1_000_000_000i64;
        assert_eq!(remaining(&B, 100 * s, 160 * s), Duration::from_secs(540));
        assert_eq!(remaining(&B, 100 * s, 900 * s), Duration::ZERO);
        // A clock that went back: the whole window.
        assert_eq!(remaining(&B, 100 * s, 90 * s), B.retry_for);
        let mut t = Task {
            updated_at: 7,
            ..Default::default()
        };
        assert_eq!(completed_at(&t), 7);
        t.first_completed_at = 5;
        assert_eq!(completed_at(&t), 5);
    }

    fn task(state: State, url: &str, updated_at: i64) -> Task {
        let mut t = lattice_specs::testing::task("t1", state, "c1");
        t.definition.get_or_insert_default().completion_callback_url = url.into();
        t.updated_at = updated_at;
        t
    }

    #[test]
    fn sweeps_take_completed_tasks_and_abandoned_resolving_ones() {
        let s = 1_000_000_000i64;
        let stale = Duration::from_secs(700);
        let now = 1000 * s;
        let url = "http://x/cb";
        assert!(pick(
            &task(State::Completed, url, now),
            false,
            false,
            now,
            stale
        ));
        assert!(!pick(
            &task(State::Completed, url, now),
            true,
            false,
            now,
            stale
        ));
        assert!(!pick(
            &task(State::Completed, "", now),
            false,
            true,
            now,
            stale
        ));
        for st in [State::Pending, State::Running] {
            assert!(!pick(&task(st, url, 0), false, true, now, stale));
        }
        let fresh = task(State::Resolving, url, now - 10 * s);
        assert!(pick(&fresh, false, true, now, stale), "first sweep");
        assert!(
            !pick(&fresh, false, false, now, stale),
            "someone works on it"
        );
        assert!(!pick(&fresh, true, true, now, stale), "in flight here");
        let abandoned = task(State::Resolving, url, now - 700 * s);
        assert!(pick(&abandoned, false, false, now, stale));
    }

    #[test]
    fn the_body_is_the_task_response_of_the_completed_task() {
        let mut t = task(State::Resolving, "http://x/cb", 1);
        t.failed = true;
        t.failure_reason = "exit status 3".into();
        t.result = "the result".into();
        let v: serde_json::Value = serde_json::from_slice(&body(&t)).unwrap();
        assert_eq!(v["task_guid"], "t1");
        assert_eq!(v["state"], "COMPLETED");
        assert_eq!(v["failed"], true);
        assert_eq!(v["failure_reason"], "exit status 3");
        assert_eq!(v["result"], "the result");
        assert_eq!(v["completion_callback_url"], "http://x/cb");
        assert!(v.get("owner").is_none());
    }

    #[test]
    fn log_lines_name_the_outcome_without_the_urls_secrets() {
        let url = "https://user:pw@example.com:8443/done?token=s3cret#x";
        assert_eq!(shown_url(url), "https://example.com:8443/done");
        assert_eq!(shown_url("not a url"), "(an invalid URL)");
        let ok = Outcome::Delivered {
            status: 200,
            attempts: 2,
        };
        assert_eq!(
            log_line(url, &ok, Duration::from_secs(1)),
            (
                "completion callback to https://example.com:8443/done: 200 after 2 attempts"
                    .to_string(),
                false
            )
        );
        let refused = Outcome::Refused {
            status: 404,
            attempts: 1,
        };
        let (line, failure) = log_line(url, &refused, Duration::ZERO);
        assert!(failure);
        assert!(
            line.ends_with("refused: 404 after 1 attempt (not retried)"),
            "{line}"
        );
        let gave_up = Outcome::GaveUp {
            last: Answer::Status(503),
            attempts: 24,
        };
        let (line, failure) = log_line(url, &gave_up, Duration::from_secs(600));
        assert!(failure);
        assert!(
            line.ends_with("failed: 503, gave up after 10m (24 attempts)"),
            "{line}"
        );
        assert!(!line.contains("s3cret") && !line.contains("pw"), "{line}");
        let timed_out = Outcome::GaveUp {
            last: Answer::TimedOut(Duration::from_secs(10)),
            attempts: 1,
        };
        let (line, _) = log_line(url, &timed_out, Duration::from_millis(10_500));
        assert!(
            line.ends_with("failed: no answer within 10s, gave up after 10s (1 attempt)"),
            "{line}"
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human(Duration::from_millis(450)), "450ms");
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(3661)), "1h1m1s");
    }

    #[test]
    fn answers_have_bounded_metric_classes() {
        assert_eq!(Answer::Status(201).class(), "2xx");
        assert_eq!(Answer::Status(404).class(), "4xx");
        assert_eq!(Answer::Status(599).class(), "5xx");
        assert_eq!(Answer::Unreachable("x".into()).class(), "unreachable");
        assert_eq!(Answer::TimedOut(Duration::ZERO).class(), "timeout");
    }
}
