use super::*;

const NANOS: i64 = 1_000_000_000;

fn t(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .unwrap()
        .and_utc()
        .timestamp()
        * NANOS
}

fn done(time: &str) -> Backup {
    Backup {
        id: time.into(),
        volume: "pg".into(),
        state: State::Completed as i32,
        created_at: t(time),
        slot: time.into(),
        ..Default::default()
    }
}

/// The snapshots of the check against Debian's restic 0.14 (`restic backup --time`).
const RESTIC_SNAPSHOTS: [&str; 19] = [
    "2026-01-03T10:00",
    "2026-01-05T09:00",
    "2026-01-05T21:00",
    "2026-01-12T08:00",
    "2026-01-20T08:00",
    "2026-01-31T23:00",
    "2026-02-01T01:00",
    "2026-02-02T12:00",
    "2026-02-09T12:00",
    "2026-02-10T12:00",
    "2026-02-15T12:00",
    "2026-02-27T06:00",
    "2026-02-28T06:00",
    "2026-03-01T06:00",
    "2026-03-01T18:00",
    "2026-03-02T06:00",
    "2026-03-03T06:00",
    "2026-03-03T07:00",
    "2026-03-04T06:00",
];

fn policy(last: u32, daily: u32, weekly: u32, monthly: u32) -> Retention {
    Retention {
        keep_last: last,
        keep_daily: daily,
        keep_weekly: weekly,
        keep_monthly: monthly,
    }
}

fn kept(d: &Decision) -> Vec<&str> {
    let mut k: Vec<&str> = d.keep.iter().map(|(id, _)| id.as_str()).collect();
    k.sort();
    k
}

#[test]
fn restic_policies_keep_what_restic_keeps() {
    // Each line: the policy, and what `restic forget --dry-run --json` (0.14.0, TZ=UTC)
    // kept of RESTIC_SNAPSHOTS.
    let cases: [(Retention, &[&str]); 7] = [
        (
            policy(3, 0, 0, 0),
            &["2026-03-03T06:00", "2026-03-03T07:00", "2026-03-04T06:00"],
        ),
        (
            policy(0, 3, 0, 0),
            &["2026-03-02T06:00", "2026-03-03T07:00", "2026-03-04T06:00"],
        ),
        (
            policy(0, 0, 3, 0),
            &["2026-02-15T12:00", "2026-03-01T18:00", "2026-03-04T06:00"],
        ),
        (
            policy(0, 0, 0, 2),
            &["2026-02-28T06:00", "2026-03-04T06:00"],
        ),
        (
            policy(2, 3, 3, 3),
            &[
                "2026-01-31T23:00",
                "2026-02-15T12:00",
                "2026-02-28T06:00",
                "2026-03-01T18:00",
                "2026-03-02T06:00",
                "2026-03-03T07:00",
                "2026-03-04T06:00",
            ],
        ),
        (
            policy(0, 30, 0, 0),
            &[
                "2026-01-03T10:00",
                "2026-01-05T21:00",
                "2026-01-12T08:00",
                "2026-01-20T08:00",
                "2026-01-31T23:00",
                "2026-02-01T01:00",
                "2026-02-02T12:00",
                "2026-02-09T12:00",
                "2026-02-10T12:00",
                "2026-02-15T12:00",
                "2026-02-27T06:00",
                "2026-02-28T06:00",
                "2026-03-01T18:00",
                "2026-03-02T06:00",
                "2026-03-03T07:00",
                "2026-03-04T06:00",
            ],
        ),
        (
            // ISO weeks: Sunday 02-01 and Monday 02-02 are different weeks.
            policy(0, 0, 10, 0),
            &[
                "2026-01-03T10:00",
                "2026-01-05T21:00",
                "2026-01-12T08:00",
                "2026-01-20T08:00",
                "2026-02-01T01:00",
                "2026-02-02T12:00",
                "2026-02-15T12:00",
                "2026-03-01T18:00",
                "2026-03-04T06:00",
            ],
        ),
    ];
    // Given in any order.
    let mut backups: Vec<Backup> = RESTIC_SNAPSHOTS.iter().map(|s| done(s)).collect();
    backups.reverse();
    backups.swap(3, 11);
    for (p, want) in cases {
        let d = apply(&p, &backups, &HashSet::new());
        assert_eq!(kept(&d), want, "{p:?}");
        assert_eq!(d.keep.len() + d.remove.len(), RESTIC_SNAPSHOTS.len());
    }
    // The reasons, as restic gives them for the combined policy.
    let d = apply(&policy(2, 3, 3, 3), &backups, &HashSet::new());
    assert_eq!(
        d.keep[0],
        (
            "2026-03-04T06:00".to_string(),
            vec![Reason::Last, Reason::Daily, Reason::Weekly, Reason::Monthly]
        )
    );
    assert_eq!(d.keep[1].1, vec![Reason::Last, Reason::Daily]);
    assert_eq!(d.remove[0], "2026-03-03T06:00", "newest first");
}

#[test]
fn the_newest_verified_good_backup_is_never_removed() {
    let mut good = done("2026-03-01T00:00");
    good.verified = VERIFIED_OK.into();
    let mut corrupt = done("2026-03-02T00:00");
    corrupt.verified = "failed: the restored data differs from the backup".into();
    let mut older_good = done("2026-02-01T00:00");
    older_good.verified = VERIFIED_OK.into();
    let backups = vec![older_good, good, corrupt];
    let d = apply(&policy(1, 0, 0, 0), &backups, &HashSet::new());
    // The corrupted one holds no slot: keep-last 1 is the verified one, which is
    // also the newest verified; the corrupted one is a recent failure.
    assert_eq!(
        d.keep,
        vec![
            ("2026-03-02T00:00".into(), vec![Reason::RecentFailure]),
            (
                "2026-03-01T00:00".into(),
                vec![Reason::Last, Reason::NewestVerified]
            ),
        ]
    );
    assert_eq!(d.remove, vec!["2026-02-01T00:00".to_string()]);

    // Many newer unverified (maybe silently emptied) backups do not push it out.
    let mut backups: Vec<Backup> = (1..=9)
        .map(|d| done(&format!("2026-04-0{d}T00:00")))
        .collect();
    let mut verified = done("2026-03-01T00:00");
    verified.verified = VERIFIED_OK.into();
    backups.push(verified);
    let d = apply(&policy(3, 0, 0, 0), &backups, &HashSet::new());
    assert_eq!(d.keep.len(), 4, "{d:?}");
    assert_eq!(
        d.keep[3],
        ("2026-03-01T00:00".into(), vec![Reason::NewestVerified])
    );
    assert_eq!(d.remove.len(), 6);
}

#[test]
fn a_backup_being_verified_is_kept_and_made_by_hand_running_or_forgotten_ones_never_removed() {
    let mut manual = done("2026-01-01T00:00");
    manual.slot.clear();
    let mut running = done("2026-01-02T00:00");
    running.state = State::Running as i32;
    let mut forgetting = done("2026-01-03T00:00");
    forgetting.forgetting = true;
    let backups = vec![
        manual,
        running,
        forgetting,
        done("2026-01-04T00:00"),
        done("2026-01-05T00:00"),
        done("2026-01-06T00:00"),
    ];
    let verifying: HashSet<String> = ["2026-01-04T00:00".to_string()].into();
    let d = apply(&policy(1, 0, 0, 0), &backups, &verifying);
    assert_eq!(kept(&d), ["2026-01-04T00:00", "2026-01-06T00:00"], "{d:?}");
    assert_eq!(d.remove, vec!["2026-01-05T00:00".to_string()]);
    // A verified hand-made backup protects nothing of the schedule's (it stays anyway).
    let mut backups = backups;
    backups[0].verified = VERIFIED_OK.into();
    backups[0].created_at = t("2026-02-01T00:00");
    let d = apply(&policy(1, 0, 0, 0), &backups, &HashSet::new());
    assert_eq!(
        d.remove,
        vec![
            "2026-01-05T00:00".to_string(),
            "2026-01-04T00:00".to_string()
        ]
    );
}

#[test]
fn failed_backups_stay_while_recent_and_at_most_keep_last_of_them() {
    let failed = |s: &str| Backup {
        state: State::Failed as i32,
        ..done(s)
    };
    let backups = vec![
        failed("2026-01-01T00:00"),
        done("2026-01-02T00:00"),
        done("2026-01-03T00:00"),
        failed("2026-01-04T00:00"),
        failed("2026-01-05T00:00"),
        failed("2026-01-06T00:00"),
    ];
    let d = apply(&policy(2, 0, 0, 0), &backups, &HashSet::new());
    assert_eq!(
        kept(&d),
        [
            "2026-01-02T00:00",
            "2026-01-03T00:00",
            "2026-01-05T00:00",
            "2026-01-06T00:00"
        ]
    );
    assert_eq!(
        d.remove,
        vec![
            "2026-01-04T00:00".to_string(),
            "2026-01-01T00:00".to_string()
        ]
    );
    // With no good backup at all, the newest failures stay (the evidence), bounded.
    let only_failed: Vec<Backup> = (1..=9)
        .map(|d| failed(&format!("2026-01-0{d}T00:00")))
        .collect();
    let d = apply(&policy(0, 7, 0, 0), &only_failed, &HashSet::new());
    assert_eq!(d.keep.len(), DEFAULT_KEEP as usize);
    assert_eq!(d.remove.len(), 9 - DEFAULT_KEEP as usize);
}

#[test]
fn a_schedule_without_retention_keeps_its_keep_last() {
    let s = Schedule {
        keep: 3,
        ..Default::default()
    };
    assert_eq!(policy_of(&s), policy(3, 0, 0, 0));
    assert_eq!(
        policy_of(&Schedule::default()),
        policy(DEFAULT_KEEP, 0, 0, 0)
    );
    let s = Schedule {
        keep: 3,
        retention: Some(policy(0, 7, 4, 6)),
        ..Default::default()
    };
    assert_eq!(policy_of(&s), policy(0, 7, 4, 6));
}

#[test]
fn verification_slots_and_target() {
    let day = 86_400;
    let mut s = Schedule {
        every: "hourly".into(),
        verify_every: "daily".into(),
        ..Default::default()
    };
    let now = 20_000 * day + 3600;
    assert_eq!(verify_due(&s, now), Ok(Some(20_000 * day)));
    s.last_verify_at = 20_000 * day;
    assert_eq!(verify_due(&s, now), Ok(None), "claimed already");
    assert_eq!(verify_due(&s, now + day), Ok(Some(20_001 * day)));
    s.paused = true;
    assert_eq!(verify_due(&s, now + day), Ok(None));
    s.paused = false;
    s.verify_every = String::new();
    assert_eq!(verify_due(&s, now + day), Ok(None), "never verifies");
    s.verify_every = "10s".into();
    assert!(verify_due(&s, now).unwrap_err().to_string().contains("10s"));

    let mut newest = done("2026-01-03T00:00");
    newest.forgetting = true;
    let mut failed = done("2026-01-04T00:00");
    failed.state = State::Failed as i32;
    let mut other = done("2026-01-05T00:00");
    other.volume = "other".into();
    let backups = vec![done("2026-01-02T00:00"), newest, failed, other];
    assert_eq!(
        verify_target(&backups, "pg").map(|b| b.id.as_str()),
        Some("2026-01-02T00:00")
    );
    assert_eq!(verify_target(&backups, "none"), None);
}

#[test]
fn a_backup_schedule_verifies_when_due_and_prunes_only_its_volume() {
    let s = Schedule {
        name: "pg".into(),
        volume: "pg".into(),
        every: "hourly".into(),
        keep: 1,
        verify_every: "daily".into(),
        ..Default::default()
    };
    let mut other = done("2026-01-01T00:00");
    other.volume = "other".into();
    other.id = "other-1".into();
    let mut checked = done("2026-01-02T00:00");
    checked.verify_task_guid = "verify-2026-01-02T00:00-abcd".into();
    let backups = vec![
        other,
        checked,
        done("2026-01-03T00:00"),
        done("2026-01-04T00:00"),
    ];
    let now = t("2026-01-04T01:00") / NANOS;
    let live: HashSet<&str> = ["verify-2026-01-02T00:00-abcd"].into();
    let verifying = verifying(&backups, &live);
    assert_eq!(verifying, ["2026-01-02T00:00".to_string()].into());
    let steps = backup_steps(&s, &backups, &verifying, now).unwrap();
    assert_eq!(
        steps,
        [
            Step::Verify {
                at: t("2026-01-04T00:00") / NANOS
            },
            Step::Prune {
                id: "2026-01-03T00:00".into()
            }
        ]
    );
    let steps = backup_steps(&s, &backups, &HashSet::new(), now).unwrap();
    assert_eq!(steps.len(), 3, "{steps:?}");
}

#[test]
fn a_policy_names_its_bad_field() {
    let mut p = BackupPolicy {
        retention: policy(0, 7, 4, 6),
        verify_every: "daily".into(),
        smaller_ratio: 0.3,
        faster_ratio: 0.0,
    };
    assert_eq!(p.check(), Ok(()));
    let mut s = Schedule::default();
    p.set(&mut s);
    assert_eq!(BackupPolicy::of(&s), p);
    p.verify_every = "sometimes".into();
    assert_eq!(p.check().unwrap_err().0, "verify");
    p.verify_every = "weekly".into();
    p.smaller_ratio = 2.0;
    let (field, why) = p.check().unwrap_err();
    assert_eq!(field, "smaller_than");
    assert!(why.contains("ratio from 0 to 1"), "{why}");
    p.smaller_ratio = 0.5;
    p.faster_ratio = -0.1;
    assert_eq!(p.check().unwrap_err().0, "faster_than");
}
