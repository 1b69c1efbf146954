use super::*;

// 2026-11-22 05:17:09 UTC, a Sunday of ISO week 47.
const T: i64 = 1_795_324_629;
// 2026-11-22 00:00:00 UTC.
const DAY: i64 = 1_795_305_600;

fn task_schedule(every: &str, keep: u32) -> Schedule {
    Schedule {
        name: "report".into(),
        kind: schedule::Kind::Task as i32,
        every: every.into(),
        keep,
        ..Default::default()
    }
}

#[test]
fn periods_and_names_parse() {
    assert_eq!(parse_cadence("30s"), Ok(Cadence::Period(30)));
    assert_eq!(parse_cadence("5s"), Ok(Cadence::Period(5)));
    assert_eq!(parse_cadence("15m"), Ok(Cadence::Period(900)));
    assert_eq!(parse_cadence("hourly"), parse_cadence("1h"));
    assert_eq!(parse_cadence("2d"), Ok(Cadence::Period(172_800)));
    assert_eq!(parse_cadence("daily"), Ok(Cadence::Daily));
    assert_eq!(parse_cadence("weekly"), Ok(Cadence::Weekly));
    assert_eq!(parse_cadence(" monthly "), Ok(Cadence::Monthly));
    for bad in ["", "4s", "0m", "h", "1w", "often", "99999999999999999999d"] {
        let e = parse_cadence(bad).unwrap_err();
        assert_eq!(e.every, bad, "{bad}");
        assert!(e.reason.contains("at least 5s"), "{bad}: {e}");
    }
    // Backups count minutes.
    assert!(parse_backup_cadence("30s")
        .unwrap_err()
        .reason
        .contains("at least 1m"));
    assert_eq!(parse_backup_cadence("1m"), Ok(Cadence::Period(60)));
}

#[test]
fn cron_errors_name_the_expression_and_the_field() {
    assert!(matches!(parse_cadence("*/5 * * * *"), Ok(Cadence::Cron(_))));
    assert!(matches!(
        parse_cadence("0 3 * * MON-FRI"),
        Ok(Cadence::Cron(_))
    ));
    let e = parse_cadence("0 25 * * *").unwrap_err();
    assert_eq!(e.every, "0 25 * * *");
    assert!(e.reason.contains("cron field 2 (hour) \"25\""), "{e}");
    let e = parse_cadence("0 0 32 * *").unwrap_err();
    assert!(e.reason.contains("field 3 (day of month) \"32\""), "{e}");
    let e = parse_cadence("* * * 13 *").unwrap_err();
    assert!(e.reason.contains("field 4 (month)"), "{e}");
    let e = parse_cadence("x * * * *").unwrap_err();
    assert!(e.reason.contains("field 1 (minute) \"X\"") || e.reason.contains("field 1 (minute)"));
    let e = parse_cadence("* * * *").unwrap_err();
    assert!(
        e.reason.contains("five fields") && e.reason.contains("has 4"),
        "{e}"
    );
    let e = parse_cadence("0 * * * * *").unwrap_err();
    assert!(e.reason.contains("has 6"), "{e}");
    assert!(e.to_string().starts_with("every \"0 * * * * *\": "), "{e}");
}

#[test]
fn slots_and_next_slots() {
    let p = |secs| Cadence::Period(secs);
    assert_eq!(p(3600).slot_start(T), Some(DAY + 5 * 3600));
    assert_eq!(p(3600).next_slot(T), Some(DAY + 6 * 3600));
    assert_eq!(p(5).slot_start(T), Some(T - 4));
    assert_eq!(Cadence::Daily.slot_start(T), Some(DAY));
    assert_eq!(Cadence::Daily.next_slot(T), Some(DAY + 86400));
    // Sunday: the week began on Monday the 16th.
    assert_eq!(Cadence::Weekly.slot_start(T), Some(DAY - 6 * 86400));
    assert_eq!(Cadence::Weekly.next_slot(T), Some(DAY + 86400));
    assert_eq!(
        slot_label(Cadence::Monthly.slot_start(T).unwrap()),
        "20261101-000000"
    );
    assert_eq!(
        slot_label(Cadence::Monthly.next_slot(T).unwrap()),
        "20261201-000000"
    );
    let cron = parse_cadence("*/20 3-6 * * *").unwrap();
    assert_eq!(slot_label(cron.slot_start(T).unwrap()), "20261122-050000");
    assert_eq!(slot_label(cron.next_slot(T).unwrap()), "20261122-052000");
    // A slot's start is its own slot.
    assert_eq!(cron.slot_start(DAY + 5 * 3600), Some(DAY + 5 * 3600));
    assert_eq!(slot_label(T), "20261122-051709");
}

#[test]
fn backup_slots_keep_their_old_labels() {
    let hourly = parse_backup_cadence("1h").unwrap();
    let label = |c: &Cadence| backup_slot_label(c, c.slot_start(T).unwrap());
    assert_eq!(label(&hourly), "20261122-0500");
    assert_eq!(label(&Cadence::Period(900)), "20261122-0515");
    assert_eq!(label(&Cadence::Daily), "20261122");
    assert_eq!(label(&Cadence::Weekly), "2026w47");
    assert_eq!(label(&Cadence::Monthly), "202611");
    let id = run_guid("pg", &label(&Cadence::Weekly));
    let mut e = crate::validation::ValidationErrors::default();
    let guid = crate::backup::Purpose::Backup { id }.task_guid();
    crate::validation::check_guid(&mut e, "id", &guid);
    assert!(e.0.is_empty(), "{e}");
    let mut e = crate::validation::ValidationErrors::default();
    crate::validation::check_guid(&mut e, "task_guid", &run_guid("report", &slot_label(T)));
    assert!(e.0.is_empty(), "{e}");
}

/// The world the scheduler acts on in these tests: a schedule's record and its runs,
/// with the BBS's claim (one handling per slot) applied to it.
struct World {
    s: Schedule,
    runs: Vec<Run>,
    started: Vec<String>,
    skipped: Vec<String>,
}

impl World {
    fn new(s: Schedule) -> World {
        World {
            s,
            runs: vec![],
            started: vec![],
            skipped: vec![],
        }
    }

    /// One brain's pass at `now`, as the BBS would let it act.
    fn tick(&mut self, now: i64) {
        for step in schedule_steps(&self.s, &self.runs, now).unwrap() {
            match step {
                Step::Start(slot) | Step::Skip { slot, .. } if slot.at <= self.s.last_slot_at => {
                    // The claim is refused: the slot was handled.
                }
                Step::Start(slot) => {
                    self.s.last_slot_at = slot.at;
                    self.started.push(slot.label.clone());
                    self.runs.push(Run {
                        id: run_guid(&self.s.name, &slot.label),
                        created_at: now * 1_000_000_000,
                        state: RunState::Running,
                    });
                }
                Step::Skip { slot, reason } => {
                    self.s.last_slot_at = slot.at;
                    assert!(reason.contains("is still running"), "{reason}");
                    self.skipped.push(slot.label);
                }
                Step::Prune { id } => self.runs.retain(|r| r.id != id),
                Step::Verify { .. } => unreachable!("only backup_steps verifies"),
            }
        }
    }

    fn finish_all(&mut self) {
        for r in &mut self.runs {
            if r.state == RunState::Running {
                r.state = RunState::Succeeded;
            }
        }
    }
}

/// A day of an hourly schedule, one tick a minute and two brains each tick: one run per
/// slot, consecutive slots, the last three kept.
#[test]
fn one_run_per_slot_over_a_simulated_day() {
    let mut w = World::new(task_schedule("hourly", 3));
    for minute in 0..24 * 60 {
        let now = DAY + minute * 60;
        w.tick(now);
        w.tick(now);
        w.finish_all();
    }
    assert_eq!(w.started.len(), 24, "{:?}", w.started);
    for (h, label) in w.started.iter().enumerate() {
        assert_eq!(label, &format!("20261122-{h:02}0000"));
    }
    assert!(w.skipped.is_empty());
    let kept: Vec<&str> = w.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        kept,
        [
            "report-20261122-210000",
            "report-20261122-220000",
            "report-20261122-230000"
        ]
    );
}

#[test]
fn a_slot_is_skipped_while_the_previous_run_still_goes() {
    let mut w = World::new(task_schedule("5s", 0));
    w.tick(DAY);
    // Still running at the next slot: skipped, and said why.
    let steps = schedule_steps(&w.s, &w.runs, DAY + 5).unwrap();
    assert_eq!(
        steps,
        [Step::Skip {
            slot: Slot {
                at: DAY + 5,
                label: "20261122-000005".into()
            },
            reason: "the previous run report-20261122-000000 is still running".into()
        }]
    );
    w.tick(DAY + 5);
    w.tick(DAY + 7);
    w.finish_all();
    w.tick(DAY + 10);
    assert_eq!(w.started, ["20261122-000000", "20261122-000010"]);
    assert_eq!(w.skipped, ["20261122-000005"]);
}

#[test]
fn after_downtime_only_the_newest_missed_slot_runs() {
    let mut w = World::new(task_schedule("15m", 0));
    w.tick(DAY);
    w.finish_all();
    // Down from 00:01 to 02:40: the 00:15 … 02:30 slots were missed.
    w.tick(DAY + 2 * 3600 + 40 * 60);
    w.tick(DAY + 2 * 3600 + 41 * 60);
    assert_eq!(w.started, ["20261122-000000", "20261122-023000"]);
}

#[test]
fn paused_schedules_start_nothing_and_show_no_next_run() {
    let mut s = task_schedule("hourly", 0);
    s.paused = true;
    assert!(schedule_steps(&s, &[], T).unwrap().is_empty());
    assert_eq!(next_run_at(&s, T), None);
    s.paused = false;
    // The current slot is due until it is handled; then the next one.
    assert_eq!(next_run_at(&s, T), Some(DAY + 5 * 3600));
    s.last_slot_at = DAY + 5 * 3600;
    assert_eq!(next_run_at(&s, T), Some(DAY + 6 * 3600));
}

#[test]
fn task_retention_counts_failed_runs_and_spares_running_ones() {
    let s = task_schedule("hourly", 2);
    let run = |id: &str, at: i64, state| Run {
        id: id.into(),
        created_at: at,
        state,
    };
    let runs = [
        run("a", 1, RunState::Succeeded),
        run("b", 2, RunState::Failed),
        run("c", 3, RunState::Running),
        run("d", 4, RunState::Failed),
        run("e", 5, RunState::Succeeded),
    ];
    let mut s = s;
    s.last_slot_at = T;
    let steps = schedule_steps(&s, &runs, T).unwrap();
    assert_eq!(
        steps,
        [
            Step::Prune { id: "b".into() },
            Step::Prune { id: "a".into() }
        ]
    );
}

#[test]
fn backup_schedules_leave_their_retention_to_the_retention_policy() {
    let s = Schedule {
        name: "pg".into(),
        kind: schedule::Kind::Backup as i32,
        volume: "pg".into(),
        every: "1h".into(),
        keep: 2,
        last_slot_at: T,
        ..Default::default()
    };
    let run = |id: &str, at: i64, state| Run {
        id: id.into(),
        created_at: at,
        state,
    };
    let runs = [
        run("pg-1", 1, RunState::Succeeded),
        run("pg-2", 2, RunState::Failed),
        run("pg-3", 3, RunState::Succeeded),
        run("pg-4", 4, RunState::Failed),
        run("pg-5", 5, RunState::Succeeded),
    ];
    // Beyond `keep`, but pruned by crate::retention (which knows verifications).
    assert_eq!(schedule_steps(&s, &runs, T).unwrap(), []);
    // A backup schedule's first slot is its backup id's old label.
    let mut fresh = s.clone();
    fresh.last_slot_at = 0;
    let steps = schedule_steps(&fresh, &[], T).unwrap();
    assert_eq!(
        steps,
        [Step::Start(Slot {
            at: DAY + 5 * 3600,
            label: "20261122-0500".into()
        })]
    );
}

#[test]
fn a_schedule_that_does_not_parse_is_an_error() {
    let e = schedule_steps(&task_schedule("often", 0), &[], T).unwrap_err();
    assert_eq!(e.every, "often");
}
