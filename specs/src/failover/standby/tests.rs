use std::collections::HashMap;

use super::*;
use crate::failover::{decide, LostCell, Step};
use crate::models::{backup::State as BackupState, Backup, CellPresence};
use crate::testing::cell_presence;

const S: i64 = 1_000_000_000;

fn cell(id: &str, zone: &str) -> CellPresence {
    CellPresence {
        zone: zone.into(),
        ..cell_presence(id, &["local"])
    }
}

fn standby(name: &str, cell: &str, standby_cell: &str) -> Volume {
    let mut v = Volume {
        name: name.into(),
        cell_id: cell.into(),
        size_bytes: 1 << 30,
        used_bytes: 100 << 20,
        standby_cell_id: standby_cell.into(),
        ..Default::default()
    };
    v.set_state(VolumeState::Ready);
    v.set_failover(Failover::Standby);
    v
}

fn backup(id: &str, volume: &str, created_at: i64, verified: &str) -> Backup {
    let mut b = Backup {
        id: id.into(),
        volume: volume.into(),
        created_at,
        verified: verified.into(),
        ..Default::default()
    };
    b.set_state(BackupState::Completed);
    b
}

fn tend_at(
    volumes: &[Volume],
    cells: &[CellPresence],
    lost: &HashMap<String, LostCell>,
    backups: &[Backup],
    now: i64,
) -> Vec<StandbyStep> {
    tend(&View {
        volumes,
        cells,
        lost,
        backups,
        now,
    })
}

#[test]
fn a_standby_volume_gets_its_copy_on_another_cell_another_zone_first() {
    let cells = [cell("a", "z1"), cell("b", "z1"), cell("c", "z2")];
    let none = HashMap::new();
    let v = standby("pg", "a", "");
    assert_eq!(
        tend_at(std::slice::from_ref(&v), &cells, &none, &[], 0),
        vec![StandbyStep::Place {
            volume: "pg".into(),
            from: "".into(),
            to: "c".into()
        }]
    );
    // Only its own cell: nowhere to keep a copy, nothing to do.
    assert!(tend_at(std::slice::from_ref(&v), &cells[..1], &none, &[], 0).is_empty());
    // A restore or no failover volume keeps none.
    let mut r = v.clone();
    r.set_failover(Failover::Restore);
    assert!(tend_at(&[r], &cells, &none, &[], 0).is_empty());
    // Nor a volume not made yet, or being refilled after a failover, or whose cell is gone.
    let mut p = v.clone();
    p.set_state(VolumeState::Pending);
    let mut f = v.clone();
    f.failover_restore_task = "restore-pg-1".into();
    assert!(tend_at(&[p, f], &cells, &none, &[], 0).is_empty());
    assert!(tend_at(std::slice::from_ref(&v), &cells[1..], &none, &[], 0).is_empty());
    // A copy recorded on the volume's own cell (it was just taken over) moves.
    let own = standby("pg", "c", "c");
    assert_eq!(
        tend_at(&[own], &cells, &none, &[], 0),
        vec![StandbyStep::Place {
            volume: "pg".into(),
            from: "c".into(),
            to: "a".into()
        }]
    );
}

#[test]
fn two_copies_spread_over_the_cells() {
    let cells = [cell("a", ""), cell("b", ""), cell("c", "")];
    let mut one = standby("one", "a", "");
    one.created_at = 1;
    let mut two = standby("two", "a", "");
    two.created_at = 2;
    let steps = tend_at(&[one, two], &cells, &HashMap::new(), &[], 0);
    assert_eq!(
        steps,
        vec![
            StandbyStep::Place {
                volume: "one".into(),
                from: "".into(),
                to: "b".into()
            },
            StandbyStep::Place {
                volume: "two".into(),
                from: "".into(),
                to: "c".into()
            }
        ]
    );
}

#[test]
fn a_made_copy_gets_the_newest_good_backup_once() {
    let cells = [cell("a", ""), cell("b", "")];
    let none = HashMap::new();
    let backups = [
        backup("old", "pg", 10, "ok"),
        backup("new", "pg", 20, ""),
        backup("bad", "pg", 30, "failed: manifest"),
        backup("other", "db", 40, ""),
    ];
    let mut v = standby("pg", "a", "b");
    // Not made on its cell yet: nothing to restore into.
    assert!(tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 100).is_empty());
    v.standby_ready = true;
    let refresh = StandbyStep::Refresh {
        volume: "pg".into(),
        cell: "b".into(),
        backup: "new".into(),
    };
    assert_eq!(
        tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 100),
        vec![refresh.clone()]
    );
    v.standby_backup = "old".into();
    assert_eq!(
        tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 100),
        vec![refresh.clone()]
    );
    // Current: nothing.
    v.standby_backup = "new".into();
    assert!(tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 100).is_empty());
    // A refresh running, or one that failed and waits for its retry time.
    v.standby_backup = "old".into();
    v.standby_task = "standby-pg-1".into();
    assert!(tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 100).is_empty());
    v.standby_task.clear();
    v.standby_retry_at = 101;
    assert!(tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 100).is_empty());
    assert_eq!(
        tend_at(std::slice::from_ref(&v), &cells, &none, &backups, 101),
        vec![refresh]
    );
    // No backup yet: nothing.
    assert!(tend_at(&[v], &cells, &none, &[], 101).is_empty());
}

#[test]
fn a_gone_standby_cell_is_replaced_after_the_grace_period() {
    let cells = [cell("a", ""), cell("c", "")];
    let mut v = standby("pg", "a", "b");
    v.failover_grace_ns = 30 * S;
    v.standby_ready = true;
    let lost: HashMap<String, LostCell> = [(
        "b".to_string(),
        LostCell {
            since: 100 * S,
            zone: "".into(),
            ..Default::default()
        },
    )]
    .into();
    // Within the grace period (a restart): kept, and not refreshed while away.
    let backups = [backup("b1", "pg", 1, "")];
    assert!(tend_at(std::slice::from_ref(&v), &cells, &lost, &backups, 120 * S).is_empty());
    let moved = vec![StandbyStep::Place {
        volume: "pg".into(),
        from: "b".into(),
        to: "c".into(),
    }];
    assert_eq!(
        tend_at(std::slice::from_ref(&v), &cells, &lost, &[], 130 * S),
        moved
    );
    // A cell this brain never saw counts as gone.
    assert_eq!(tend_at(&[v], &cells, &HashMap::new(), &[], 0), moved);
}

#[test]
fn a_lost_volume_moves_onto_its_standby_copy_when_it_holds_data() {
    // "c" is in another zone and empty, so a restore would go there; the standby
    // copy on "b" wins.
    let cells = [cell("b", "z1"), cell("c", "z2")];
    let lost: HashMap<String, LostCell> = [(
        "a".to_string(),
        LostCell {
            since: 0,
            zone: "z1".into(),
            ..Default::default()
        },
    )]
    .into();
    let backups = [backup("b1", "pg", 1, "")];
    let mut v = standby("pg", "a", "b");
    v.standby_ready = true;
    v.standby_backup = "b1".into();
    let view = View {
        volumes: &[v.clone()],
        cells: &cells,
        lost: &lost,
        backups: &backups,
        now: 100 * S,
    };
    assert!(takes_over(&v, &view));
    let to = |steps: Vec<Step>| match &steps[..] {
        [Step::Move { to, backup, .. }] => (to.clone(), backup.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(to(decide(&view)), ("b".into(), "b1".into()));
    assert!(current(&v, "b1"));
    // A copy never filled is no better than any cell: restored like `restore`.
    let mut empty = v.clone();
    empty.standby_backup.clear();
    let view = View {
        volumes: &[empty.clone()],
        ..view
    };
    assert!(!takes_over(&empty, &view));
    assert_eq!(to(decide(&view)), ("c".into(), "b1".into()));
    // A copy a refresh was writing into is taken over and refilled.
    let mut refreshing = v.clone();
    refreshing.standby_task = "standby-pg-2".into();
    assert!(!current(&refreshing, "b1"));
    assert!(!current(&v, "b2"));
}
