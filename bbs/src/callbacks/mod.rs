//! Task completion callbacks, with Diego's semantics: when a Task with a
//! `completion_callback_url` becomes COMPLETED, the BBS moves it to RESOLVING (one
//! compare-and-swap: whoever wins makes the callback), POSTs its receptor
//! `TaskResponse` JSON to the URL, and then deletes the task. A 2xx is delivered and
//! a 4xx refused (final, one attempt); a connection error, a timeout or a 5xx is
//! retried with exponential backoff while the retry window (counted from the task's
//! completion) is open; when it closes the task is deleted all the same, its
//! callback logged as failed.
//!
//! Each POST is bounded by a timeout, and at most [`CallbackConfig::concurrency`]
//! are in flight at once; callbacks run on their own tasks, so a URL that hangs
//! holds up nothing but its own task's callback. The outcome goes to the task's
//! log (its `log_guid`, source `CALLBACK`), to tracing, and to the metrics
//! `bbs_task_callbacks_total{outcome}` and
//! `bbs_task_callback_duration_seconds{answer}`.
//!
//! At least once across restarts: completions are seen in the event feed, and a
//! sweep at start and every [`CallbackConfig::sweep_every`] also takes COMPLETED
//! tasks with a URL and RESOLVING ones a previous process left (see
//! [`policy::pick`]). The brain's converger leaves tasks with a callback URL alone
//! for longer than the window (`lattice_brain::converger::ConvergeConfig`).
//!
//! `policy` holds the pure decisions; `runner` applies them through two narrow
//! seams, [`TaskRecords`] (the store) and [`Poster`] (HTTP), faked in its tests.

pub mod policy;
pub mod runner;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lattice_specs::models::task::State;
use lattice_specs::models::Task;

use crate::db::{Db, DbError};
pub use policy::Answer;
pub use runner::Runner;

/// The callbacks' settings (a BBS setting; tests shorten them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// How long after a task completed its callback is retried (Diego-like default: 10 min).
    pub retry_for: Duration,
    /// Time one POST may take, connecting included.
    pub timeout: Duration,
    /// The wait before the first retry; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// POSTs in flight at once.
    pub concurrency: usize,
    /// How often the store is swept for callbacks nothing is making.
    pub sweep_every: Duration,
    /// PEM texts of CA certificates trusted for HTTPS URLs besides the system's
    /// roots (the cluster CA, operators' extra ones).
    pub extra_ca: Vec<String>,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            retry_for: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            concurrency: 32,
            sweep_every: Duration::from_secs(30),
            extra_ca: Vec::new(),
        }
    }
}

impl CallbackConfig {
    pub fn backoff(&self) -> policy::Backoff {
        policy::Backoff {
            first_backoff: self.first_backoff,
            max_backoff: self.max_backoff,
            retry_for: self.retry_for,
        }
    }

    /// How long a task may stay RESOLVING before a sweep takes it as abandoned: the
    /// last attempt starts within the window and lasts at most `timeout`, and a
    /// sweep may come later than that.
    pub fn stale_after(&self) -> Duration {
        self.retry_for + self.timeout + self.sweep_every
    }
}

/// The task records callbacks read and change.
#[async_trait]
pub trait TaskRecords: Send + Sync + 'static {
    /// COMPLETED and RESOLVING tasks with a callback URL.
    async fn callback_tasks(&self) -> Result<Vec<Task>, DbError>;
    /// COMPLETED → RESOLVING (refused when someone else moved it first).
    async fn resolving(&self, guid: &str) -> Result<Task, DbError>;
    /// Removes a RESOLVING task.
    async fn delete(&self, guid: &str) -> Result<(), DbError>;
}

#[async_trait]
impl TaskRecords for Db {
    async fn callback_tasks(&self) -> Result<Vec<Task>, DbError> {
        Ok(self
            .tasks("", "")
            .await?
            .into_iter()
            .filter(|t| {
                matches!(t.state(), State::Completed | State::Resolving)
                    && policy::url_of(t).is_some()
            })
            .collect())
    }

    async fn resolving(&self, guid: &str) -> Result<Task, DbError> {
        self.resolving_task(guid).await
    }

    async fn delete(&self, guid: &str) -> Result<(), DbError> {
        self.delete_task(guid).await
    }
}

/// Makes one POST of a JSON body; the runner bounds how long it may take.
#[async_trait]
pub trait Poster: Send + Sync + 'static {
    async fn post(&self, url: &str, body: Vec<u8>) -> Answer;
}

/// POSTs over HTTP(S) with the shared outgoing client (`lattice_tls::web`).
pub struct HttpPoster {
    client: reqwest::Client,
}

impl HttpPoster {
    /// A poster trusting the system's roots plus `extra_ca` (PEM texts). Redirects are
    /// not followed (one would turn the POST into a GET): a 3xx is the answer.
    pub fn new(extra_ca: &[String]) -> Result<HttpPoster, lattice_tls::web::ExtraCaError> {
        let client = lattice_tls::web::builder(extra_ca)?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(lattice_tls::web::ExtraCaError::Build)?;
        Ok(HttpPoster { client })
    }
}

#[async_trait]
impl Poster for HttpPoster {
    async fn post(&self, url: &str, body: Vec<u8>) -> Answer {
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            // The answer's body is not read: only its status counts.
            Ok(r) => Answer::Status(r.status().as_u16()),
            Err(e) => Answer::Unreachable(lattice_tls::web::chain(&e)),
        }
    }
}

/// Starts the callbacks of the BBS on `db`, fed by `hub`'s task events, until
/// `stop` turns true.
pub fn spawn(
    db: Db,
    hub: &crate::events::EventHub,
    logs: lattice_specs::logs::LogBuffer,
    cfg: CallbackConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, lattice_tls::web::ExtraCaError> {
    let poster = HttpPoster::new(&cfg.extra_ca)?;
    let runner = Runner::new(Arc::new(db), Arc::new(poster), cfg, logs);
    let events = hub.subscribe();
    Ok(tokio::spawn(runner.run(events, stop)))
}
