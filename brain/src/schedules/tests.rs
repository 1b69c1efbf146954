use super::*;
use async_trait::async_trait;
use lattice_bbs_client::fake::FakeBbs;
use lattice_bbs_client::{CellWrites, Leases, Reads, Result as BbsResult, TaskFilter};
use lattice_specs::models::schedule::RunResult;
use lattice_specs::models::{volume, CellCapacity, CellPresence};

/// 2027-01-15 08:00:00 UTC, on a slot of every period used here.
const NOW: i64 = 1_800_000_000;

/// A FakeBbs with task schedule `report` every 10 s, created before `NOW`'s slot.
async fn bbs_with_a_task_schedule(keep: u32) -> FakeBbs {
    let bbs = FakeBbs::start().await;
    let s = Schedule {
        name: "report".into(),
        every: "10s".into(),
        keep,
        domain: "jobs".into(),
        task: Some(lattice_specs::testing::task_definition("/bin/true")),
        ..Default::default()
    };
    bbs.db().create_schedule(s).await.unwrap();
    bbs
}

async fn runs(bbs: &FakeBbs) -> Vec<Task> {
    let mut t = Reads::tasks(bbs, &TaskFilter::default()).await.unwrap();
    t.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
    t
}

async fn finish(bbs: &FakeBbs, guid: &str, failed: bool) {
    bbs.start_task(guid, "cell-1").await.unwrap();
    let reason = if failed { "exit status 1" } else { "" };
    bbs.complete_task(guid, "cell-1", failed, reason, "")
        .await
        .unwrap();
}

/// A brain whose view is stale: it sees every schedule as never run (another brain
/// just handled the slot).
struct StaleView(FakeBbs);

#[async_trait]
impl ScheduledRuns for StaleView {
    async fn schedules(&self) -> BbsResult<Vec<Schedule>> {
        let mut all = self.0.schedules().await?;
        for s in &mut all {
            s.last_slot_at = 0;
        }
        Ok(all)
    }
    async fn scheduled_runs(&self) -> BbsResult<Vec<Task>> {
        Ok(vec![])
    }
    async fn backups(&self) -> BbsResult<Vec<Backup>> {
        Ok(vec![])
    }
    async fn claim_schedule_slot(
        &self,
        name: &str,
        slot_at: i64,
        slot: &str,
        skip_reason: &str,
    ) -> BbsResult<ClaimedSlot> {
        self.0
            .claim_schedule_slot(name, slot_at, slot, skip_reason)
            .await
    }
    async fn claim_verify_slot(&self, name: &str, slot_at: i64) -> BbsResult<ClaimedSlot> {
        self.0.claim_verify_slot(name, slot_at).await
    }
    async fn backup_tasks(&self) -> BbsResult<Vec<Task>> {
        Ok(vec![])
    }
    async fn remove_run(&self, task_guid: &str) -> BbsResult<()> {
        self.0.remove_run(task_guid).await
    }
    async fn delete_backup(&self, id: &str) -> BbsResult<()> {
        self.0.delete_backup(id).await
    }
}

#[tokio::test]
async fn a_slot_gets_one_run_named_after_it() {
    let bbs = bbs_with_a_task_schedule(0).await;
    let done = tick(&bbs, NOW).await.unwrap();
    assert_eq!(done.started, 1);
    assert_eq!(tick(&bbs, NOW + 3).await.unwrap(), Done::default());
    let t = runs(&bbs).await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].task_guid, "report-20270115-080000");
    assert_eq!(t[0].schedule, "report");
    assert_eq!(t[0].domain, "jobs");
    let s = bbs.db().schedule("report").await.unwrap();
    assert_eq!(s.last_run, "report-20270115-080000");
    assert_eq!(s.last_result(), RunResult::Running);
}

#[tokio::test]
async fn two_brains_on_the_same_slot_make_one_run() {
    let bbs = bbs_with_a_task_schedule(0).await;
    let stale = StaleView(bbs.clone());
    // Both at once, and the stale one again after.
    let (a, b) = tokio::join!(tick(&bbs, NOW), tick(&stale, NOW));
    assert_eq!(a.unwrap().started + b.unwrap().started, 1);
    assert_eq!(tick(&stale, NOW + 1).await.unwrap().started, 0);
    assert_eq!(runs(&bbs).await.len(), 1);
}

#[tokio::test]
async fn a_fenced_brain_starts_nothing() {
    let bbs = bbs_with_a_task_schedule(0).await;
    let before = bbs.db().schedule("report").await.unwrap();
    let fenced = bbs.superseded("brain").await;
    let r = tick(fenced.as_ref(), NOW).await;
    assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
    assert!(runs(&bbs).await.is_empty());
    assert_eq!(bbs.db().schedule("report").await.unwrap(), before);
}

#[tokio::test]
async fn a_slot_is_skipped_while_the_run_goes_and_results_are_recorded() {
    let bbs = bbs_with_a_task_schedule(2).await;
    tick(&bbs, NOW).await.unwrap();
    let done = tick(&bbs, NOW + 10).await.unwrap();
    assert_eq!((done.started, done.skipped), (0, 1));
    let s = bbs.db().schedule("report").await.unwrap();
    assert_eq!(s.last_result(), RunResult::Skipped);
    assert_eq!(s.last_slot, "20270115-080010");
    assert_eq!(
        s.last_reason,
        "the previous run report-20270115-080000 is still running"
    );
    finish(&bbs, "report-20270115-080000", false).await;
    // A completed run of a slot since skipped leaves the skip shown.
    assert_eq!(
        bbs.db().schedule("report").await.unwrap().last_result(),
        RunResult::Skipped
    );
    assert_eq!(tick(&bbs, NOW + 20).await.unwrap().started, 1);
    finish(&bbs, "report-20270115-080020", true).await;
    let s = bbs.db().schedule("report").await.unwrap();
    assert_eq!(s.last_result(), RunResult::Failed);
    assert_eq!(s.last_reason, "exit status 1");
    // A third run: the oldest of the three completed goes (keep 2).
    assert_eq!(tick(&bbs, NOW + 30).await.unwrap().started, 1);
    finish(&bbs, "report-20270115-080030", false).await;
    let s = bbs.db().schedule("report").await.unwrap();
    assert_eq!(s.last_result(), RunResult::Succeeded);
    assert_eq!(tick(&bbs, NOW + 31).await.unwrap().pruned, 1);
    let guids: Vec<String> = runs(&bbs).await.into_iter().map(|t| t.task_guid).collect();
    assert_eq!(guids, ["report-20270115-080020", "report-20270115-080030"]);
}

#[tokio::test]
async fn a_paused_schedule_starts_nothing_and_resumes_at_the_current_slot() {
    let bbs = bbs_with_a_task_schedule(0).await;
    bbs.db().pause_schedule("report", true).await.unwrap();
    assert_eq!(tick(&bbs, NOW).await.unwrap(), Done::default());
    bbs.db().pause_schedule("report", false).await.unwrap();
    assert_eq!(tick(&bbs, NOW + 25).await.unwrap().started, 1);
    assert_eq!(runs(&bbs).await[0].task_guid, "report-20270115-080020");
}

#[test]
fn completed_runs_of_existing_schedules_are_not_the_convergers() {
    use lattice_specs::testing::task;
    let mut run = task("report-1", TaskState::Completed, "cell-1");
    run.schedule = "report".into();
    let mut orphan = run.clone();
    orphan.task_guid = "gone-1".into();
    orphan.schedule = "gone".into();
    let mut running = run.clone();
    running.task_guid = "report-2".into();
    running.set_state(TaskState::Running);
    let plain = task("plain", TaskState::Completed, "cell-1");
    let schedules = [Schedule {
        name: "report".into(),
        ..Default::default()
    }];
    let left = without_kept_runs(vec![run, orphan, running, plain], &schedules);
    let guids: Vec<&str> = left.iter().map(|t| t.task_guid.as_str()).collect();
    assert_eq!(guids, ["gone-1", "report-2", "plain"]);
}

// ------------------------------------------------------------ backup schedules

/// A BBS with volume `data` READY on `cell-1`, backed up hourly.
async fn bbs_with_a_backup_schedule() -> FakeBbs {
    let bbs = FakeBbs::start().await;
    let lease = bbs.grant_lease(60).await.unwrap();
    let cell = CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "http://cell-1:1800".into(),
        capacity: Some(CellCapacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 10,
        }),
        volume_drivers: vec!["local".into()],
        ..Default::default()
    };
    bbs.set_cell_presence(&cell, lease).await.unwrap();
    let size = lattice_specs::volume::MIN_SIZE;
    bbs.db()
        .create_volume("data", size, "cell-1")
        .await
        .unwrap();
    let ready = lattice_bbs_client::VolumeReport {
        name: "data".into(),
        cell_id: "cell-1".into(),
        state: volume::State::Ready,
        size_bytes: size,
        used_bytes: 0,
        reason: String::new(),
    };
    bbs.set_volume_state(&ready).await.unwrap();
    bbs.db().set_backup_schedule("data", "1h", 2).await.unwrap();
    bbs
}

#[tokio::test]
async fn a_backup_slot_gets_one_backup_with_its_old_id() {
    let bbs = bbs_with_a_backup_schedule().await;
    assert_eq!(tick(&bbs, NOW).await.unwrap().started, 1);
    assert_eq!(tick(&bbs, NOW + 60).await.unwrap(), Done::default());
    let backups = ScheduledRuns::backups(&bbs).await.unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].id, "data-20270115-0800");
    assert_eq!(backups[0].slot, "20270115-0800");
    // Another brain with a stale view: the slot is taken, nothing more.
    let refused = crate::metrics::SCHEDULED_RUNS.with_label_values(&["backup", "refused"]);
    let before = refused.get();
    assert_eq!(
        tick(&StaleView(bbs.clone()), NOW).await.unwrap(),
        Done::default()
    );
    assert_eq!(refused.get(), before);
    assert_eq!(ScheduledRuns::backups(&bbs).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_backup_that_cannot_start_is_the_slots_failure() {
    let bbs = bbs_with_a_backup_schedule().await;
    let failed = lattice_bbs_client::VolumeReport {
        name: "data".into(),
        cell_id: "cell-1".into(),
        state: volume::State::Failed,
        size_bytes: lattice_specs::volume::MIN_SIZE,
        used_bytes: 0,
        reason: "disk gone".into(),
    };
    bbs.set_volume_state(&failed).await.unwrap();
    assert_eq!(tick(&bbs, NOW).await.unwrap().failed, 1);
    // The slot is handled: not tried again.
    assert_eq!(tick(&bbs, NOW + 60).await.unwrap(), Done::default());
    let s = bbs.db().schedule("data").await.unwrap();
    assert_eq!(s.last_result(), RunResult::Failed);
    assert!(
        s.last_reason.contains("only a READY volume"),
        "{}",
        s.last_reason
    );
    assert!(ScheduledRuns::backups(&bbs).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fenced_brain_takes_no_backup() {
    let bbs = bbs_with_a_backup_schedule().await;
    let fenced = bbs.superseded("brain").await;
    let r = tick(fenced.as_ref(), NOW).await;
    assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
    assert!(ScheduledRuns::backups(&bbs).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_runs_are_read_only_when_a_slot_is_due_or_a_schedule_changed() {
    let bbs = bbs_with_a_task_schedule(0).await;
    let all = bbs.schedules().await.unwrap();
    // Made since the last pass: a pass.
    assert!(wants_a_pass(&all, &[], NOW));
    // A slot not yet handled: a pass.
    assert!(wants_a_pass(&all, &all, NOW));
    tick(&bbs, NOW).await.unwrap();
    let claimed = bbs.schedules().await.unwrap();
    // The claim changed the record: one more pass (its retention), then nothing to
    // do until the next slot.
    assert!(wants_a_pass(&claimed, &all, NOW + 1));
    assert!(!wants_a_pass(&claimed, &claimed, NOW + 1));
    assert!(!wants_a_pass(&claimed, &claimed, NOW + 9));
    assert!(wants_a_pass(&claimed, &claimed, NOW + 10));
    // A run finishing changes the record too.
    finish(&bbs, &runs(&bbs).await[0].task_guid, false).await;
    let finished = bbs.schedules().await.unwrap();
    assert!(wants_a_pass(&finished, &claimed, NOW + 2));
    // Paused: nothing due.
    bbs.db().pause_schedule("report", true).await.unwrap();
    let paused = bbs.schedules().await.unwrap();
    assert!(!wants_a_pass(&paused, &paused, NOW + 10));
}

// ------------------------------------------------ verification and retention

#[tokio::test]
async fn a_verification_slot_verifies_the_newest_backup_and_retention_keeps_the_good_one() {
    let bbs = bbs_with_a_backup_schedule().await;
    let policy = lattice_specs::retention::BackupPolicy {
        retention: lattice_specs::models::Retention {
            keep_last: 1,
            ..Default::default()
        },
        verify_every: "daily".into(),
        ..Default::default()
    };
    bbs.db().set_backup_policy("data", &policy).await.unwrap();
    let hour = 3600 * 1_000_000_000i64;
    let at = NOW * 1_000_000_000;
    for (id, age, verified) in [
        ("d1", 4, "ok"),
        ("d2", 3, ""),
        ("d3", 2, "failed: the restored data differs from the backup"),
        ("d4", 1, ""),
    ] {
        let b = Backup {
            id: id.into(),
            volume: "data".into(),
            state: lattice_specs::models::backup::State::Completed as i32,
            created_at: at - age * hour,
            finished_at: at - age * hour + 1,
            slot: id.into(),
            verified: verified.into(),
            blob: lattice_specs::backup::blob_name(id),
            ..lattice_specs::testing::backup()
        };
        bbs.db().import_backup(&b).await.unwrap();
    }
    let done = tick(&bbs, NOW).await.unwrap();
    assert_eq!(
        (done.started, done.verifying, done.pruned),
        (1, 1, 1),
        "{done:?}"
    );
    let mut left: Vec<Backup> = ScheduledRuns::backups(&bbs).await.unwrap();
    left.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = left.iter().map(|b| b.id.as_str()).collect();
    // d2 goes: keep-last 1 is d4 (the failed verification d3 holds no slot, and stays
    // as a recent failure); d1 is the newest verified-good backup.
    assert_eq!(ids, ["d1", "d3", "d4", "data-20270115-0800"]);
    let d4 = &left[2];
    let verify = Reads::task(&bbs, &d4.verify_task_guid).await.unwrap();
    assert_eq!(verify.domain, lattice_specs::backup::DOMAIN);
    assert!(
        verify.task_guid.starts_with("verify-d4-"),
        "{}",
        verify.task_guid
    );
    assert_eq!(
        bbs.db().schedule("data").await.unwrap().last_verify_at,
        NOW - NOW % 86_400
    );
    // The slot verifies once; d4, being verified, is kept even past keep-last.
    let done = tick(&StaleView(bbs.clone()), NOW + 60).await.unwrap();
    assert_eq!(done.verifying, 0);
    let newer = Backup {
        id: "d5".into(),
        created_at: at + 30 * 1_000_000_000,
        slot: "d5".into(),
        verify_task_guid: String::new(),
        ..d4.clone()
    };
    bbs.db().import_backup(&newer).await.unwrap();
    let done = tick(&bbs, NOW + 120).await.unwrap();
    assert_eq!((done.verifying, done.pruned), (0, 0), "{done:?}");
    // The next day's slot verifies the newest completed backup.
    let done = tick(&bbs, NOW + 86_400).await.unwrap();
    assert_eq!(done.verifying, 1, "{done:?}");
}
