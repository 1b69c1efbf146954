//! Periodic Tasks as a user drives them with `ltc`: a schedule on a short period runs
//! exactly once per slot (task guids `NAME-SLOT`, consecutive slots, each run's output
//! logged once) across a brain failover (two `lattice brain` processes, the active one
//! SIGKILLed); a slot comes while the previous run still runs and is skipped, with the
//! reason in `ltc schedules` (as a failed run's); pause stops the runs and resume starts
//! them again; only the last N completed runs are kept; an invalid cadence is named and
//! nothing is stored.
//! Runs are ordinary Tasks (`ltc list-tasks`, `ltc task`). Real processes and containers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lattice_tests::{
    ltc_bin, wait_for, BbsProcess, BrainProcess, CellProcess, LtcOutput, UpProcess,
};
use serde_json::Value;

/// `ltc` with its config in `home`.
struct Ltc {
    home: PathBuf,
}

impl Ltc {
    fn of(up: &UpProcess) -> Ltc {
        up.target();
        Ltc {
            home: up.data_dir.path().join("ltc"),
        }
    }

    fn run(&self, args: &[&str]) -> LtcOutput {
        let out = std::process::Command::new(ltc_bin())
            .args(args)
            .env("LTC_HOME", &self.home)
            .env_remove("LTC_TARGET")
            .env_remove("LTC_TOKEN")
            .output()
            .expect("running ltc");
        LtcOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.ok, "ltc {args:?} failed: {out:#?}");
        out.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ltc {args:?}: not JSON ({e}): {out}"))
    }

    /// `ltc submit-task` of a busybox task `name` running `script` (its log guid
    /// `NAME-log`, its result `done`), on a schedule with `flags`.
    fn schedule(&self, name: &str, script: &str, flags: &[&str]) -> LtcOutput {
        let file = task_file(&self.home, name, script);
        let mut args = vec!["submit-task", file.to_str().unwrap()];
        args.extend_from_slice(flags);
        self.run(&args)
    }

    /// The schedule as `ltc schedules --json` shows it.
    fn schedule_json(&self, name: &str) -> Option<Value> {
        self.json(&["schedules", "--json"])
            .as_array()
            .expect("a list of schedules")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// The runs of schedule `name` the API lists now, by slot (Unix seconds).
    fn runs(&self, name: &str) -> BTreeMap<i64, Value> {
        self.json(&["list-tasks", "--json"])
            .as_array()
            .expect("a list of tasks")
            .iter()
            .filter_map(|t| {
                let slot = slot_of(name, t["task_guid"].as_str()?)?;
                Some((slot, t.clone()))
            })
            .collect()
    }
}

fn task_file(dir: &Path, name: &str, script: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join(format!("{name}.json"));
    let task = serde_json::json!({
        "task_guid": name, "domain": "scheduled", "rootfs": "preloaded:busybox",
        "memory_mb": 32, "cpu_weight": 10, "log_guid": format!("{name}-log"),
        "action": {"run": {"path": "/bin/sh", "args": ["-c", format!("{script}; echo done > /tmp/r")], "user": "root"}},
        "result_file": "/tmp/r",
    });
    std::fs::write(&file, task.to_string()).unwrap();
    file
}

/// The slot (Unix seconds) of run `guid` of schedule `name`: `NAME-YYYYMMDD-HHMMSS`.
fn slot_of(name: &str, guid: &str) -> Option<i64> {
    let slot = guid.strip_prefix(name)?.strip_prefix('-')?;
    let t = chrono::NaiveDateTime::parse_from_str(slot, "%Y%m%d-%H%M%S")
        .unwrap_or_else(|e| panic!("run {guid}: its slot {slot:?} is not YYYYMMDD-HHMMSS: {e}"));
    Some(t.and_utc().timestamp())
}

/// Every run not yet seen goes into `seen` (guid → last state seen); at most one
/// run of a Forbid schedule is ever under way.
fn observe(ltc: &Ltc, name: &str, seen: &mut BTreeMap<i64, Value>) {
    let now = ltc.runs(name);
    let going: Vec<&str> = now
        .values()
        .filter(|t| t["state"] != "COMPLETED")
        .filter_map(|t| t["task_guid"].as_str())
        .collect();
    assert!(going.len() <= 1, "two runs of {name} at once: {going:?}");
    seen.extend(now);
}

/// Waits (observing) until `done(seen)`.
fn observe_until(
    ltc: &Ltc,
    name: &str,
    seen: &mut BTreeMap<i64, Value>,
    what: &str,
    within: Duration,
    done: impl Fn(&BTreeMap<i64, Value>) -> bool,
) {
    let t0 = Instant::now();
    loop {
        observe(ltc, name, seen);
        if done(seen) {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}; runs seen: {:?}",
            seen.values().map(|t| &t["task_guid"]).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn leads(brain: &BrainProcess) -> bool {
    metric(brain, "brain_is_leader") == 1
}

/// A brain's metric (the line starting with `series`), 0 when absent.
fn metric(brain: &BrainProcess, series: &str) -> u64 {
    let m = UpProcess::http_get(&brain.metrics, "/metrics");
    m.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

const STARTED: &str = r#"brain_scheduled_runs_total{kind="task",outcome="started"}"#;

#[test]
fn a_schedule_runs_once_per_slot_across_a_brain_failover() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = BbsProcess::start(
        &format!("file:{}", dir.path().join("bbs.db").display()),
        &[],
    );
    let mut first = BrainProcess::start(&bbs.grpc, "brain-a", &["--lock-ttl", "2"]);
    wait_for("brain-a leads", Duration::from_secs(15), || {
        leads(&first).then_some(())
    });
    let standby = BrainProcess::start(&bbs.grpc, "brain-b", &["--lock-ttl", "2"]);
    let _cell = CellProcess::start(&bbs.grpc, "cell-1", &[]);
    let ltc = Ltc {
        home: dir.path().join("ltc"),
    };
    ltc.ok(&["target", &format!("http://{}", bbs.api)]);

    // 10 s slots: longer than a takeover (lock TTL 2 s), so no slot falls between brains.
    let out = ltc.schedule(
        "tick",
        "echo run of tick",
        &["--every", "10s", "--keep", "20"],
    );
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stdout.contains("Scheduled task tick every 10s"),
        "{out:#?}"
    );
    let mut seen = BTreeMap::new();
    observe_until(
        &ltc,
        "tick",
        &mut seen,
        "two runs",
        Duration::from_secs(60),
        |s| s.len() >= 2,
    );

    // The active brain dies mid-slot (no run is being started then); the standby takes
    // over and the runs go on.
    wait_for("the middle of a slot", Duration::from_secs(15), || {
        (4..=6)
            .contains(&chrono::Utc::now().timestamp().rem_euclid(10))
            .then_some(())
    });
    let started_by_first = metric(&first, STARTED);
    first.process.kill();
    observe(&ltc, "tick", &mut seen);
    let last_before = *seen.keys().last().unwrap();
    wait_for("brain-b leads", Duration::from_secs(20), || {
        leads(&standby).then_some(())
    });
    observe_until(
        &ltc,
        "tick",
        &mut seen,
        "three runs after the failover",
        Duration::from_secs(90),
        |s| s.range(last_before + 1..).count() >= 3,
    );
    // Removed: the runs there are now are the last (a claim after the removal finds no
    // schedule).
    ltc.ok(&["schedule", "remove", "tick"]);
    observe(&ltc, "tick", &mut seen);
    let at_removal: BTreeSet<i64> = seen.keys().copied().collect();
    observe_until(
        &ltc,
        "tick",
        &mut seen,
        "every run completed",
        Duration::from_secs(60),
        |s| s.values().all(|t| t["state"] == "COMPLETED"),
    );
    std::thread::sleep(Duration::from_secs(12));
    observe(&ltc, "tick", &mut seen);
    assert_eq!(
        seen.keys().copied().collect::<BTreeSet<_>>(),
        at_removal,
        "a run after the schedule was removed"
    );

    // One run per slot, consecutive slots, each a good ordinary Task.
    let slots: Vec<i64> = seen.keys().copied().collect();
    eprintln!("runs of tick (slots, Unix seconds): {slots:?}");
    // Every run started once, by one brain or the other.
    assert_eq!(
        started_by_first + metric(&standby, STARTED),
        slots.len() as u64,
        "runs started by brain-a ({started_by_first}) and brain-b vs runs made"
    );
    for w in slots.windows(2) {
        assert_eq!(w[1] - w[0], 10, "slots not consecutive: {slots:?}");
    }
    for t in seen.values() {
        assert_eq!(
            (&t["failed"], &t["result"]),
            (&Value::Bool(false), &"done\n".into()),
            "{t}"
        );
    }
    let last = seen.values().last().unwrap()["task_guid"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = ltc.ok(&["task", &last]);
    assert!(shown.contains("State:    COMPLETED"), "{shown}");
    assert!(ltc.ok(&["list-tasks"]).contains(&last));
    // Each run ran once: its one line is in the schedule's log once.
    let logged = wait_for("every run's line logged", Duration::from_secs(30), || {
        let logs = ltc.ok(&["logs", &last, "--no-follow"]);
        let n = logs.matches("run of tick").count();
        (n >= seen.len()).then_some(n)
    });
    assert_eq!(logged, seen.len(), "runs logged vs runs made");
    assert!(ltc.ok(&["schedules"]).contains("No schedules"));
}

#[test]
fn a_slot_is_skipped_while_the_previous_run_still_runs_and_a_failed_run_says_why() {
    let up = UpProcess::start();
    let ltc = Ltc::of(&up);
    // Each run outlasts the next slot.
    let out = ltc.schedule("slow", "sleep 8", &["--every", "5s"]);
    assert!(out.ok, "{out:#?}");
    let mut seen = BTreeMap::new();
    let s = wait_for("a skipped slot", Duration::from_secs(90), || {
        observe(&ltc, "slow", &mut seen);
        ltc.schedule_json("slow")
            .filter(|s| s["last_result"] == "skipped")
    });
    let reason = s["last_reason"].as_str().unwrap();
    let going = seen
        .values()
        .filter_map(|t| t["task_guid"].as_str())
        .find(|g| reason.contains(g))
        .unwrap_or_else(|| panic!("the reason names no run of slow: {s}"));
    assert!(reason.contains("still running"), "{s}");
    let skipped = slot_of(
        "slow",
        &format!("slow-{}", s["last_slot"].as_str().unwrap()),
    )
    .unwrap();
    assert!(skipped > slot_of("slow", going).unwrap(), "{s}");
    let table = ltc.ok(&["schedules"]);
    let row = table.lines().find(|l| l.starts_with("slow ")).unwrap();
    assert!(row.contains(&format!("skipped: {reason}")), "{table}");

    // The skipped slot has no run; a later slot runs once the previous one completed.
    observe_until(
        &ltc,
        "slow",
        &mut seen,
        "a run after the skipped slot",
        Duration::from_secs(60),
        |s| s.range(skipped + 1..).next().is_some(),
    );
    assert!(
        !seen.contains_key(&skipped),
        "the skipped slot ran: {seen:?}"
    );
    let after = *seen.range(skipped + 1..).next().unwrap().0;
    assert_eq!((after - skipped) % 5, 0, "slots are 5 s apart");
    ltc.ok(&["schedule", "remove", "slow"]);

    // A run that fails: the schedule says so, with the Task's reason.
    let out = ltc.schedule("oops", "exit 3", &["--every", "5s"]);
    assert!(out.ok, "{out:#?}");
    let t0 = Instant::now();
    let s = loop {
        let s = ltc.schedule_json("oops").unwrap();
        if s["last_result"] == "failed" {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no failed run within 60 s: {s}\n{:?}",
            ltc.runs("oops")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let run = ltc.json(&["task", s["last_run"].as_str().unwrap(), "--json"]);
    assert_eq!(run["failed"], true, "{run}");
    let reason = run["failure_reason"].as_str().unwrap();
    assert!(
        !reason.is_empty() && s["last_reason"] == reason,
        "{s}\n{run}"
    );
    let table = ltc.ok(&["schedules"]);
    let row = table.lines().find(|l| l.starts_with("oops ")).unwrap();
    assert!(row.ends_with(&format!("failed: {reason}")), "{table}");
    ltc.ok(&["schedule", "remove", "oops"]);
}

#[test]
fn pause_stops_the_runs_resume_restarts_them_and_the_last_n_are_kept() {
    let up = UpProcess::start();
    let ltc = Ltc::of(&up);
    let out = ltc.schedule("beat", "echo beat", &["--every", "5s", "--keep", "2"]);
    assert!(out.ok, "{out:#?}");
    let mut seen = BTreeMap::new();
    observe_until(
        &ltc,
        "beat",
        &mut seen,
        "four runs",
        Duration::from_secs(90),
        |s| s.values().filter(|t| t["state"] == "COMPLETED").count() >= 4,
    );

    // Kept: the newest two completed runs; the older ones are gone.
    let (listed, kept) = wait_for("older runs pruned", Duration::from_secs(30), || {
        let listed = ltc.runs("beat");
        let completed: Vec<i64> = listed
            .iter()
            .filter(|(_, t)| t["state"] == "COMPLETED")
            .map(|(slot, _)| *slot)
            .collect();
        (completed.len() <= 2).then_some((listed, completed))
    });
    let oldest: Vec<i64> = seen.keys().take(2).copied().collect();
    assert!(
        oldest.iter().all(|s| !listed.contains_key(s)),
        "the oldest runs were kept: {listed:?}"
    );
    let s = ltc.schedule_json("beat").unwrap();
    let runs: Vec<&str> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(runs.len() <= 3, "{s}");
    let newest_first: Vec<i64> = runs.iter().map(|g| slot_of("beat", g).unwrap()).collect();
    assert!(newest_first.windows(2).all(|w| w[0] > w[1]), "{s}");
    assert!(kept.iter().all(|k| newest_first.contains(k)), "{s}");

    // Paused: no more runs.
    let out = ltc.ok(&["schedule", "pause", "beat"]);
    assert!(out.contains("Schedule beat paused"), "{out}");
    let s = ltc.schedule_json("beat").unwrap();
    assert_eq!(
        (&s["paused"], &s["next_run_at"]),
        (&Value::Bool(true), &0.into()),
        "{s}"
    );
    let table = ltc.ok(&["schedules"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("beat ") && l.contains("paused")),
        "{table}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let paused_after = ltc.runs("beat").keys().last().copied().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(12));
    let during = ltc.runs("beat");
    assert!(
        during.keys().all(|&slot| slot <= paused_after),
        "a run while paused: {during:?}"
    );

    // Resumed: runs again.
    let out = ltc.ok(&["schedule", "resume", "beat"]);
    assert!(out.contains("Schedule beat resumed"), "{out}");
    observe_until(
        &ltc,
        "beat",
        &mut seen,
        "a run after resume",
        Duration::from_secs(30),
        |s| s.range(paused_after + 1..).next().is_some(),
    );
    assert_eq!(
        ltc.schedule_json("beat").unwrap()["paused"],
        Value::Bool(false)
    );
    ltc.ok(&["schedule", "remove", "beat"]);
    assert!(ltc.schedule_json("beat").is_none());
    let out = ltc.run(&["schedule", "remove", "beat"]);
    assert!(
        !out.ok && out.stderr.contains("schedule beat not found"),
        "{out:#?}"
    );
}

#[test]
fn an_invalid_cadence_is_named_and_nothing_is_stored() {
    let up = UpProcess::start();
    let ltc = Ltc::of(&up);
    for (every, want) in [
        ("61 * * * *", vec!["61 * * * *", "minute"]),
        ("* * * * * * *", vec!["* * * * * * *"]),
        ("2s", vec!["2s", "5s"]),
        ("fortnightly", vec!["fortnightly"]),
    ] {
        let out = ltc.schedule("bad", "true", &["--every", every]);
        assert!(
            !out.ok && want.iter().all(|w| out.stderr.contains(w)),
            "--every {every:?}: {out:#?}"
        );
    }
    assert!(ltc.ok(&["schedules"]).contains("No schedules"));
    assert!(ltc.runs("bad").is_empty());

    // A name taken, a name missing, a schedule that does not exist.
    let out = ltc.schedule("nightly", "true", &["--every", "0 3 * * *"]);
    assert!(out.ok, "{out:#?}");
    let out = ltc.schedule("nightly", "true", &["--every", "daily"]);
    assert!(
        !out.ok
            && out
                .stderr
                .contains("a schedule named nightly already exists"),
        "{out:#?}"
    );
    let s = ltc.schedule_json("nightly").unwrap();
    assert_eq!(
        (&s["every"], &s["kind"]),
        (&"0 3 * * *".into(), &"task".into()),
        "{s}"
    );
    for cmd in ["pause", "resume", "remove"] {
        let out = ltc.run(&["schedule", cmd, "ghost"]);
        assert!(
            !out.ok && out.stderr.contains("schedule ghost not found"),
            "{cmd}: {out:#?}"
        );
    }
    let names: BTreeSet<String> = ltc
        .json(&["schedules", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, BTreeSet::from(["nightly".to_string()]));
}
