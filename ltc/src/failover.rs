//! What `ltc volume list` says of a volume's failover: its mode and grace, its last
//! failover (when, from which cell and backup, the data it lost), the copies fenced
//! off on cells that came back.

use lattice_specs::receptor::VolumeResponse;

use crate::show::age;

/// A span of nanoseconds for people (`age` counts back from `now`).
fn span(ns: i64) -> String {
    if ns <= 0 {
        return "0s".into();
    }
    age(1, ns + 1)
}

/// `restore 60s`, `standby 60s on cell-2 (backup B)`, `-` without failover.
pub fn mode(v: &VolumeResponse) -> String {
    match v.failover.as_str() {
        "" | "none" => "-".into(),
        "standby" => format!("standby {} {}", span(v.failover_grace_ns), standby(v)),
        m => format!("{m} {}", span(v.failover_grace_ns)),
    }
}

/// Where a standby copy is and what it holds.
fn standby(v: &VolumeResponse) -> String {
    if v.standby_cell_id.is_empty() {
        return "(no standby cell yet)".into();
    }
    let holds = if !v.standby_refreshing.is_empty() {
        format!("refreshing to backup {}", v.standby_refreshing)
    } else if !v.standby_backup.is_empty() {
        format!("backup {}", v.standby_backup)
    } else if v.standby_ready {
        "empty: waits for a backup".into()
    } else {
        "being made".into()
    };
    let why = if v.standby_reason.is_empty() {
        String::new()
    } else {
        format!("; {}", v.standby_reason)
    };
    format!("on {} ({holds}{why})", v.standby_cell_id)
}

/// `2m ago from cell-1 (backup B, lost 15s; refilling)`, `-` when it never failed over.
pub fn last(v: &VolumeResponse, now: i64) -> String {
    if v.failed_over_at == 0 {
        return "-".into();
    }
    format!(
        "{} ago from {} (backup {}, lost {}{})",
        age(v.failed_over_at, now),
        v.failed_over_from,
        v.failed_over_backup,
        span(v.data_loss_window_ns),
        if v.restoring.is_empty() {
            ""
        } else {
            "; refilling"
        }
    )
}

/// The fenced copies, `-` when none.
pub fn fenced(v: &VolumeResponse) -> String {
    if v.fenced_copies.is_empty() {
        "-".into()
    } else {
        v.fenced_copies.join(",")
    }
}

/// Parses `--failover` for the API (`restore`, `standby`, `none`).
pub fn parse_mode(s: &str) -> anyhow::Result<String> {
    lattice_specs::failover::parse_mode(s)
        .map(|m| lattice_specs::failover::mode_name(m).to_string())
        .map_err(|e| anyhow::anyhow!("--failover: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn failover_columns_read_well() {
        let mut v = VolumeResponse {
            failover: "none".into(),
            failover_grace_ns: 60 * S,
            ..Default::default()
        };
        assert_eq!(
            (mode(&v), last(&v, 0), fenced(&v)),
            ("-".into(), "-".into(), "-".into())
        );
        v.failover = "restore".into();
        v.failed_over_at = 100 * S;
        v.failed_over_from = "cell-1".into();
        v.failed_over_backup = "pg-1".into();
        v.data_loss_window_ns = 15 * S;
        v.restoring = "restore-pg-1".into();
        v.fenced_copies = vec!["cell-1:/x/pg@fenced-e0-1.img".into()];
        assert_eq!(mode(&v), "restore 1m0s");
        assert_eq!(
            last(&v, 220 * S),
            "2m0s ago from cell-1 (backup pg-1, lost 15s; refilling)"
        );
        assert_eq!(fenced(&v), "cell-1:/x/pg@fenced-e0-1.img");
        v.failover = "standby".into();
        assert_eq!(mode(&v), "standby 1m0s (no standby cell yet)");
        v.standby_cell_id = "cell-2".into();
        assert_eq!(mode(&v), "standby 1m0s on cell-2 (being made)");
        v.standby_ready = true;
        assert_eq!(
            mode(&v),
            "standby 1m0s on cell-2 (empty: waits for a backup)"
        );
        v.standby_backup = "pg-1".into();
        assert_eq!(mode(&v), "standby 1m0s on cell-2 (backup pg-1)");
        v.standby_refreshing = "pg-2".into();
        v.standby_reason = "refreshing the standby copy from backup pg-0 failed: x".into();
        assert_eq!(
            mode(&v),
            "standby 1m0s on cell-2 (refreshing to backup pg-2; refreshing the standby copy from backup pg-0 failed: x)"
        );
        assert_eq!(parse_mode("standby").unwrap(), "standby");
        assert!(parse_mode("hot")
            .unwrap_err()
            .to_string()
            .contains("--failover"));
    }
}
