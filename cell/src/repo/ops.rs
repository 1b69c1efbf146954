//! The four operations on a repository, with rustic_core: backup (initialising the
//! repository when it has none), restore, forget + prune, check.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use lattice_specs::redact;
use lattice_specs::repo::{RepoJob, RepoOp, RepoOutcome};
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, IndexedIdsStatus, KeyOptions,
    LocalSource, LsOptions, OpenStatus, PathList, PruneOptions, Repository, RepositoryOptions,
    RusticResult, SnapshotOptions,
};

use super::job::{one_line, Reach, RepoError};
use super::locks;
use super::readahead::ReadAhead;
use super::restorer;

type Open = Repository<OpenStatus>;

/// Runs `job` (already inside its root) on its repository and says what it did.
pub fn run(job: &RepoJob, reach: &Reach) -> Result<RepoOutcome, RepoError> {
    let op = job.op.ok_or_else(|| {
        RepoError::Job("op: missing; one of backup, restore, forget, check".into())
    })?;
    if job.password.is_empty() {
        return Err(RepoError::Job(
            "password: empty; the caller passes the repository's password".into(),
        ));
    }
    tracing::info!("{} of {}", op.as_str(), redact::urls(&job.repository));
    let (repo, stale) = open(job, reach, op == RepoOp::Backup)?;
    let mut outcome = match op {
        RepoOp::Backup => backup(job, repo)?,
        RepoOp::Restore => restore(job, repo)?,
        RepoOp::Forget => forget(job, repo)?,
        RepoOp::Check => check(job, repo)?,
    };
    outcome.op = Some(op);
    outcome.stale_locks_removed = stale;
    Ok(outcome)
}

/// Opens the repository (initialising it when `init` and it has none) and removes its
/// stale locks; the number removed.
fn open(job: &RepoJob, reach: &Reach, init: bool) -> Result<(Open, u32), RepoError> {
    let opts = RepositoryOptions::default().no_cache(true);
    let repo = Repository::new(&opts, &reach.backends).map_err(RepoError::from)?;
    let creds = Credentials::Password(job.password.clone());
    let exists = repo.config_id().map_err(RepoError::from)?.is_some();
    let repo = match (exists, init) {
        (true, _) => repo.open(&creds).map_err(RepoError::from)?,
        (false, true) => {
            tracing::info!("initialising the repository");
            repo.init(&creds, &KeyOptions::default(), &ConfigOptions::default())
                .map_err(RepoError::from)?
        }
        (false, false) => {
            return Err(RepoError::Repository(format!(
                "no repository at {} (no backup was ever taken into it)",
                redact::urls(&job.repository)
            )))
        }
    };
    let removed = locks::remove_stale(job, reach, &repo.key())?;
    Ok((repo, removed))
}

fn rustic<T>(r: RusticResult<T>) -> Result<T, RepoError> {
    r.map_err(RepoError::from)
}

/// Backs `path` up, recorded as `as_path` (the container's path) when given.
fn backup(job: &RepoJob, repo: Open) -> Result<RepoOutcome, RepoError> {
    if job.path.is_empty() {
        return Err(RepoError::Job(
            "path: empty; the directory backed up".into(),
        ));
    }
    let repo = rustic(repo.to_indexed_ids())?;
    let mut snap = SnapshotOptions::default();
    if !job.host.is_empty() {
        snap = snap.host(Some(job.host.clone()));
    }
    for tag in &job.tags {
        snap = rustic(snap.add_tags(tag))?;
    }
    let snap = rustic(snap.to_snapshot())?;
    let mut opts = BackupOptions::default();
    if !job.as_path.is_empty() {
        opts = opts.as_path(Some(PathBuf::from(&job.as_path)));
    }
    let paths = rustic(PathList::from_string(&job.path))?
        .sanitize()
        .map_err(|e| RepoError::Job(format!("path {:?}: {e}", job.path)))?
        .paths();
    // The parent rustic would choose, named to it: its start tells the read-ahead which
    // files rustic will skip.
    let recorded = if job.as_path.is_empty() {
        paths.clone()
    } else {
        vec![PathBuf::from(&job.as_path)]
    };
    let parent = latest_of_group(&repo, &snap, &recorded);
    if let Some(p) = &parent {
        opts.parent_opts.parents = vec![p.id.to_string()];
    }
    // What `Repository::backup` does for local paths, with the files read ahead.
    let source = rustic(LocalSource::new(
        opts.ignore_save_opts,
        &opts.excludes,
        &opts.ignore_filter_opts,
        &paths,
    ))?;
    let source = ReadAhead::new(source, &paths, parent.map(|p| p.time.timestamp()));
    let snap = rustic(repo.archive(&opts, &source, snap, &paths))?;
    let summary = snap.summary.clone().unwrap_or_default();
    tracing::info!(
        "snapshot {} saved: {} files, {} bytes, {} bytes added",
        snap.id,
        summary.total_files_processed,
        summary.total_bytes_processed,
        summary.data_added_packed
    );
    Ok(RepoOutcome {
        snapshot: snap.id.to_hex().to_string(),
        files: summary.total_files_processed,
        total_bytes: summary.total_bytes_processed,
        added_bytes: summary.data_added_packed,
        ..Default::default()
    })
}

/// The newest snapshot of `snap`'s group (rustic's default: same host, label and
/// paths `recorded`), the parent rustic itself would choose; none when there is none
/// or the snapshots cannot be read (rustic then looks for itself).
fn latest_of_group(
    repo: &Repository<IndexedIdsStatus>,
    snap: &SnapshotFile,
    recorded: &[PathBuf],
) -> Option<SnapshotFile> {
    let paths: Option<BTreeSet<&str>> = recorded.iter().map(|p| p.to_str()).collect();
    let paths = paths?;
    let same = |s: &SnapshotFile| {
        s.hostname == snap.hostname
            && s.label == snap.label
            && s.paths.iter().map(String::as_str).collect::<BTreeSet<_>>() == paths
    };
    repo.get_matching_snapshots(same)
        .ok()?
        .into_iter()
        .max_by(|a, b| a.time.cmp(&b.time))
}

/// A tree entry's path is safe when every part of it is a plain name.
fn safe_entry(path: &Path, node: &Node) -> bool {
    let name = node.name();
    let name = name.to_string_lossy();
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The snapshot's entries, refused at the first unsafe one.
fn checked<'a>(
    snapshot: &'a str,
    entries: impl Iterator<Item = RusticResult<(PathBuf, Node)>> + 'a,
) -> impl Iterator<Item = Result<(PathBuf, Node), RepoError>> + 'a {
    entries.map(move |e| {
        let (path, node) = e.map_err(RepoError::from)?;
        if safe_entry(&path, &node) {
            Ok((path, node))
        } else {
            Err(RepoError::UnsafeEntry {
                snapshot: snapshot.to_string(),
                entry: path.display().to_string(),
            })
        }
    })
}

/// The directory a snapshot's data is restored from: its one path (e.g. `/data`), or
/// its root when it has several.
fn data_path(snap: &SnapshotFile) -> String {
    let paths: Vec<&String> = snap.paths.iter().collect();
    match paths.as_slice() {
        [one] => one.to_string(),
        _ => String::new(),
    }
}

/// Restores `snapshot` into `path` (made; it must not exist or be empty).
fn restore(job: &RepoJob, repo: Open) -> Result<RepoOutcome, RepoError> {
    if job.path.is_empty() || job.snapshot.is_empty() {
        return Err(RepoError::Job(
            "path and snapshot: both needed for a restore".into(),
        ));
    }
    let target = Path::new(&job.path);
    if let Ok(mut entries) = std::fs::read_dir(target) {
        if entries.next().is_some() {
            return Err(RepoError::TargetNotEmpty(job.path.clone()));
        }
    }
    let repo = rustic(repo.to_indexed())?;
    let snap = rustic(repo.get_snapshot_from_str(&job.snapshot, |_| true))?;
    let node = rustic(repo.node_from_snapshot_and_path(&snap, &data_path(&snap)))?;
    let ls = rustic(repo.ls(&node, &LsOptions::default()))?;
    // Every entry is checked before anything is written.
    let entries: Vec<(PathBuf, Node)> = checked(&job.snapshot, ls).collect::<Result<_, _>>()?;
    if !node.is_dir() {
        return Err(RepoError::Job(format!(
            "snapshot {}: its data path is not a directory; only directories are restored",
            job.snapshot
        )));
    }
    std::fs::create_dir_all(target)
        .map_err(|e| RepoError::Repository(format!("restore: making {}: {e}", target.display())))?;
    // Our restorer, not rustic's: its memory stays bounded (see `restorer`).
    let done = restorer::restore(&repo, &entries, target)?;
    let (files, total_bytes) = (done.files, done.bytes);
    if !done.skipped.is_empty() {
        tracing::warn!(
            "{} entries not restored (device nodes, sockets): {}",
            done.skipped.len(),
            done.skipped.join(", ")
        );
    }
    tracing::info!("snapshot {} restored: {files} files", job.snapshot);
    Ok(RepoOutcome {
        snapshot: snap.id.to_hex().to_string(),
        files,
        total_bytes,
        ..Default::default()
    })
}

/// Forgets the listed snapshots, then prunes what nothing uses any more (`removed_bytes`:
/// what this prune frees, now or, for packs it marks, at a later one).
fn forget(job: &RepoJob, repo: Open) -> Result<RepoOutcome, RepoError> {
    if job.forget.is_empty() {
        return Err(RepoError::Job(
            "forget: no snapshot ids; list the snapshots to forget".into(),
        ));
    }
    let snaps = rustic(repo.get_snapshots(&job.forget))?;
    let ids: Vec<_> = snaps.iter().map(|s| s.id).collect();
    rustic(repo.delete_snapshots(&ids))?;
    // Two-phase deletion (rustic's default): unused packs are marked now and deleted by
    // a prune at least 23 hours later, so a backup running meanwhile (which takes no
    // lock restic's way) never loses a pack it found and reused.
    let opts = PruneOptions::default();
    let plan = rustic(repo.prune_plan(&opts))?;
    // Unused blobs removed (in packs deleted or repacked), and packs an earlier prune
    // marked for deletion.
    let removed_bytes = plan
        .stats
        .size
        .values()
        .map(|s| s.remove + s.repackrm)
        .sum::<u64>()
        + plan.stats.size_to_delete.remove;
    rustic(repo.prune(&opts, plan))?;
    tracing::info!(
        "forgot {} snapshots, pruned {removed_bytes} bytes",
        ids.len()
    );
    Ok(RepoOutcome {
        forgotten: ids.iter().map(|id| id.to_hex().to_string()).collect(),
        removed_bytes,
        ..Default::default()
    })
}

/// Checks the repository's structure as far as `snapshot` uses it, and reads every
/// pack the snapshot uses.
fn check(job: &RepoJob, repo: Open) -> Result<RepoOutcome, RepoError> {
    if job.snapshot.is_empty() {
        return Err(RepoError::Job("snapshot: the snapshot checked".into()));
    }
    let snap = rustic(repo.get_snapshot_from_str(&job.snapshot, |_| true))?;
    let opts = CheckOptions::default().read_data(true);
    let results = rustic(repo.check_with_trees(opts, vec![snap.tree]))?;
    if let Err(e) = results.is_ok() {
        let findings: Vec<String> = results.0.iter().map(|(_, f)| f.to_string()).collect();
        return Err(RepoError::CheckFailed {
            snapshot: job.snapshot.clone(),
            findings: one_line(&format!("{e}: {}", findings.join("; "))),
        });
    }
    let summary = snap.summary.clone().unwrap_or_default();
    Ok(RepoOutcome {
        snapshot: snap.id.to_hex().to_string(),
        files: summary.total_files_processed,
        total_bytes: summary.total_bytes_processed,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustic_core::repofile::{Metadata, NodeType};

    #[test]
    fn only_plain_names_are_restored() {
        let node = |name: &str| Node::new_node(name.as_ref(), NodeType::File, Metadata::default());
        assert!(safe_entry(Path::new("a/b"), &node("b")));
        assert!(!safe_entry(Path::new("a/.."), &node("..")));
        assert!(!safe_entry(Path::new("."), &node(".")));
        assert!(!safe_entry(Path::new("a/x"), &node("x/../../etc")));
        assert!(!safe_entry(Path::new("/etc/passwd"), &node("passwd")));
        assert!(!safe_entry(Path::new("a/../b"), &node("b")));
    }
}
