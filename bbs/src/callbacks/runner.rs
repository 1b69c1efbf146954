//! The callback runner: takes completed tasks from the event feed and from sweeps,
//! makes each task's callback on a task of its own (one per guid at a time), and
//! applies `policy`'s decisions through [`TaskRecords`] and [`Poster`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_specs::events::event::Event as Kind;
use lattice_specs::events::Event;
use lattice_specs::logs::{LogBuffer, LogMessage};
use lattice_specs::models::task::State;
use lattice_specs::models::Task;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::policy::{self, Answer, Next, Outcome};
use super::{CallbackConfig, Poster, TaskRecords};
use crate::db::DbError;
use crate::metrics;

/// The log source of callback lines in a task's log.
pub const LOG_SOURCE: &str = "CALLBACK";

/// Deleting a task after its callback: attempts, and the wait between them.
const DELETE_ATTEMPTS: u32 = 5;
const DELETE_RETRY: Duration = Duration::from_secs(1);

/// Makes completion callbacks; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    tasks: Arc<dyn TaskRecords>,
    poster: Arc<dyn Poster>,
    cfg: CallbackConfig,
    logs: LogBuffer,
    /// Guids whose callback runs here now.
    in_flight: Mutex<HashSet<String>>,
    /// POSTs in flight at once.
    permits: Semaphore,
}

/// Takes a guid off the in-flight set when its worker ends (also when aborted).
struct InFlight {
    inner: Arc<Inner>,
    guid: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.lock().unwrap().remove(&self.guid);
    }
}

async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A task that just became COMPLETED with a callback URL, from an event.
fn completed_with_url(e: &Event) -> Option<&Task> {
    match &e.event {
        Some(Kind::TaskChanged(c)) => c
            .after
            .as_ref()
            .filter(|t| t.state() == State::Completed && policy::url_of(t).is_some()),
        _ => None,
    }
}

impl Runner {
    pub fn new(
        tasks: Arc<dyn TaskRecords>,
        poster: Arc<dyn Poster>,
        cfg: CallbackConfig,
        logs: LogBuffer,
    ) -> Runner {
        let permits = Semaphore::new(cfg.concurrency.max(1));
        Runner {
            inner: Arc::new(Inner {
                tasks,
                poster,
                cfg,
                logs,
                in_flight: Mutex::new(HashSet::new()),
                permits,
            }),
        }
    }

    /// Follows `events` and sweeps (the first sweep at once) until `stop` turns true
    /// or the feed ends; callbacks still running then are dropped (a later process's
    /// first sweep makes them again).
    pub async fn run(
        self,
        mut events: broadcast::Receiver<Arc<Event>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut workers = JoinSet::new();
        let mut sweep = tokio::time::interval(self.inner.cfg.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    match self.sweep(first, &mut workers).await {
                        Ok(()) => first = false,
                        Err(e) => tracing::warn!(error = %e, "sweeping for task callbacks"),
                    }
                }
                e = events.recv() => match e {
                    Ok(e) => {
                        if let Some(t) = completed_with_url(&e) {
                            self.submit(t.clone(), &mut workers);
                        }
                    }
                    // Missed events: the next sweep finds what they said.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "task callbacks lagged behind the events");
                        sweep.reset_immediately();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(_) = workers.join_next(), if !workers.is_empty() => {}
                _ = stopping(&mut stop) => break,
            }
        }
        workers.shutdown().await;
    }

    /// Starts `task`'s callback unless it runs here already.
    fn submit(&self, task: Task, workers: &mut JoinSet<()>) {
        if !self
            .inner
            .in_flight
            .lock()
            .unwrap()
            .insert(task.task_guid.clone())
        {
            return;
        }
        let guard = InFlight {
            inner: self.inner.clone(),
            guid: task.task_guid.clone(),
        };
        let span = tracing::info_span!("task_callback", task_guid = %task.task_guid);
        let inner = self.inner.clone();
        workers.spawn(
            async move {
                let _guard = guard;
                inner.deliver(task).await
            }
            .instrument(span),
        );
    }

    /// Starts the callbacks of the store's tasks that [`policy::pick`] takes.
    async fn sweep(&self, first: bool, workers: &mut JoinSet<()>) -> Result<(), DbError> {
        let tasks = self.inner.tasks.callback_tasks().await?;
        let now = lattice_specs::now_nanos();
        let stale = self.inner.cfg.stale_after();
        for t in tasks {
            let here = self.inner.in_flight.lock().unwrap().contains(&t.task_guid);
            if policy::pick(&t, here, first, now, stale) {
                self.submit(t, workers);
            }
        }
        Ok(())
    }

    /// Guids whose callback runs here now, sorted.
    #[cfg(test)]
    fn in_flight(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .in_flight
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl Inner {
    /// One task's callback, from claiming it to deleting it.
    async fn deliver(&self, task: Task) {
        let guid = task.task_guid.clone();
        let Some(url) = policy::url_of(&task).map(String::from) else {
            return;
        };
        let task = match task.state() {
            State::Completed => match self.tasks.resolving(&guid).await {
                Ok(t) => t,
                // Someone else resolved it first (another BBS, a user's delete), or
                // the store failed: then a later sweep tries again.
                Err(e) => {
                    tracing::debug!(error = %e, "not making the callback");
                    return;
                }
            },
            State::Resolving => task,
            _ => return,
        };
        let b = self.cfg.backoff();
        let window_end = Instant::now()
            + policy::remaining(&b, policy::completed_at(&task), lattice_specs::now_nanos());
        let body = policy::body(&task);
        let started = Instant::now();
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let answer = self.attempt(&url, &body).await;
            let left = window_end.saturating_duration_since(Instant::now());
            match policy::next(&b, answer.clone(), attempts, left) {
                Next::Finish(o) => break o,
                Next::Retry(wait) => {
                    tracing::debug!(%answer, attempts, ?wait, "retrying the callback");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        self.report(&task, &url, &outcome, started.elapsed());
        self.remove(&guid).await;
    }

    /// One POST, bounded by the timeout, holding one of the permits.
    async fn attempt(&self, url: &str, body: &[u8]) -> Answer {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the permits are never closed");
        let began = Instant::now();
        let post = self.poster.post(url, body.to_vec());
        let answer = tokio::time::timeout(self.cfg.timeout, post)
            .await
            .unwrap_or(Answer::TimedOut(self.cfg.timeout));
        metrics::TASK_CALLBACK_SECONDS
            .with_label_values(&[answer.class()])
            .observe(began.elapsed().as_secs_f64());
        answer
    }

    /// The outcome in the task's log, tracing and the metrics.
    fn report(&self, task: &Task, url: &str, outcome: &Outcome, took: Duration) {
        let (line, failure) = policy::log_line(url, outcome, took);
        metrics::TASK_CALLBACKS
            .with_label_values(&[outcome.label()])
            .inc();
        if failure {
            tracing::warn!(outcome = outcome.label(), "{line}");
        } else {
            tracing::info!(outcome = outcome.label(), "{line}");
        }
        let log_guid = task.definition.as_ref().map(|d| d.log_guid.as_str());
        if let Some(g) = log_guid.filter(|g| !g.is_empty()) {
            let mut m = LogMessage::new(g, LOG_SOURCE, line);
            if failure {
                m.stream = "stderr".into();
            }
            self.logs.push(m);
        }
    }

    /// Deletes the resolved task, retrying store failures a few times (past them,
    /// a sweep finds it stale and makes the callback again: at least once).
    async fn remove(&self, guid: &str) {
        for attempt in 1..=DELETE_ATTEMPTS {
            match self.tasks.delete(guid).await {
                Ok(()) => return,
                Err(DbError::NotFound { .. }) => return,
                Err(e @ DbError::Refused(_)) => {
                    tracing::warn!(error = %e, "the resolved task cannot be deleted");
                    return;
                }
                Err(e) if attempt == DELETE_ATTEMPTS => {
                    tracing::warn!(error = %e, "the resolved task could not be deleted; a sweep will retry")
                }
                Err(e) => {
                    tracing::debug!(error = %e, "deleting the resolved task; retrying");
                    tokio::time::sleep(DELETE_RETRY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
