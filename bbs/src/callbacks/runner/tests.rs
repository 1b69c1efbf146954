//! The runner over a fake store and a scripted HTTP server, in paused time.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use lattice_specs::errors::ErrorName;
use lattice_specs::events::TaskChangedEvent;
use lattice_specs::task as task_sm;

use super::*;

/// Tasks in memory, moved by the same state machine as the store's.
#[derive(Default)]
struct FakeTasks {
    tasks: Mutex<HashMap<String, Task>>,
}

impl FakeTasks {
    fn with(tasks: &[Task]) -> Arc<FakeTasks> {
        let f = FakeTasks::default();
        for t in tasks {
            f.tasks
                .lock()
                .unwrap()
                .insert(t.task_guid.clone(), t.clone());
        }
        Arc::new(f)
    }

    fn exists(&self, guid: &str) -> bool {
        self.tasks.lock().unwrap().contains_key(guid)
    }
}

fn not_found(guid: &str) -> DbError {
    DbError::NotFound {
        name: ErrorName::TaskNotFound,
        message: format!("task {guid} not found"),
    }
}

#[async_trait]
impl TaskRecords for FakeTasks {
    async fn callback_tasks(&self) -> Result<Vec<Task>, DbError> {
        let mut v: Vec<Task> = self.tasks.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
        Ok(v)
    }

    async fn resolving(&self, guid: &str) -> Result<Task, DbError> {
        let mut tasks = self.tasks.lock().unwrap();
        let t = tasks.get_mut(guid).ok_or_else(|| not_found(guid))?;
        task_sm::resolving(t, lattice_specs::now_nanos())?;
        Ok(t.clone())
    }

    async fn delete(&self, guid: &str) -> Result<(), DbError> {
        let mut tasks = self.tasks.lock().unwrap();
        let t = tasks.get(guid).ok_or_else(|| not_found(guid))?;
        task_sm::check_delete(t)?;
        tasks.remove(guid);
        Ok(())
    }
}

/// What the scripted server does with one request.
#[derive(Clone)]
enum Step {
    Answer(Answer),
    /// Never answers.
    Hang,
}

/// Answers each URL's requests from its script (200 once the script ran out),
/// recording every request with when it came.
#[derive(Default)]
struct Script {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Mutex<Vec<(String, Vec<u8>, Instant)>>,
}

impl Script {
    fn new(steps: &[(&str, &[Step])]) -> Arc<Script> {
        let s = Script::default();
        for (url, st) in steps {
            s.steps
                .lock()
                .unwrap()
                .insert(url.to_string(), st.iter().cloned().collect());
        }
        Arc::new(s)
    }

    fn calls_to(&self, url: &str) -> Vec<Instant> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.0 == url).map(|c| c.2).collect()
    }
}

#[async_trait]
impl Poster for Script {
    async fn post(&self, url: &str, body: Vec<u8>) -> Answer {
        self.calls
            .lock()
            .unwrap()
            .push((url.to_string(), body, Instant::now()));
        let step = self
            .steps
            .lock()
            .unwrap()
            .get_mut(url)
            .and_then(|q| q.pop_front());
        match step {
            Some(Step::Answer(a)) => a,
            Some(Step::Hang) => std::future::pending().await,
            None => Answer::Status(200),
        }
    }
}

fn completed(guid: &str, url: &str) -> Task {
    let mut t = lattice_specs::testing::task(guid, State::Completed, "c1");
    let d = t.definition.get_or_insert_default();
    d.completion_callback_url = url.into();
    d.log_guid = format!("log-{guid}");
    t.first_completed_at = lattice_specs::now_nanos();
    t.updated_at = t.first_completed_at;
    t
}

fn cfg() -> CallbackConfig {
    CallbackConfig {
        retry_for: Duration::from_secs(10),
        ..CallbackConfig::default()
    }
}

struct Running {
    runner: Runner,
    logs: LogBuffer,
    events: broadcast::Sender<Arc<Event>>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

fn start(tasks: Arc<FakeTasks>, script: Arc<Script>, cfg: CallbackConfig) -> Running {
    let logs = LogBuffer::default();
    let runner = Runner::new(tasks, script, cfg, logs.clone());
    let (events, rx) = broadcast::channel(16);
    let (stop, stopped) = watch::channel(false);
    let done = tokio::spawn(runner.clone().run(rx, stopped));
    Running {
        runner,
        logs,
        events,
        stop,
        done,
    }
}

/// Waits (in paused time: the clock jumps) until `f` holds, at most `within`.
async fn until(within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines(logs: &LogBuffer, guid: &str) -> Vec<(String, String, String)> {
    logs.recent(&format!("log-{guid}"))
        .into_iter()
        .map(|m| (m.source, m.stream, m.message))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_after_the_backoff_then_delivered_and_the_task_deleted() {
    let url = "http://cb.example/done";
    let tasks = FakeTasks::with(&[completed("t1", url)]);
    let script = Script::new(&[(url, &[Step::Answer(Answer::Status(503))])]);
    let r = start(tasks.clone(), script.clone(), cfg());
    until(Duration::from_secs(5), || !tasks.exists("t1")).await;
    let calls = script.calls_to(url);
    assert_eq!(calls.len(), 2);
    assert!(calls[1] - calls[0] >= Duration::from_millis(500));
    let body: serde_json::Value =
        serde_json::from_slice(&script.calls.lock().unwrap()[0].1).unwrap();
    assert_eq!(
        (&body["task_guid"], &body["state"]),
        (&"t1".into(), &"COMPLETED".into())
    );
    assert_eq!(
        lines(&r.logs, "t1"),
        vec![(
            "CALLBACK".to_string(),
            "stdout".to_string(),
            format!("completion callback to {url}: 200 after 2 attempts")
        )]
    );
    assert!(r.runner.in_flight().is_empty());
    r.stop.send(true).unwrap();
    r.done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_4xx_is_final_after_one_attempt() {
    let url = "http://cb.example/gone";
    let tasks = FakeTasks::with(&[completed("t1", url)]);
    let script = Script::new(&[(url, &[Step::Answer(Answer::Status(404))])]);
    let r = start(tasks.clone(), script.clone(), cfg());
    until(Duration::from_secs(5), || !tasks.exists("t1")).await;
    // Long enough for any retry to have come.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(script.calls_to(url).len(), 1);
    let l = lines(&r.logs, "t1");
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].1, "stderr");
    assert!(l[0].2.contains("refused: 404 after 1 attempt"), "{l:?}");
}

#[tokio::test(start_paused = true)]
async fn server_errors_and_no_answer_are_retried_until_the_window_closes_then_the_task_goes() {
    let url = "http://cb.example/down";
    let tasks = FakeTasks::with(&[completed("t1", url)]);
    let steps = [
        Step::Answer(Answer::Unreachable("connection refused".into())),
        Step::Answer(Answer::Status(500)),
        Step::Answer(Answer::Status(503)),
        Step::Answer(Answer::Status(502)),
        Step::Answer(Answer::Status(503)),
        Step::Answer(Answer::Status(503)),
    ];
    let script = Script::new(&[(url, &steps)]);
    let began = Instant::now();
    let r = start(tasks.clone(), script.clone(), cfg());
    until(Duration::from_secs(30), || !tasks.exists("t1")).await;
    // Attempts at 0, .5, 1.5, 3.5 and 7.5 s; the next would be at 15.5 s, past 10 s.
    let calls = script.calls_to(url);
    assert_eq!(calls.len(), 5);
    assert!(calls[4] - began < Duration::from_secs(10));
    let l = lines(&r.logs, "t1");
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].2
            .contains("failed: 503, gave up after 7s (5 attempts)"),
        "{l:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_url_is_cut_at_the_timeout_and_holds_up_no_other_callback() {
    let (hangs, fine) = ("http://cb.example/hangs", "http://cb.example/fine");
    let tasks = FakeTasks::with(&[completed("a", hangs)]);
    let script = Script::new(&[(hangs, &[Step::Hang, Step::Hang])]);
    let window = CallbackConfig {
        retry_for: Duration::from_secs(60),
        ..cfg()
    };
    let r = start(tasks.clone(), script.clone(), window);
    until(Duration::from_secs(1), || script.calls_to(hangs).len() == 1).await;
    let began = Instant::now();
    // Another task completes while the first one's server hangs.
    let b = completed("b", fine);
    tasks.tasks.lock().unwrap().insert("b".into(), b.clone());
    r.events
        .send(Arc::new(Event {
            revision: 2,
            event: Some(Kind::TaskChanged(TaskChangedEvent {
                before: None,
                after: Some(b),
            })),
        }))
        .unwrap();
    until(Duration::from_secs(1), || !tasks.exists("b")).await;
    assert!(Instant::now() - began < Duration::from_secs(1));
    // The hanging one: cut after 10 s, retried after .5 s, cut again, then 200.
    until(Duration::from_secs(30), || !tasks.exists("a")).await;
    let calls = script.calls_to(hangs);
    assert_eq!(calls.len(), 3);
    assert!(calls[1] - calls[0] >= Duration::from_millis(10_500));
    let l = lines(&r.logs, "a");
    assert!(l[0].2.ends_with(": 200 after 3 attempts"), "{l:?}");
}

#[tokio::test(start_paused = true)]
async fn one_callback_per_task_at_a_time_and_none_for_a_task_someone_else_resolved() {
    let url = "http://cb.example/slow";
    let t = completed("t1", url);
    let tasks = FakeTasks::with(std::slice::from_ref(&t));
    let script = Script::new(&[(url, &[Step::Hang])]);
    let r = start(tasks.clone(), script.clone(), cfg());
    until(Duration::from_secs(1), || script.calls_to(url).len() == 1).await;
    // The same completion again, from the event feed and from a sweep.
    let ev = Arc::new(Event {
        revision: 3,
        event: Some(Kind::TaskChanged(TaskChangedEvent {
            before: None,
            after: Some(t),
        })),
    });
    r.events.send(ev).unwrap();
    let mut set = JoinSet::new();
    r.runner.sweep(true, &mut set).await.unwrap();
    assert!(set.is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.calls_to(url).len(), 1);
    assert_eq!(r.runner.in_flight(), vec!["t1".to_string()]);

    // A completion whose task was resolved by someone else meanwhile: no POST.
    let other = "http://cb.example/other";
    let mut taken = completed("t2", other);
    tasks.tasks.lock().unwrap().insert("t2".into(), {
        let mut t = taken.clone();
        t.set_state(State::Resolving);
        t
    });
    taken.set_state(State::Completed);
    r.runner.submit(taken, &mut set);
    while set.join_next().await.is_some() {}
    assert!(script.calls_to(other).is_empty());
    assert!(tasks.exists("t2"));
}

#[tokio::test(start_paused = true)]
async fn the_first_sweep_resumes_a_callback_a_previous_process_left_and_stopping_drops_it() {
    let url = "http://cb.example/resume";
    let mut t = completed("t1", url);
    t.set_state(State::Resolving);
    // A later sweep leaves a fresh RESOLVING task alone: someone may work on it.
    let tasks = FakeTasks::with(&[t]);
    let script = Script::new(&[(url, &[Step::Answer(Answer::Status(503))])]);
    let runner = Runner::new(tasks.clone(), script.clone(), cfg(), LogBuffer::default());
    let mut set = JoinSet::new();
    runner.sweep(false, &mut set).await.unwrap();
    assert!(set.is_empty());
    runner.sweep(true, &mut set).await.unwrap();
    assert_eq!(runner.in_flight(), vec!["t1".to_string()]);
    while set.join_next().await.is_some() {}
    assert_eq!(script.calls_to(url).len(), 2);
    assert!(!tasks.exists("t1"));

    // Stopping the runner drops a callback in flight and forgets it.
    let hang = "http://cb.example/hang";
    let tasks = FakeTasks::with(&[completed("t2", hang)]);
    let script = Script::new(&[(hang, &[Step::Hang])]);
    let r = start(tasks.clone(), script.clone(), cfg());
    until(Duration::from_secs(1), || script.calls_to(hang).len() == 1).await;
    r.stop.send(true).unwrap();
    r.done.await.unwrap();
    assert!(r.runner.in_flight().is_empty());
    assert!(tasks.exists("t2"), "left RESOLVING for the next process");
}

#[tokio::test(start_paused = true)]
async fn no_more_posts_at_once_than_the_concurrency_bound() {
    let urls = [
        "http://cb.example/1",
        "http://cb.example/2",
        "http://cb.example/3",
    ];
    let tasks = FakeTasks::with(&[
        completed("t1", urls[0]),
        completed("t2", urls[1]),
        completed("t3", urls[2]),
    ]);
    let hang: &[Step] = &[Step::Hang];
    let script = Script::new(&[(urls[0], hang), (urls[1], hang), (urls[2], hang)]);
    let two = CallbackConfig {
        concurrency: 2,
        retry_for: Duration::from_secs(60),
        ..cfg()
    };
    let r = start(tasks.clone(), script.clone(), two);
    until(Duration::from_secs(1), || {
        script.calls.lock().unwrap().len() == 2
    })
    .await;
    // All three are in flight, but the third waits for a permit.
    assert_eq!(r.runner.in_flight().len(), 3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(script.calls.lock().unwrap().len(), 2);
    // The first two attempts are cut at 10 s: the third POST goes out then.
    until(Duration::from_secs(6), || {
        script.calls.lock().unwrap().len() >= 3
    })
    .await;
    until(Duration::from_secs(60), || {
        urls.iter().all(|u| script.calls_to(u).len() == 2)
    })
    .await;
    until(Duration::from_secs(5), || r.runner.in_flight().is_empty()).await;
}
