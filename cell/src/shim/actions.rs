//! The action interpreter: what Serial, Parallel, Codependent, Timeout, Try and
//! EmitProgress mean, as logic over [`Steps`], the trait through which the leaves (Run,
//! Download, Upload, progress messages, log lines) reach the world. The shim's real
//! steps are in [`super::context`]; the tests drive the interpreter with a fake.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use lattice_specs::models::{self, action::Action as A};
use lattice_specs::redact;
use tokio_util::sync::CancellationToken;

use super::process::RunError;

/// What the interpreter asks of the world: the leaves of an action tree.
pub(crate) trait Steps {
    /// Runs a Run action's process to its end; when `cancel` fires, stops it (and its
    /// error then says it was cancelled).
    async fn run(&self, r: &models::RunAction, cancel: CancellationToken) -> Result<(), RunError>;
    /// Whether the container's `path` is on a read-only volume.
    fn read_only(&self, path: &str) -> bool;
    /// Downloads an artifact into the container.
    async fn download(&self, d: &models::DownloadAction) -> anyhow::Result<()>;
    /// Uploads a file of the container.
    async fn upload(&self, u: &models::UploadAction) -> anyhow::Result<()>;
    /// Runs a repository operation (the repository helper) on the container's files.
    async fn repository(&self, r: &models::RepositoryAction) -> anyhow::Result<()>;
    /// Reports an EmitProgress message to the rep.
    fn progress(&self, message: &str);
    /// Sends a line to the container's log, under `source` (the action's own; the
    /// container's when empty), on `stream` (`stdout` or `stderr`).
    async fn log(&self, source: &str, stream: &str, line: &str);
}

/// Why an action failed; its text is the failure reason the rep reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ActionError {
    /// An action of no kind.
    #[error("empty action")]
    Empty,
    /// A Timeout or EmitProgress (named) around nothing.
    #[error("{0} without an action")]
    NoInner(&'static str),
    /// The work was stopped before this action began, or while it ran.
    #[error("cancelled")]
    Cancelled,
    /// A Codependent group ended because one of its actions exited, successfully.
    #[error("codependent step exited")]
    CodependentExited,
    /// A Timeout's action ran past its limit (and was stopped).
    #[error("timed out after {}", humantime(*.0))]
    TimedOut(Duration),
    /// The failures of a Parallel's actions, in their order.
    #[error("{}", join(.0))]
    Parallel(Vec<ActionError>),
    /// An EmitProgress's failure, with its failure message prefix.
    #[error("{prefix}: {error}")]
    Prefixed {
        prefix: String,
        error: Box<ActionError>,
    },
    /// A Download into a read-only volume.
    #[error("download into {0}: it is on a read-only volume")]
    ReadOnly(String),
    /// A Download that failed.
    #[error("download {from} failed: {error}")]
    Download { from: String, error: String },
    /// An Upload that failed.
    #[error("upload {from} failed: {error}")]
    Upload { from: String, error: String },
    /// A Repository action that failed.
    #[error("repository {op} of {path} failed: {error}")]
    Repository {
        op: String,
        path: String,
        error: String,
    },
    /// A Run that failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

fn join(errors: &[ActionError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

pub(crate) type ActionResult = Result<(), ActionError>;

/// Runs `action` through `steps` until it ends or `cancel` stops it.
pub(crate) fn run_action<'a, S: Steps>(
    steps: &'a S,
    action: &'a models::Action,
    cancel: CancellationToken,
) -> LocalBoxFuture<'a, ActionResult> {
    async move {
        let Some(a) = &action.action else {
            return Err(ActionError::Empty);
        };
        if cancel.is_cancelled() {
            return Err(ActionError::Cancelled);
        }
        match a {
            A::Run(r) => Ok(steps.run(r, cancel).await?),
            A::Serial(s) => {
                for a in &s.actions {
                    run_action(steps, a, cancel.clone()).await?;
                }
                Ok(())
            }
            A::Parallel(p) => parallel(steps, &p.actions, cancel).await,
            A::Codependent(c) => codependent(steps, &c.actions, cancel).await,
            A::Try(t) => try_action(steps, t, cancel).await,
            A::Timeout(t) => timeout(steps, t, cancel).await,
            A::EmitProgress(e) => emit_progress(steps, e, cancel).await,
            A::Download(d) => download(steps, d, cancel).await,
            A::Upload(u) => {
                let fut = steps.upload(u);
                tokio::select! {
                    r = fut => r.map_err(|e| ActionError::Upload {
                        from: u.from.clone(),
                        error: redact::urls(&format!("{e:#}")),
                    }),
                    _ = cancel.cancelled() => Err(ActionError::Cancelled),
                }
            }
            A::Repository(r) => repository(steps, r, cancel).await,
        }
    }
    .boxed_local()
}

/// All the actions at once; fails, once every one has ended, if any failed.
async fn parallel<S: Steps>(
    steps: &S,
    actions: &[models::Action],
    cancel: CancellationToken,
) -> ActionResult {
    let all =
        futures::future::join_all(actions.iter().map(|a| run_action(steps, a, cancel.clone())))
            .await;
    let errors: Vec<ActionError> = all.into_iter().filter_map(|r| r.err()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ActionError::Parallel(errors))
    }
}

/// All the actions at once, until the first ends (whichever way): then the others are
/// stopped and waited for, and the group fails with the first's error, or because it
/// exited.
async fn codependent<S: Steps>(
    steps: &S,
    actions: &[models::Action],
    cancel: CancellationToken,
) -> ActionResult {
    if actions.is_empty() {
        return Ok(());
    }
    let group = cancel.child_token();
    let running: Vec<LocalBoxFuture<'_, ActionResult>> = actions
        .iter()
        .map(|a| run_action(steps, a, group.clone()))
        .collect();
    let (first, _, rest) = futures::future::select_all(running).await;
    // The first to finish ends the group: stop the others and wait for them.
    group.cancel();
    futures::future::join_all(rest).await;
    match first {
        Ok(()) => Err(ActionError::CodependentExited),
        Err(e) => Err(e),
    }
}

/// Its action, whose failure is logged and ignored (but not a cancellation).
async fn try_action<S: Steps>(
    steps: &S,
    t: &models::TryAction,
    cancel: CancellationToken,
) -> ActionResult {
    if let Some(inner) = &t.action {
        if let Err(e) = run_action(steps, inner, cancel.clone()).await {
            steps
                .log(&t.log_source, "stderr", &format!("try: {e} (ignored)"))
                .await;
        }
    }
    if cancel.is_cancelled() {
        return Err(ActionError::Cancelled);
    }
    Ok(())
}

/// Its action, stopped (and waited for) once the limit passes.
async fn timeout<S: Steps>(
    steps: &S,
    t: &models::TimeoutAction,
    cancel: CancellationToken,
) -> ActionResult {
    let inner = t.action.as_deref().ok_or(ActionError::NoInner("timeout"))?;
    let limit = Duration::from_nanos(t.timeout.max(0) as u64);
    let group = cancel.child_token();
    let fut = run_action(steps, inner, group.clone());
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => r,
        _ = tokio::time::sleep(limit) => {
            group.cancel();
            let _ = fut.await;
            Err(ActionError::TimedOut(limit))
        }
    }
}

/// Its action, between a start message and a success message (progress and stdout), or
/// a failure (prefixed, to stderr).
async fn emit_progress<S: Steps>(
    steps: &S,
    e: &models::EmitProgressAction,
    cancel: CancellationToken,
) -> ActionResult {
    if !e.start_message.is_empty() {
        steps.progress(&e.start_message);
        steps.log(&e.log_source, "stdout", &e.start_message).await;
    }
    let inner = e
        .action
        .as_deref()
        .ok_or(ActionError::NoInner("emit_progress"))?;
    match run_action(steps, inner, cancel).await {
        Ok(()) => {
            if !e.success_message.is_empty() {
                steps.progress(&e.success_message);
                steps.log(&e.log_source, "stdout", &e.success_message).await;
            }
            Ok(())
        }
        Err(err) => {
            let err = if e.failure_message_prefix.is_empty() {
                err
            } else {
                ActionError::Prefixed {
                    prefix: e.failure_message_prefix.clone(),
                    error: Box::new(err),
                }
            };
            steps.log(&e.log_source, "stderr", &err.to_string()).await;
            Err(err)
        }
    }
}

/// A download, refused into a read-only volume; cancellation abandons it.
async fn download<S: Steps>(
    steps: &S,
    d: &models::DownloadAction,
    cancel: CancellationToken,
) -> ActionResult {
    if steps.read_only(&d.to) {
        return Err(ActionError::ReadOnly(d.to.clone()));
    }
    let fut = steps.download(d);
    tokio::select! {
        r = fut => r.map_err(|e| ActionError::Download {
            from: redact::urls(&d.from),
            error: redact::urls(&format!("{e:#}")),
        }),
        _ = cancel.cancelled() => Err(ActionError::Cancelled),
    }
}

/// A repository operation; a restore into a read-only volume is refused; cancellation
/// abandons it (the step's helper dies with it).
async fn repository<S: Steps>(
    steps: &S,
    r: &models::RepositoryAction,
    cancel: CancellationToken,
) -> ActionResult {
    let fail = |error: String| ActionError::Repository {
        op: r.op.clone(),
        path: r.path.clone(),
        error,
    };
    if r.op == "restore" && steps.read_only(&r.path) {
        return Err(fail("it is on a read-only volume".into()));
    }
    tokio::select! {
        res = steps.repository(r) => res.map_err(|e| fail(redact::urls(&format!("{e:#}")))),
        _ = cancel.cancelled() => Err(ActionError::Cancelled),
    }
}

/// A duration as a timeout's failure says it: whole seconds, or else milliseconds.
fn humantime(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests;
