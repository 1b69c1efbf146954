use super::*;

use crate::testing::cell_presence;

const S: i64 = 1_000_000_000;

fn cell(id: &str, zone: &str) -> CellPresence {
    CellPresence {
        zone: zone.into(),
        ..cell_presence(id, &["local"])
    }
}

fn volume(name: &str, cell: &str, failover: Failover) -> Volume {
    let mut v = Volume {
        name: name.into(),
        cell_id: cell.into(),
        size_bytes: 1 << 30,
        used_bytes: 100 << 20,
        ..Default::default()
    };
    v.set_state(VolumeState::Ready);
    v.set_failover(failover);
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

fn lost(cells: &[(&str, i64, &str)]) -> HashMap<String, LostCell> {
    cells
        .iter()
        .map(|(id, since, zone)| {
            (
                id.to_string(),
                LostCell {
                    since: *since,
                    zone: zone.to_string(),
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn decide_at(
    volumes: &[Volume],
    cells: &[CellPresence],
    lost: &HashMap<String, LostCell>,
    backups: &[Backup],
    now: i64,
) -> Vec<Step> {
    decide(&View {
        volumes,
        cells,
        lost,
        backups,
        now,
    })
}

#[test]
fn a_lost_cells_volume_moves_after_its_grace_to_another_zone_from_its_newest_good_backup() {
    let cells = [cell("b", "z1"), cell("c", "z2")];
    let volumes = [volume("pg", "a", Failover::Restore)];
    let backups = [
        backup("old", "pg", 10 * S, "ok"),
        backup("newer", "pg", 20 * S, ""),
        backup("bad", "pg", 30 * S, "failed: manifest differs"),
        backup("other", "web", 40 * S, ""),
    ];
    let gone = lost(&[("a", 100 * S, "z1")]);
    // Within the grace period: nothing.
    assert_eq!(
        decide_at(&volumes, &cells, &gone, &backups, 159 * S),
        vec![]
    );
    let steps = decide_at(&volumes, &cells, &gone, &backups, 160 * S);
    assert_eq!(
        steps,
        vec![Step::Move {
            volume: "pg".into(),
            from: "a".into(),
            to: "c".into(),
            epoch: 0,
            backup: "newer".into(),
            lost_at: 100 * S,
        }],
        "another zone first (c), the newest backup that did not fail verification"
    );
}

#[test]
fn without_another_zone_the_same_zone_does_and_the_emptiest_cell_wins() {
    let cells = [cell("b", "z1"), cell("c", "z1"), cell("d", "z1")];
    let mut busy = volume("busy", "b", Failover::None);
    busy.size_bytes = 5 << 30;
    let volumes = [volume("pg", "a", Failover::Restore), busy];
    let backups = [backup("b1", "pg", 10 * S, "")];
    let gone = lost(&[("a", 0, "z1")]);
    let steps = decide_at(&volumes, &cells, &gone, &backups, 61 * S);
    assert!(
        matches!(&steps[..], [Step::Move { to, .. }] if to == "c"),
        "{steps:?}"
    );
}

#[test]
fn the_grace_is_the_volumes_own_when_it_has_one() {
    let cells = [cell("b", "")];
    let mut v = volume("pg", "a", Failover::Restore);
    v.failover_grace_ns = 20 * S;
    let backups = [backup("b1", "pg", 0, "")];
    let gone = lost(&[("a", 0, "")]);
    assert!(decide_at(&[v.clone()], &cells, &gone, &backups, 19 * S).is_empty());
    assert_eq!(decide_at(&[v], &cells, &gone, &backups, 20 * S).len(), 1);
}

#[test]
fn a_cell_with_a_longer_lease_is_waited_for_past_the_grace() {
    let cells = [cell("b", "")];
    let mut v = volume("pg", "a", Failover::Restore);
    v.failover_grace_ns = 25 * S;
    let backups = [backup("b1", "pg", 0, "")];
    let mut gone = lost(&[("a", 0, "")]);
    gone.get_mut("a").unwrap().lease_ttl_ns = 60 * S;
    // The cell may run its containers for 60 s after its last renewal, then fences.
    assert!(decide_at(&[v.clone()], &cells, &gone, &backups, 69 * S).is_empty());
    assert_eq!(
        decide_at(&[v.clone()], &cells, &gone, &backups, 70 * S).len(),
        1
    );
    // A shorter lease than the grace changes nothing.
    gone.get_mut("a").unwrap().lease_ttl_ns = 3 * S;
    assert!(decide_at(&[v.clone()], &cells, &gone, &backups, 24 * S).is_empty());
    assert_eq!(decide_at(&[v], &cells, &gone, &backups, 25 * S).len(), 1);
}

#[test]
fn volumes_without_failover_or_on_present_cells_or_never_made_stay() {
    let cells = [cell("a", ""), cell("b", "")];
    let mut never_made = volume("new", "x", Failover::Restore);
    never_made.set_state(VolumeState::Pending);
    let mut removing = volume("rm", "x", Failover::Restore);
    removing.set_state(VolumeState::Removing);
    let volumes = [
        volume("plain", "x", Failover::None),
        volume("here", "a", Failover::Restore),
        never_made,
        removing,
    ];
    let backups: Vec<Backup> = ["plain", "here", "new", "rm"]
        .iter()
        .map(|v| backup(&format!("{v}-1"), v, 0, ""))
        .collect();
    let gone = lost(&[("x", 0, "")]);
    assert_eq!(
        decide_at(&volumes, &cells, &gone, &backups, 1000 * S),
        vec![]
    );
}

#[test]
fn a_volume_refilled_by_a_failover_moves_again_if_its_new_cell_is_lost() {
    let cells = [cell("c", "")];
    let mut v = volume("pg", "b", Failover::Restore);
    v.set_state(VolumeState::Pending);
    v.epoch = 1;
    let backups = [backup("b1", "pg", 0, "")];
    let gone = lost(&[("a", 0, ""), ("b", 10 * S, "")]);
    let steps = decide_at(&[v], &cells, &gone, &backups, 100 * S);
    assert!(
        matches!(&steps[..], [Step::Move { from, to, epoch: 1, .. }] if from == "b" && to == "c"),
        "{steps:?}"
    );
}

#[test]
fn no_good_backup_or_no_room_is_stuck_with_the_reason() {
    let full = CellPresence {
        volume_pool_bytes: 1 << 30,
        volume_pool_used_bytes: (1 << 30) - (50 << 20),
        ..cell("b", "")
    };
    let no_driver = cell_presence("c", &[]);
    let cells = [full, no_driver];
    let volumes = [
        volume("nobackup", "a", Failover::Restore),
        volume("noroom", "a", Failover::Restore),
    ];
    let mut failed = backup("f", "nobackup", 0, "");
    failed.set_state(BackupState::Failed);
    let backups = [
        failed,
        backup("v", "nobackup", 0, "failed: bad"),
        backup("ok", "noroom", 0, ""),
    ];
    let gone = lost(&[("a", 0, "")]);
    let steps = decide_at(&volumes, &cells, &gone, &backups, 100 * S);
    assert_eq!(steps.len(), 2, "{steps:?}");
    for (step, (name, words)) in steps.iter().zip([
        ("nobackup", "no good backup"),
        ("noroom", "has room for volume noroom"),
    ]) {
        match step {
            Step::Stuck { volume, why } => {
                assert_eq!(volume, name);
                assert!(why.contains(words), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn two_volumes_of_one_lost_cell_spread_over_the_others() {
    let cells = [cell("b", ""), cell("c", "")];
    let mut first = volume("one", "a", Failover::Restore);
    first.created_at = 1;
    let mut second = volume("two", "a", Failover::Restore);
    second.created_at = 2;
    let backups = [backup("1", "one", 0, ""), backup("2", "two", 0, "")];
    let gone = lost(&[("a", 0, "")]);
    let steps = decide_at(&[second, first], &cells, &gone, &backups, 100 * S);
    let to: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| match s {
            Step::Move { volume, to, .. } => (volume.as_str(), to.as_str()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(to, vec![("one", "b"), ("two", "c")]);
}

#[test]
fn deciding_again_after_the_move_does_nothing() {
    let cells = [cell("b", "")];
    let mut v = volume("pg", "a", Failover::Restore);
    let backups = [backup("b1", "pg", 0, "")];
    let gone = lost(&[("a", 0, "")]);
    let steps = decide_at(&[v.clone()], &cells, &gone, &backups, 100 * S);
    let Step::Move { to, .. } = &steps[0] else {
        panic!("{steps:?}")
    };
    v.cell_id = to.clone();
    v.epoch += 1;
    v.set_state(VolumeState::Pending);
    assert_eq!(decide_at(&[v], &cells, &gone, &backups, 101 * S), vec![]);
}

#[test]
fn grace_must_cover_the_presence_ttl_and_the_fence_margin() {
    assert_eq!(check_grace(0, 15 * S), Ok(()), "0: the default");
    assert_eq!(check_grace(25 * S, 15 * S), Ok(()));
    let err = check_grace(20 * S, 15 * S).unwrap_err();
    assert!(err.contains("use at least 25s"), "{err}");
}

#[test]
fn a_copy_is_fenced_when_its_volume_lives_elsewhere_or_moved_on() {
    let mut v = volume("pg", "b", Failover::Restore);
    v.epoch = 2;
    assert_eq!(copy_fate(None, "a", 0), CopyFate::Keep);
    assert_eq!(copy_fate(Some(&v), "a", 2), CopyFate::Fence);
    assert_eq!(copy_fate(Some(&v), "b", 1), CopyFate::Fence);
    assert_eq!(copy_fate(Some(&v), "b", 2), CopyFate::Keep);
    let name = fenced_name("pg", 1, 1700);
    assert_eq!(name, "pg@fenced-e1-1700");
    assert!(crate::volume::check_name("volume", &name).is_err());
}

#[test]
fn the_data_loss_window_runs_from_the_backup_to_the_loss() {
    let b = backup("b", "pg", 10 * S, "");
    assert_eq!(data_loss_window_ns(&b, 25 * S), 15 * S);
    assert_eq!(data_loss_window_ns(&b, 5 * S), 0);
}

#[test]
fn modes_parse_and_print() {
    for m in [Failover::None, Failover::Restore, Failover::Standby] {
        assert_eq!(parse_mode(mode_name(m)), Ok(m));
    }
    assert!(parse_mode("hot")
        .unwrap_err()
        .contains("restore, standby or none"));
}

#[test]
fn only_the_volumes_cell_mounts_it_and_only_the_refill_while_it_refills() {
    let mut v = volume("pg", "b", Failover::Restore);
    assert_eq!(mount_refusal(&v, "b", "web"), None);
    let (name, why) = mount_refusal(&v, "a", "web").unwrap();
    assert_eq!(name, ErrorName::VolumeFenced);
    assert!(why.contains("lives on cell \"b\""), "{why}");
    v.failover_restore_task = "restore-pg-1".into();
    v.failed_over_backup = "b1".into();
    assert_eq!(mount_refusal(&v, "b", "restore-pg-1"), None);
    let (name, why) = mount_refusal(&v, "b", "web").unwrap();
    assert_eq!(name, ErrorName::VolumeNotReady);
    assert!(why.contains("refilled from backup b1"), "{why}");
    assert_eq!(
        mount_refusal(&v, "a", "restore-pg-1").map(|r| r.0),
        Some(ErrorName::VolumeFenced)
    );
}
