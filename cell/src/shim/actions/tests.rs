//! The interpreter's semantics, driven by a fake [`Steps`] on paused time: every test
//! runs in milliseconds however long its actions "take".

use std::cell::RefCell;

use tokio::time::Instant;

use super::*;

/// What the fake was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    /// A Run began (its path).
    Started(String),
    /// A Run ended by itself.
    Exited(String),
    /// A Run was stopped by its cancellation.
    Stopped(String),
    Downloaded(String),
    Uploaded(String),
    /// A repository operation (op, path).
    Repository(String, String),
    Progress(String),
    /// A log line: source (as the action names it), stream, line.
    Log(String, String, String),
}

/// A fake world. A Run's args script it: `[millis, status]` (it takes that long, then
/// exits with that status; 143 when stopped first). Transfers take [`TRANSFER`], and
/// fail when their source contains "bad"; paths under `/ro` are on a read-only volume.
#[derive(Default)]
struct Fake {
    did: RefCell<Vec<Did>>,
}

const TRANSFER: Duration = Duration::from_millis(500);

impl Fake {
    fn did(&self) -> Vec<Did> {
        self.did.borrow().clone()
    }

    fn record(&self, d: Did) {
        self.did.borrow_mut().push(d);
    }
}

impl Steps for Fake {
    async fn run(&self, r: &models::RunAction, cancel: CancellationToken) -> Result<(), RunError> {
        let millis: u64 = r.args[0].parse().unwrap();
        let status: i32 = r.args[1].parse().unwrap();
        self.record(Did::Started(r.path.clone()));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(millis)) => {
                self.record(Did::Exited(r.path.clone()));
                match status {
                    0 => Ok(()),
                    s => Err(RunError::Exited(s)),
                }
            }
            _ = cancel.cancelled() => {
                self.record(Did::Stopped(r.path.clone()));
                Err(RunError::Cancelled(143))
            }
        }
    }

    fn read_only(&self, path: &str) -> bool {
        path.starts_with("/ro")
    }

    async fn download(&self, d: &models::DownloadAction) -> anyhow::Result<()> {
        tokio::time::sleep(TRANSFER).await;
        // As reqwest says it: with the URL.
        anyhow::ensure!(
            !d.from.contains("bad"),
            "404 Not Found for url ({})",
            d.from
        );
        self.record(Did::Downloaded(d.from.clone()));
        Ok(())
    }

    async fn upload(&self, u: &models::UploadAction) -> anyhow::Result<()> {
        tokio::time::sleep(TRANSFER).await;
        anyhow::ensure!(!u.from.contains("bad"), "connection refused");
        self.record(Did::Uploaded(u.from.clone()));
        Ok(())
    }

    async fn repository(&self, r: &models::RepositoryAction) -> anyhow::Result<()> {
        tokio::time::sleep(TRANSFER).await;
        anyhow::ensure!(
            !r.path.contains("bad"),
            "the repository refused the cluster's backup key: wrong password"
        );
        self.record(Did::Repository(r.op.clone(), r.path.clone()));
        Ok(())
    }

    fn progress(&self, message: &str) {
        self.record(Did::Progress(message.to_string()));
    }

    async fn log(&self, source: &str, stream: &str, line: &str) {
        self.record(Did::Log(source.into(), stream.into(), line.into()));
    }
}

fn action(a: A) -> models::Action {
    models::Action { action: Some(a) }
}

/// A Run named `path` that takes `millis` and exits with `status`.
fn run(path: &str, millis: u64, status: i32) -> models::Action {
    action(A::Run(models::RunAction {
        path: path.into(),
        args: vec![millis.to_string(), status.to_string()],
        ..Default::default()
    }))
}

fn serial(actions: Vec<models::Action>) -> models::Action {
    action(A::Serial(models::SerialAction {
        actions,
        ..Default::default()
    }))
}

fn parallel(actions: Vec<models::Action>) -> models::Action {
    action(A::Parallel(models::ParallelAction {
        actions,
        ..Default::default()
    }))
}

fn codependent(actions: Vec<models::Action>) -> models::Action {
    action(A::Codependent(models::CodependentAction {
        actions,
        ..Default::default()
    }))
}

fn timeout(inner: Option<models::Action>, limit: Duration) -> models::Action {
    action(A::Timeout(Box::new(models::TimeoutAction {
        action: inner.map(Box::new),
        timeout: limit.as_nanos() as i64,
        ..Default::default()
    })))
}

fn try_(inner: models::Action, log_source: &str) -> models::Action {
    action(A::Try(Box::new(models::TryAction {
        action: Some(Box::new(inner)),
        log_source: log_source.into(),
    })))
}

fn progress(
    inner: Option<models::Action>,
    start: &str,
    success: &str,
    prefix: &str,
) -> models::Action {
    action(A::EmitProgress(Box::new(models::EmitProgressAction {
        action: inner.map(Box::new),
        start_message: start.into(),
        success_message: success.into(),
        failure_message_prefix: prefix.into(),
        log_source: "STG".into(),
    })))
}

fn download(from: &str, to: &str) -> models::Action {
    action(A::Download(models::DownloadAction {
        from: from.into(),
        to: to.into(),
        ..Default::default()
    }))
}

fn upload(from: &str) -> models::Action {
    action(A::Upload(models::UploadAction {
        from: from.into(),
        to: "http://blobs/x".into(),
        ..Default::default()
    }))
}

/// Runs `a` on the fake to its end: its result as text, what the fake did and how
/// long it took (paused time).
async fn interpret(a: &models::Action) -> (Result<(), String>, Vec<Did>, Duration) {
    interpret_until(a, CancellationToken::new()).await
}

async fn interpret_until(
    a: &models::Action,
    cancel: CancellationToken,
) -> (Result<(), String>, Vec<Did>, Duration) {
    let fake = Fake::default();
    let began = Instant::now();
    let result = run_action(&fake, a, cancel).await;
    (
        result.map_err(|e| e.to_string()),
        fake.did(),
        began.elapsed(),
    )
}

fn started(p: &str) -> Did {
    Did::Started(p.into())
}
fn exited(p: &str) -> Did {
    Did::Exited(p.into())
}
fn stopped(p: &str) -> Did {
    Did::Stopped(p.into())
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn an_action_of_no_kind_fails() {
    let (r, did, _) = interpret(&models::Action { action: None }).await;
    assert_eq!(r, Err("empty action".into()));
    assert!(did.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_succeeds_or_fails_with_its_exit_status() {
    let (r, did, took) = interpret(&run("a", 100, 0)).await;
    assert_eq!(r, Ok(()));
    assert_eq!(did, vec![started("a"), exited("a")]);
    assert_eq!(took, ms(100));
    let (r, _, _) = interpret(&run("a", 100, 2)).await;
    assert_eq!(r, Err("exited with status 2".into()));
}

#[tokio::test(start_paused = true)]
async fn serial_runs_in_order_and_stops_at_the_first_failure() {
    let a = serial(vec![run("a", 10, 0), run("b", 20, 2), run("c", 30, 0)]);
    let (r, did, took) = interpret(&a).await;
    assert_eq!(r, Err("exited with status 2".into()));
    assert_eq!(
        did,
        vec![started("a"), exited("a"), started("b"), exited("b")]
    );
    assert_eq!(took, ms(30));

    let all = serial(vec![run("a", 10, 0), run("b", 20, 0)]);
    let (r, did, took) = interpret(&all).await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        did,
        vec![started("a"), exited("a"), started("b"), exited("b")]
    );
    assert_eq!(took, ms(30));

    assert_eq!(interpret(&serial(vec![])).await.0, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn parallel_waits_for_all_and_fails_if_any_failed() {
    let a = parallel(vec![run("a", 10, 1), run("b", 200, 0), run("c", 50, 3)]);
    let (r, did, took) = interpret(&a).await;
    // Every failure, in the actions' order; the one that succeeded ran to its end.
    assert_eq!(r, Err("exited with status 1; exited with status 3".into()));
    assert_eq!(
        did,
        vec![
            started("a"),
            started("b"),
            started("c"),
            exited("a"),
            exited("c"),
            exited("b")
        ]
    );
    assert_eq!(took, ms(200));

    let (r, _, took) = interpret(&parallel(vec![run("a", 10, 0), run("b", 20, 0)])).await;
    assert_eq!(r, Ok(()));
    assert_eq!(took, ms(20));
    assert_eq!(interpret(&parallel(vec![])).await.0, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn codependent_stops_the_rest_when_one_exits() {
    let a = codependent(vec![run("app", 100_000, 0), run("sidecar", 100, 0)]);
    let (r, did, took) = interpret(&a).await;
    assert_eq!(r, Err("codependent step exited".into()));
    assert_eq!(
        did,
        vec![
            started("app"),
            started("sidecar"),
            exited("sidecar"),
            stopped("app")
        ]
    );
    assert_eq!(took, ms(100));
}

#[tokio::test(start_paused = true)]
async fn codependent_fails_with_the_first_failure() {
    let a = codependent(vec![run("app", 100_000, 0), run("sidecar", 50, 7)]);
    let (r, did, took) = interpret(&a).await;
    assert_eq!(r, Err("exited with status 7".into()));
    assert!(did.contains(&stopped("app")));
    assert_eq!(took, ms(50));
    assert_eq!(interpret(&codependent(vec![])).await.0, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn timeout_stops_its_action_and_fails_once_the_limit_passes() {
    let (r, did, took) = interpret(&timeout(Some(run("a", 10_000, 0)), ms(1000))).await;
    assert_eq!(r, Err("timed out after 1s".into()));
    assert_eq!(did, vec![started("a"), stopped("a")]);
    assert_eq!(took, ms(1000));

    let (r, _, took) = interpret(&timeout(Some(run("a", 10_000, 0)), ms(1500))).await;
    assert_eq!(r, Err("timed out after 1500ms".into()));
    assert_eq!(took, ms(1500));
}

#[tokio::test(start_paused = true)]
async fn within_its_limit_a_timeout_is_its_action() {
    let (r, did, took) = interpret(&timeout(Some(run("a", 100, 0)), ms(1000))).await;
    assert_eq!(r, Ok(()));
    assert_eq!(did, vec![started("a"), exited("a")]);
    assert_eq!(took, ms(100));
    let (r, _, _) = interpret(&timeout(Some(run("a", 100, 4)), ms(1000))).await;
    assert_eq!(r, Err("exited with status 4".into()));
    let (r, _, _) = interpret(&timeout(None, ms(1000))).await;
    assert_eq!(r, Err("timeout without an action".into()));
}

#[tokio::test(start_paused = true)]
async fn try_turns_a_failure_into_success_and_logs_it() {
    let (r, did, _) = interpret(&try_(run("a", 10, 1), "TRY")).await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        did,
        vec![
            started("a"),
            exited("a"),
            Did::Log(
                "TRY".into(),
                "stderr".into(),
                "try: exited with status 1 (ignored)".into()
            )
        ]
    );
    let (r, did, _) = interpret(&try_(run("a", 10, 0), "")).await;
    assert_eq!(r, Ok(()));
    assert_eq!(did, vec![started("a"), exited("a")]);
}

#[tokio::test(start_paused = true)]
async fn emit_progress_says_start_and_success() {
    let a = progress(Some(run("a", 10, 0)), "Staging", "Staged", "Staging failed");
    let (r, did, _) = interpret(&a).await;
    assert_eq!(r, Ok(()));
    let log = |stream: &str, line: &str| Did::Log("STG".into(), stream.into(), line.into());
    assert_eq!(
        did,
        vec![
            Did::Progress("Staging".into()),
            log("stdout", "Staging"),
            started("a"),
            exited("a"),
            Did::Progress("Staged".into()),
            log("stdout", "Staged"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn emit_progress_prefixes_a_failure_and_logs_it() {
    let a = progress(Some(run("a", 10, 5)), "", "Staged", "Staging failed");
    let (r, did, _) = interpret(&a).await;
    let reason = "Staging failed: exited with status 5";
    assert_eq!(r, Err(reason.into()));
    assert_eq!(
        did,
        vec![
            started("a"),
            exited("a"),
            Did::Log("STG".into(), "stderr".into(), reason.into())
        ]
    );

    // No prefix: the failure as it is.
    let (r, did, _) = interpret(&progress(Some(run("a", 10, 5)), "", "", "")).await;
    assert_eq!(r, Err("exited with status 5".into()));
    assert_eq!(
        did.last(),
        Some(&Did::Log(
            "STG".into(),
            "stderr".into(),
            "exited with status 5".into()
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn emit_progress_around_nothing_fails_after_its_start_message() {
    let (r, did, _) = interpret(&progress(None, "Staging", "Staged", "")).await;
    assert_eq!(r, Err("emit_progress without an action".into()));
    assert_eq!(
        did,
        vec![
            Did::Progress("Staging".into()),
            Did::Log("STG".into(), "stdout".into(), "Staging".into())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_before_it_begins_nothing_runs() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (r, did, _) = interpret_until(&serial(vec![run("a", 10, 0)]), cancel).await;
    assert_eq!(r, Err("cancelled".into()));
    assert!(did.is_empty());
}

/// A token cancelled once `after` passes (the Task or LRP stopped meanwhile).
fn cancelled_after(after: Duration) -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        c.cancel();
    });
    cancel
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_running_stops_the_running_and_starts_nothing_more() {
    let a = serial(vec![
        parallel(vec![run("a", 10_000, 0), run("b", 20_000, 0)]),
        run("c", 10, 0),
    ]);
    let (r, did, took) = interpret_until(&a, cancelled_after(ms(1000))).await;
    assert_eq!(
        r,
        Err("cancelled (exited with status 143); cancelled (exited with status 143)".into())
    );
    assert_eq!(
        did,
        vec![started("a"), started("b"), stopped("a"), stopped("b")]
    );
    assert_eq!(took, ms(1000));
}

#[tokio::test(start_paused = true)]
async fn a_stop_is_not_ignored_by_try() {
    let a = serial(vec![try_(run("a", 10_000, 0), ""), run("b", 10, 0)]);
    let (r, did, _) = interpret_until(&a, cancelled_after(ms(100))).await;
    assert_eq!(r, Err("cancelled".into()));
    assert_eq!(
        did,
        vec![
            started("a"),
            stopped("a"),
            Did::Log(
                "".into(),
                "stderr".into(),
                "try: cancelled (exited with status 143) (ignored)".into()
            )
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn downloads_into_the_container_but_not_into_a_read_only_volume() {
    let (r, did, took) = interpret(&download("http://blobs/droplet", "/app")).await;
    assert_eq!(r, Ok(()));
    assert_eq!(did, vec![Did::Downloaded("http://blobs/droplet".into())]);
    assert_eq!(took, TRANSFER);

    let (r, did, _) = interpret(&download("http://blobs/droplet", "/ro/app")).await;
    assert_eq!(
        r,
        Err("download into /ro/app: it is on a read-only volume".into())
    );
    assert!(did.is_empty());

    let (r, _, _) = interpret(&download("http://blobs/bad", "/app")).await;
    assert_eq!(
        r,
        Err("download http://blobs/bad failed: 404 Not Found for url (http://blobs/bad)".into())
    );
    // The reason is stored and shown: a URL's credentials are not in it.
    let (r, _, _) = interpret(&download("https://u:t0ken@blobs/bad", "/app")).await;
    assert_eq!(
        r,
        Err("download https://[hidden]@blobs/bad failed: 404 Not Found for url (https://[hidden]@blobs/bad)".into())
    );
}

#[tokio::test(start_paused = true)]
async fn uploads_and_says_which_failed() {
    let (r, did, _) = interpret(&upload("/tmp/result")).await;
    assert_eq!(r, Ok(()));
    assert_eq!(did, vec![Did::Uploaded("/tmp/result".into())]);
    let (r, _, _) = interpret(&upload("/tmp/bad")).await;
    assert_eq!(r, Err("upload /tmp/bad failed: connection refused".into()));
}

#[tokio::test(start_paused = true)]
async fn a_stop_abandons_a_transfer() {
    let a = serial(vec![download("http://blobs/droplet", "/app"), upload("/x")]);
    let (r, did, took) = interpret_until(&a, cancelled_after(ms(100))).await;
    assert_eq!(r, Err("cancelled".into()));
    assert!(did.is_empty());
    assert_eq!(took, ms(100));
    let (r, did, _) = interpret_until(&upload("/x"), cancelled_after(ms(100))).await;
    assert_eq!(r, Err("cancelled".into()));
    assert!(did.is_empty());
}

#[test]
fn durations_read_as_seconds_when_whole() {
    assert_eq!(humantime(Duration::from_secs(30)), "30s");
    assert_eq!(humantime(ms(2500)), "2500ms");
    assert_eq!(humantime(Duration::ZERO), "0s");
}

fn repository(op: &str, path: &str) -> models::Action {
    models::Action {
        action: Some(A::Repository(models::RepositoryAction {
            op: op.into(),
            path: path.into(),
            repository: "rest:https://u:p@bbs/v1/repos/v/".into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(start_paused = true)]
async fn repository_actions_run_fail_with_the_reason_and_never_restore_into_read_only() {
    let (r, did, took) = interpret(&repository("backup", "/ro/data")).await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        did,
        vec![Did::Repository("backup".into(), "/ro/data".into())]
    );
    assert_eq!(took, TRANSFER);

    let (r, did, _) = interpret(&repository("restore", "/ro/data")).await;
    assert_eq!(
        r,
        Err("repository restore of /ro/data failed: it is on a read-only volume".into())
    );
    assert!(did.is_empty());

    let (r, _, _) = interpret(&repository("backup", "/bad")).await;
    assert_eq!(
        r,
        Err("repository backup of /bad failed: the repository refused the cluster's backup key: wrong password".into())
    );
}
