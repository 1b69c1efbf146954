//! Scheduled verification of backups: the brain's claim of a backup schedule's
//! verification slot ([`claim`]) starts the verification of the volume's newest
//! completed backup (the same verify task `POST /v1/backups/ID/verify` starts), and
//! what a finished verification is worth to an operator: its verdict in
//! `bbs_backup_verifications_total`, a failed one as a `verify_failed` alert, and the
//! age of each volume's newest verified-good backup as a gauge ([`observe_ages`]).
//! Which backup and which slot are `lattice_specs::retention`'s decisions.

use lattice_specs::models::task::State as TaskState;
use lattice_specs::models::Backup;
use lattice_specs::retention;

use crate::db::{Db, DbError, OwnedKind};
use crate::schedules::Claimed;

/// Claims verification slot `slot_at` of backup schedule `name` and verifies its
/// volume's newest completed backup (`blob_url` as `backups::start_backup` takes it;
/// None: this BBS keeps no blobs). Nothing to verify, or its verification still
/// running, is a skip.
pub async fn claim(
    db: &Db,
    api: Option<&crate::api::ApiState>,
    name: &str,
    slot_at: i64,
) -> Result<Claimed, DbError> {
    let Some(s) = db.claim_verify_slot(name, slot_at).await? else {
        return Ok(Claimed::Taken);
    };
    let backups = db.backups().await?;
    let Some(b) = retention::verify_target(&backups, &s.volume) else {
        tracing::info!(schedule = %name, volume = %s.volume, "scheduled verification skipped: no completed backup");
        return Ok(Claimed::Skipped);
    };
    if !b.verify_task_guid.is_empty() {
        match db.task(&b.verify_task_guid).await {
            Ok(t) if matches!(t.state(), TaskState::Pending | TaskState::Running) => {
                tracing::info!(schedule = %name, backup = %b.id, task = %t.task_guid, "scheduled verification skipped: one is running");
                return Ok(Claimed::Skipped);
            }
            Ok(_) | Err(DbError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let Some(api) = api else {
        return Ok(Claimed::Failed(
            "this BBS serves no API, hence no backup repositories".into(),
        ));
    };
    // The verification belongs to the volume's owner, as its backups do.
    let owned = match db.owner(OwnedKind::Volume, &s.volume).await? {
        Some(owner) => db.created_by(owner),
        None => db.clone(),
    };
    match crate::backups::start_verify(api, &owned, b).await {
        Ok(guid) => {
            tracing::info!(schedule = %name, backup = %b.id, task = %guid, "scheduled verification started");
            Ok(Claimed::Run(guid))
        }
        Err(e @ DbError::Fenced { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(schedule = %name, backup = %b.id, "scheduled verification not started: {e}");
            Ok(Claimed::Failed(e.to_string()))
        }
    }
}

/// Counts a verification's verdict on backup `b` (just recorded); a failed one is an
/// alert.
pub fn observe_verdict(b: &Backup) {
    let failed = retention::failed_verification(b);
    crate::metrics::BACKUP_VERIFICATIONS
        .with_label_values(&[if failed { "failed" } else { "ok" }])
        .inc();
    if failed {
        crate::metrics::BACKUP_ALERTS
            .with_label_values(&[&b.volume, "verify_failed"])
            .inc();
        tracing::warn!(backup = %b.id, volume = %b.volume, verdict = %b.verified, "backup verification failed");
    } else {
        tracing::info!(backup = %b.id, volume = %b.volume, "backup verified");
    }
}

/// The age (at `now`, Unix nanoseconds) of each volume's newest verified-good backup,
/// by volume name.
pub fn verified_ages(backups: &[Backup], now: i64) -> Vec<(String, i64)> {
    let mut volumes: Vec<&str> = backups.iter().map(|b| b.volume.as_str()).collect();
    volumes.sort();
    volumes.dedup();
    volumes
        .into_iter()
        .filter_map(|v| {
            let mine: Vec<Backup> = backups.iter().filter(|b| b.volume == v).cloned().collect();
            retention::newest_verified(&mine)
                .map(|b| (v.to_string(), (now - b.created_at).max(0) / 1_000_000_000))
        })
        .collect()
}

/// Sets `bbs_backup_newest_verified_age_seconds` from `backups` at `now`.
pub fn observe_ages(backups: &[Backup], now: i64) {
    let g = &crate::metrics::BACKUP_VERIFIED_AGE;
    g.reset();
    for (volume, age) in verified_ages(backups, now) {
        g.with_label_values(&[&volume]).set(age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::models::backup::State;

    #[test]
    fn the_age_is_the_newest_verified_good_backups_per_volume() {
        let s = 1_000_000_000;
        let b = |id: &str, volume: &str, at: i64, verified: &str| Backup {
            id: id.into(),
            volume: volume.into(),
            state: State::Completed as i32,
            created_at: at * s,
            verified: verified.into(),
            ..Default::default()
        };
        let backups = [
            b("a1", "a", 100, "ok"),
            b("a2", "a", 200, "ok"),
            b("a3", "a", 300, "failed: differs"),
            b("a4", "a", 400, ""),
            b("b1", "b", 100, "failed: differs"),
        ];
        assert_eq!(verified_ages(&backups, 1000 * s), [("a".to_string(), 800)]);
        observe_ages(&backups, 1000 * s);
        let g = &crate::metrics::BACKUP_VERIFIED_AGE;
        assert_eq!(g.with_label_values(&["a"]).get(), 800);
    }

    #[test]
    fn a_failed_verification_is_counted_and_alerted() {
        let m = &crate::metrics::BACKUP_VERIFICATIONS;
        let alerts = crate::metrics::BACKUP_ALERTS.with_label_values(&["vx", "verify_failed"]);
        let (ok0, failed0, alerts0) = (
            m.with_label_values(&["ok"]).get(),
            m.with_label_values(&["failed"]).get(),
            alerts.get(),
        );
        let mut b = Backup {
            id: "vx-1".into(),
            volume: "vx".into(),
            verified: "failed: the restored data differs from the backup".into(),
            ..Default::default()
        };
        observe_verdict(&b);
        b.verified = "ok".into();
        observe_verdict(&b);
        assert_eq!(m.with_label_values(&["failed"]).get(), failed0 + 1);
        assert_eq!(m.with_label_values(&["ok"]).get(), ok0 + 1);
        assert_eq!(alerts.get(), alerts0 + 1, "only the failure alerts");
    }
}
