//! Periodic Tasks: `ltc submit-task FILE --every EVERY` makes a schedule (each slot's
//! run is an ordinary Task, `NAME-SLOT`), `ltc schedules` lists every schedule (Task
//! and backup ones) with its next and last run, `ltc schedule remove|pause|resume NAME`.
//! The JSON is specs/src/receptor/schedule.rs; the server checks `every`.

use clap::Subcommand;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::schedule::{
    RunResult, ScheduleCreateRequest, ScheduleKind, ScheduleResponse,
};
use lattice_specs::receptor::TaskCreateRequest;

use crate::api::{error_name, Api};
use crate::show;

/// `ltc schedule …`.
#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Remove a schedule: no more runs (its runs are left to expire as other Tasks do).
    Remove { name: String },
    /// Start no more runs until `ltc schedule resume NAME` (a run under way goes on).
    Pause { name: String },
    /// Start runs again from the next slot.
    Resume { name: String },
}

/// The request `ltc submit-task FILE --every EVERY [--name NAME] [--keep N]` posts: the
/// schedule is named `name`, else after the file's task_guid.
pub fn create_request(
    task: TaskCreateRequest,
    file: &std::path::Path,
    every: &str,
    name: Option<&str>,
    keep: u32,
) -> anyhow::Result<ScheduleCreateRequest> {
    let name = name.unwrap_or(&task.task_guid).to_string();
    anyhow::ensure!(
        !name.is_empty(),
        "{}: the schedule needs a name: give the task a task_guid, or pass --name NAME",
        file.display()
    );
    anyhow::ensure!(
        !every.trim().is_empty(),
        "--every is empty: give a period (30s, 15m, 2h, 1d), hourly, daily, weekly, monthly or a cron expression (\"*/5 * * * *\")"
    );
    Ok(ScheduleCreateRequest {
        name,
        every: every.trim().into(),
        keep,
        task,
    })
}

/// Posts the schedule and says what happens next.
pub async fn create(api: &Api, req: &ScheduleCreateRequest) -> anyhow::Result<()> {
    let s = match api.create_schedule(req).await {
        Err(e) if error_name(&e) == Some(ErrorName::ScheduleAlreadyExists) => anyhow::bail!(
            "a schedule named {} already exists: pick another with --name, or `ltc schedule remove {}` first",
            req.name,
            req.name
        ),
        r => r?,
    };
    let now = lattice_specs::now_nanos();
    println!(
        "Scheduled task {} every {} (next run: {}; the last {} runs kept). Its runs are tasks {}-YYYYMMDD-HHMMSS: `ltc schedules` and `ltc list-tasks` show them.",
        s.name,
        s.every,
        next(&s, now),
        s.keep,
        s.name
    );
    Ok(())
}

pub async fn run(api: &Api, cmd: ScheduleCmd) -> anyhow::Result<()> {
    let (name, done) = match &cmd {
        ScheduleCmd::Remove { name } => {
            api.delete_schedule(name).await?;
            (name, "removed: it starts no more runs")
        }
        ScheduleCmd::Pause { name } => {
            api.schedule_action(name, "pause").await?;
            (
                name,
                "paused: it starts no more runs until `ltc schedule resume`",
            )
        }
        ScheduleCmd::Resume { name } => {
            api.schedule_action(name, "resume").await?;
            (name, "resumed: it runs again from the next slot")
        }
    };
    println!("Schedule {name} {done}.");
    Ok(())
}

/// `ltc schedules`.
pub async fn list(api: &Api, json: bool, now: i64) -> anyhow::Result<()> {
    let all = api.all_schedules().await?;
    if json {
        show::json(&all)
    } else {
        print!("{}", table(&all, now));
        Ok(())
    }
}

/// When the next slot comes, for people.
fn next(s: &ScheduleResponse, now: i64) -> String {
    if s.paused {
        "paused".into()
    } else if s.next_run_at <= 0 {
        "-".into()
    } else if s.next_run_at <= now {
        "now".into()
    } else {
        format!("in {}", show::age(now, s.next_run_at))
    }
}

/// The latest slot's run (or the slot, when it was skipped) and how long ago.
fn last_run(s: &ScheduleResponse, now: i64) -> String {
    let what = if !s.last_run.is_empty() {
        &s.last_run
    } else if !s.last_slot.is_empty() {
        &s.last_slot
    } else {
        return "-".into();
    };
    format!("{what} ({} ago)", show::age(s.last_run_at, now))
}

fn result(s: &ScheduleResponse) -> String {
    let with_reason = |what: &str| {
        if s.last_reason.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", s.last_reason)
        }
    };
    match s.last_result {
        RunResult::None => "-".into(),
        RunResult::Running => "running".into(),
        RunResult::Succeeded => "succeeded".into(),
        RunResult::Failed => with_reason("failed"),
        RunResult::Skipped => with_reason("skipped"),
    }
}

/// The `ltc schedules` table.
pub fn table(all: &[ScheduleResponse], now: i64) -> String {
    if all.is_empty() {
        return "No schedules: `ltc submit-task FILE.json --every 1h` runs a task every hour.\n"
            .into();
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let kind = match s.kind {
                ScheduleKind::Task => "task".to_string(),
                ScheduleKind::Backup => format!("backup of {}", s.volume),
            };
            vec![
                s.name.clone(),
                kind,
                s.every.clone(),
                next(s, now),
                last_run(s, now),
                result(s),
            ]
        })
        .collect();
    show::table(
        &["NAME", "KIND", "EVERY", "NEXT", "LAST-RUN", "RESULT"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn the_schedule_is_named_after_the_task_unless_named() {
        let task = TaskCreateRequest {
            task_guid: "report".into(),
            rootfs: "preloaded:busybox".into(),
            ..Default::default()
        };
        let file = std::path::Path::new("report.json");
        let r = create_request(task.clone(), file, " 15m ", None, 3).unwrap();
        assert_eq!(
            (r.name.as_str(), r.every.as_str(), r.keep),
            ("report", "15m", 3)
        );
        assert_eq!(r.task, task);
        let r = create_request(task.clone(), file, "daily", Some("nightly"), 0).unwrap();
        assert_eq!(r.name, "nightly");

        let unnamed = TaskCreateRequest::default();
        let e = create_request(unnamed, file, "1h", None, 0).unwrap_err();
        assert!(
            e.to_string().contains("report.json") && e.to_string().contains("--name"),
            "{e}"
        );
        let e = create_request(task, file, " ", None, 0).unwrap_err();
        assert!(e.to_string().contains("--every is empty"), "{e}");
    }

    #[test]
    fn the_table_shows_next_last_and_result_of_each_kind() {
        let now = 1_000_000 * S;
        let ran = ScheduleResponse {
            name: "report".into(),
            every: "5m".into(),
            keep: 5,
            next_run_at: now + 192 * S,
            last_slot: "20261206-070000".into(),
            last_run: "report-20261206-070000".into(),
            last_run_at: now - 12 * S,
            last_result: RunResult::Succeeded,
            ..Default::default()
        };
        let skipped = ScheduleResponse {
            name: "slow".into(),
            every: "*/5 * * * *".into(),
            next_run_at: now - S,
            last_slot: "20261206-070500".into(),
            last_run_at: now - 3 * S,
            last_result: RunResult::Skipped,
            last_reason: "the previous run slow-20261206-070000 is still running".into(),
            ..Default::default()
        };
        let paused_backup = ScheduleResponse {
            name: "backup-db".into(),
            kind: ScheduleKind::Backup,
            volume: "db".into(),
            every: "daily".into(),
            paused: true,
            ..Default::default()
        };
        let out = table(&[ran, skipped, paused_backup], now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "KIND", "EVERY", "NEXT", "LAST-RUN", "RESULT"]
        );
        assert!(
            lines[1].starts_with("report ")
                && lines[1].contains(" task ")
                && lines[1].contains("in 3m12s")
                && lines[1].contains("report-20261206-070000 (12s ago)")
                && lines[1].ends_with("succeeded"),
            "{out}"
        );
        assert!(
            lines[2].contains("*/5 * * * *")
                && lines[2].contains(" now ")
                && lines[2].contains("20261206-070500 (3s ago)")
                && lines[2]
                    .ends_with("skipped: the previous run slow-20261206-070000 is still running"),
            "{out}"
        );
        assert!(
            lines[3].contains("backup of db")
                && lines[3].contains("paused")
                && lines[3].ends_with(" -"),
            "{out}"
        );
        assert!(table(&[], now).starts_with("No schedules"));
    }

    #[test]
    fn failures_show_their_reason_and_runs_under_way_show_running() {
        let s = |last_result, last_reason: &str| ScheduleResponse {
            last_result,
            last_reason: last_reason.into(),
            ..Default::default()
        };
        assert_eq!(
            result(&s(RunResult::Failed, "exit status 2")),
            "failed: exit status 2"
        );
        assert_eq!(result(&s(RunResult::Failed, "")), "failed");
        assert_eq!(result(&s(RunResult::Running, "")), "running");
        assert_eq!(result(&s(RunResult::None, "")), "-");
    }
}
