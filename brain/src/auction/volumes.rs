//! Where new volumes go: the pure choice the brain makes for the volumes the BBS
//! recorded without a cell (no cell was asked for). A volume goes on the cell with
//! the `local` volume driver whose volumes hold the fewest bytes.

use lattice_specs::models::volume::State as VolumeState;
use lattice_specs::models::{CellPresence, Volume};

/// The volume driver whose volumes live on one cell.
const LOCAL_DRIVER: &str = "local";

/// Whether volume `v` waits for the brain to give it a cell.
pub fn waits_for_a_cell(v: &Volume) -> bool {
    v.cell_id.is_empty() && v.state() == VolumeState::Pending
}

/// The cell a new volume goes on: the cell with the `local` volume driver whose
/// volumes (`volumes`) hold the fewest bytes (ties: the smallest cell id); `None`
/// when no cell offers that driver.
pub fn volume_cell(cells: &[CellPresence], volumes: &[Volume]) -> Option<String> {
    let held = |id: &str| -> u64 {
        volumes
            .iter()
            .filter(|v| v.cell_id == id)
            .map(|v| v.size_bytes)
            .sum()
    };
    cells
        .iter()
        .filter(|c| c.volume_drivers.iter().any(|d| d == LOCAL_DRIVER))
        .min_by_key(|c| (held(&c.cell_id), c.cell_id.clone()))
        .map(|c| c.cell_id.clone())
}

/// A cell for every volume that waits for one, oldest first (ties: by name): each
/// choice counts the volumes placed before it. Pairs of (volume name, cell id);
/// none when no cell offers the `local` driver.
pub fn place_volumes(cells: &[CellPresence], volumes: &[Volume]) -> Vec<(String, String)> {
    let mut waiting: Vec<&Volume> = volumes.iter().filter(|v| waits_for_a_cell(v)).collect();
    waiting.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    let mut placed: Vec<Volume> = volumes.to_vec();
    let mut choices = vec![];
    for v in waiting {
        let Some(cell) = volume_cell(cells, &placed) else {
            break;
        };
        placed.push(Volume {
            cell_id: cell.clone(),
            ..v.clone()
        });
        choices.push((v.name.clone(), cell));
    }
    choices
}

#[cfg(test)]
mod tests {
    use super::*;

    use lattice_specs::testing::cell_presence as cell;

    fn volume(cell_id: &str, size_bytes: u64) -> Volume {
        Volume {
            cell_id: cell_id.into(),
            size_bytes,
            ..Default::default()
        }
    }

    fn waiting(name: &str, size_bytes: u64, created_at: i64) -> Volume {
        Volume {
            name: name.into(),
            created_at,
            state: VolumeState::Pending as i32,
            ..volume("", size_bytes)
        }
    }

    #[test]
    fn a_new_volume_goes_where_the_fewest_volume_bytes_are() {
        let cells = [
            cell("a", &["local"]),
            cell("b", &["local"]),
            cell("c", &[]),
            cell("d", &["nfs", "local"]),
        ];
        let volumes = [
            volume("a", 5),
            volume("b", 3),
            volume("b", 1),
            volume("z", 1),
        ];
        // a holds 5, b 4, d 0 (c has no local driver, z is gone).
        assert_eq!(volume_cell(&cells, &volumes), Some("d".to_string()));
        let volumes = [volume("a", 5), volume("b", 3), volume("d", 4)];
        assert_eq!(volume_cell(&cells, &volumes), Some("b".to_string()));
        assert_eq!(
            volume_cell(&cells, &[]),
            Some("a".to_string()),
            "ties go to the smallest cell id"
        );
    }

    #[test]
    fn without_a_local_driver_anywhere_there_is_no_cell() {
        assert_eq!(volume_cell(&[cell("c", &["nfs"])], &[]), None);
        let volumes = [waiting("x", 1, 0)];
        assert!(place_volumes(&[cell("c", &["nfs"])], &volumes).is_empty());
    }

    #[test]
    fn waiting_volumes_are_placed_oldest_first_each_counting_the_ones_before() {
        let cells = [cell("a", &["local"]), cell("b", &["local"])];
        let volumes = [
            volume("a", 2),
            waiting("late", 1, 30),
            waiting("early", 5, 10),
            waiting("middle", 1, 20),
        ];
        // early goes to b (0 bytes), then a holds 2 and b 5: middle to a (3),
        // late to a (4 < 5).
        assert_eq!(
            place_volumes(&cells, &volumes),
            vec![
                ("early".to_string(), "b".to_string()),
                ("middle".to_string(), "a".to_string()),
                ("late".to_string(), "a".to_string()),
            ]
        );
    }

    #[test]
    fn only_pending_volumes_without_a_cell_wait() {
        let mut removing = waiting("r", 1, 0);
        removing.state = VolumeState::Removing as i32;
        let placed = Volume {
            cell_id: "a".into(),
            ..waiting("p", 1, 0)
        };
        assert!(waits_for_a_cell(&waiting("w", 1, 0)));
        assert!(!waits_for_a_cell(&removing));
        assert!(!waits_for_a_cell(&placed));
        let cells = [cell("a", &["local"])];
        assert!(place_volumes(&cells, &[removing, placed]).is_empty());
    }
}
