//! Extension: the JSON of periodic Tasks (`ltc submit-task FILE --every …`,
//! `ltc schedules`, `ltc schedule pause|resume|remove NAME`).
//!
//! - `POST /v1/schedules` takes a [`ScheduleCreateRequest`] and answers 201 with the
//!   [`ScheduleResponse`]; a schedule of that name already existing is a 409
//!   `ScheduleAlreadyExists`; a bad `every` is a 400 `InvalidRequest` naming it, and
//!   nothing is stored.
//! - `GET /v1/schedules`: every schedule (Task schedules and backup schedules, which are
//!   one kind of periodic Task), [`ScheduleResponse`]s sorted by name.
//! - `GET /v1/schedules/:name`, `DELETE /v1/schedules/:name` (its runs are left to
//!   expire as ordinary Tasks do), `POST /v1/schedules/:name/pause` and
//!   `POST /v1/schedules/:name/resume` (both answer the `ScheduleResponse`). A missing
//!   schedule is a 404 `ScheduleNotFound`.
//!
//! Each run is an ordinary Task whose guid is `NAME-SLOT` (`SLOT` the slot's start,
//! UTC, `YYYYMMDD-HHMMSS`), desired by the active brain: exactly one per slot however
//! many brains try; when the previous run has not completed the slot is skipped (and
//! recorded as skipped); after downtime only the newest missed slot runs. The last
//! `keep` completed runs are kept (they do not expire after 2 minutes as other
//! completed Tasks do).

use serde::{Deserialize, Serialize};

use super::TaskCreateRequest;

/// `POST /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ScheduleCreateRequest {
    /// The schedule's name (a task guid's characters); runs are `NAME-SLOT`.
    pub name: String,
    /// `15m`-style periods (`30s`, `15m`, `2h`, `1d`; at least 5s), `hourly`, `daily`, `weekly`, `monthly`, or a
    /// standard five-field cron expression (`"*/5 * * * *"`, UTC).
    pub every: String,
    /// How many completed runs to keep (0: the default, 5).
    pub keep: u32,
    /// The Task each run is (its `task_guid` is ignored: each run gets its own).
    pub task: TaskCreateRequest,
}

/// What a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// A Task ([`ScheduleResponse::task`]).
    #[default]
    Task,
    /// A backup of [`ScheduleResponse::volume`] (`ltc backup schedule`).
    Backup,
}

/// How a schedule's latest slot went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// No slot has come yet.
    #[default]
    None,
    /// The run is still going.
    Running,
    Succeeded,
    Failed,
    /// The slot was skipped because the previous run was still going.
    Skipped,
}

/// A schedule as `GET /v1/schedules` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ScheduleResponse {
    pub name: String,
    pub kind: ScheduleKind,
    pub every: String,
    pub keep: u32,
    pub paused: bool,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The next slot's start (Unix nanoseconds); 0 while paused.
    pub next_run_at: i64,
    /// The latest slot handled (`YYYYMMDD-HHMMSS`), empty before the first.
    pub last_slot: String,
    /// The guid of the latest run (a Task guid, or a backup id), empty if none.
    pub last_run: String,
    /// When the latest slot was handled (Unix nanoseconds), 0 before the first.
    pub last_run_at: i64,
    pub last_result: RunResult,
    /// Why it failed or was skipped ("the previous run NAME-… is still running").
    pub last_reason: String,
    /// The kept runs' guids, newest first.
    pub runs: Vec<String>,
    /// Task schedules: what each run is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskCreateRequest>,
    /// Backup schedules: the volume.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub volume: String,
    /// Who made it (the owner of its runs).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
}
