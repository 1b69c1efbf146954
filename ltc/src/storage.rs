//! `ltc volume …` and `ltc backup …`: volumes on the cells' `local` driver, and
//! backups, restores and verifications, which are Tasks the cluster runs.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::{BackupResponse, TaskResponse, VolumeCreateRequest, VolumeResponse};
use lattice_specs::volume::{format_size, parse_size, MIN_SIZE};
use sha2::Digest;

use crate::api::{error_name, Api};
use crate::backup_view::{backups_table, describe, short, HookArgs};
use crate::show;

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Make a volume (thin: it costs what is written) and wait until it is ready.
    Create {
        name: String,
        /// Its size, its hard quota: 10G, 512M… (at least 300M).
        #[arg(long)]
        size: String,
        /// The cell to make it on (default: the cell holding the fewest volume bytes).
        #[arg(long)]
        cell: Option<String>,
        /// The named backup store its backups go to (`lattice bbs --backup-store
        /// NAME=URL`; default: the cluster's default store).
        #[arg(long)]
        backup_store: Option<String>,
        /// When its cell is lost: `restore` (made again on another cell, another zone
        /// first, from its last good backup) or `standby` (a copy kept on another cell,
        /// refreshed from every new backup, takes over); default none.
        #[arg(long)]
        failover: Option<String>,
        /// How long its cell must be gone before it fails over (default 60s; at least
        /// the cells' presence TTL plus 10s).
        #[arg(long, value_parser = crate::app::parse_duration, requires = "failover")]
        failover_grace: Option<Duration>,
        #[arg(long, default_value = "2m", value_parser = crate::app::parse_duration)]
        timeout: Duration,
    },
    /// Grow a volume, online: the apps that mount it keep running.
    Grow {
        name: String,
        /// The new size (larger than the current one).
        #[arg(long)]
        size: String,
        #[arg(long, default_value = "1m", value_parser = crate::app::parse_duration)]
        timeout: Duration,
    },
    /// The volumes: size, use, cell, state, who mounts them, failover (mode, the last
    /// failover and its data-loss window, fenced copies).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume and its data (refused while an app or task mounts it).
    Remove {
        name: String,
        #[arg(long, default_value = "1m", value_parser = crate::app::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Back a volume up (a Task on its cell snapshots it into the volume's repository)
    /// and wait for it.
    Create {
        volume: String,
        #[command(flatten)]
        hooks: HookArgs,
        /// Print the backup's id and return without waiting.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "30m", value_parser = crate::app::parse_duration)]
        timeout: Duration,
    },
    /// The backups (of one volume): time, size, duration, state, verification, warnings.
    List {
        volume: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a volume (made first, on any cell, when it does not exist).
    Restore {
        backup: String,
        /// The volume to restore into; its data is replaced.
        #[arg(long = "to")]
        volume: String,
        /// Size of the volume when it has to be made (default: 1G or the backup's
        /// volume's size, whichever is larger).
        #[arg(long)]
        size: Option<String>,
        /// The cell to make the volume on, when it has to be made.
        #[arg(long)]
        cell: Option<String>,
        #[arg(long, default_value = "30m", value_parser = crate::app::parse_duration)]
        timeout: Duration,
    },
    /// Restore a backup into scratch space and check it against its checksum and
    /// manifest (a backup never restored is not trusted).
    Verify {
        backup: String,
        #[arg(long, default_value = "30m", value_parser = crate::app::parse_duration)]
        timeout: Duration,
    },
    /// Write a backup (its record and archive) to FILE, to import into another cluster.
    Export {
        backup: String,
        file: std::path::PathBuf,
    },
    /// Bring a backup exported from another cluster in.
    Import { file: std::path::PathBuf },
    /// Delete a backup and its archive.
    Delete { backup: String },
    /// Back a volume up on a schedule (the brain starts each slot's backup exactly
    /// once, keeps what restic's retention policy keeps and always the newest
    /// verified-good backup, and verifies the newest on `--verify`), or stop doing so.
    Schedule {
        volume: String,
        /// hourly, daily, weekly, monthly, or a period like 1h, 30m, 2d.
        #[arg(long, required_unless_present = "off")]
        every: Option<String>,
        #[command(flatten)]
        policy: crate::backup_policy::PolicyArgs,
        /// Remove the volume's schedule.
        #[arg(long, conflicts_with = "every")]
        off: bool,
        #[command(flatten)]
        hooks: HookArgs,
    },
    /// The backup schedules.
    Schedules {
        #[arg(long)]
        json: bool,
    },
    /// The cluster's backup key (every repository's password): `export` prints it and
    /// how to open a volume's repository with restic, for disaster recovery.
    Key {
        #[command(subcommand)]
        cmd: crate::backup_key::KeyCmd,
    },
}

async fn wait_volume(api: &Api, name: &str, timeout: Duration) -> anyhow::Result<VolumeResponse> {
    let deadline = Instant::now() + timeout;
    loop {
        match api.volume(name).await? {
            Some(v) if v.state == "READY" => return Ok(v),
            Some(v) if v.state == "FAILED" => anyhow::bail!(
                "volume {name} could not be made on cell {}: {}. Remove it with `ltc volume remove {name}`",
                v.cell_id,
                v.reason
            ),
            Some(_) => {}
            None => anyhow::bail!("volume {name} disappeared while being made"),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "volume {name} is not ready after {timeout:?}: is its cell up? (`ltc cells`)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes volume `req` and waits until it is ready.
pub(crate) async fn create_volume(
    api: &Api,
    req: &VolumeCreateRequest,
    timeout: Duration,
) -> anyhow::Result<VolumeResponse> {
    api.create_volume(req).await?;
    wait_volume(api, &req.name, timeout).await
}

fn volumes_table(vs: &[VolumeResponse], now: i64) -> String {
    if vs.is_empty() {
        return "No volumes: `ltc volume create NAME --size 1G` makes one.\n".into();
    }
    let rows: Vec<Vec<String>> = vs
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                format_size(v.size_bytes),
                format_size(v.used_bytes),
                v.cell_id.clone(),
                if v.reason.is_empty() {
                    v.state.clone()
                } else {
                    format!("{}: {}", v.state, v.reason)
                },
                if v.users.is_empty() {
                    "-".into()
                } else {
                    v.users.join(",")
                },
                crate::failover::mode(v),
                crate::failover::last(v, now),
                crate::failover::fenced(v),
            ]
        })
        .collect();
    let mut out = show::table(
        &[
            "VOLUME",
            "SIZE",
            "USED",
            "CELL",
            "STATE",
            "USERS",
            "FAILOVER",
            "LAST FAILOVER",
            "FENCED COPIES",
        ],
        &rows,
    );
    // One line per cell whose pool warns, naming its volumes.
    let mut warned: std::collections::BTreeMap<(&str, &str), Vec<&str>> = Default::default();
    for v in vs.iter().filter(|v| !v.pool_warning.is_empty()) {
        warned
            .entry((&v.cell_id, &v.pool_warning))
            .or_default()
            .push(&v.name);
    }
    for ((cell, warning), names) in warned {
        out.push_str(&format!("cell {cell} ({}): {warning}\n", names.join(", ")));
    }
    out
}

pub async fn volume(api: &Api, cmd: VolumeCmd) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create {
            name,
            size,
            cell,
            backup_store,
            failover,
            failover_grace,
            timeout,
        } => {
            let size = parse_size(&size).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
            let req = VolumeCreateRequest {
                name: name.clone(),
                size_bytes: size,
                cell_id: cell.unwrap_or_default(),
                backup_store: backup_store.unwrap_or_default(),
                failover: match failover {
                    Some(f) => crate::failover::parse_mode(&f)?,
                    None => String::new(),
                },
                failover_grace_ns: failover_grace.map_or(0, |d| d.as_nanos() as i64),
            };
            let v = create_volume(api, &req, timeout).await?;
            println!(
                "Volume {name} ({}) is ready on cell {}: mount it with `ltc create APP IMAGE --volume {name}:/data`.",
                format_size(v.size_bytes),
                v.cell_id
            );
        }
        VolumeCmd::Grow {
            name,
            size,
            timeout,
        } => {
            let size = parse_size(&size).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
            match api.grow_volume(&name, size).await {
                Err(e) if error_name(&e) == Some(ErrorName::VolumeNotFound) => {
                    anyhow::bail!("volume {name} not found: `ltc volume list` shows the volumes")
                }
                r => r?,
            }
            let deadline = Instant::now() + timeout;
            loop {
                let v = api
                    .volume(&name)
                    .await?
                    .with_context(|| format!("volume {name} disappeared"))?;
                anyhow::ensure!(v.reason.is_empty(), "volume {name}: {}", v.reason);
                if v.actual_size_bytes >= size {
                    println!("Volume {name} is now {}.", format_size(v.actual_size_bytes));
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "volume {name} has not grown after {timeout:?}: is its cell up? (`ltc cells`)"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        VolumeCmd::List { json } => {
            let vs = api.volumes().await?;
            if json {
                show::json(&vs)?;
            } else {
                print!("{}", volumes_table(&vs, lattice_specs::now_nanos()));
            }
        }
        VolumeCmd::Remove { name, timeout } => {
            match api.remove_volume(&name).await {
                Err(e) if error_name(&e) == Some(ErrorName::VolumeNotFound) => {
                    anyhow::bail!("volume {name} not found: `ltc volume list` shows the volumes")
                }
                r => r?,
            }
            let deadline = Instant::now() + timeout;
            while api.volume(&name).await?.is_some() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "volume {name} is still being removed after {timeout:?}: is its cell up? (`ltc cells`)"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("Removed volume {name}.");
        }
    }
    Ok(())
}

/// Waits for a task to complete; its result, or why it failed.
async fn wait_task(
    api: &Api,
    guid: &str,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<TaskResponse> {
    let deadline = Instant::now() + timeout;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = Instant::now();
    loop {
        let t = api.task(guid).await?;
        if t.state == "COMPLETED" || t.state == "RESOLVING" {
            if tty {
                eprintln!();
            }
            anyhow::ensure!(
                !t.failed,
                "{what} failed: {} (task {guid}; `ltc logs {guid}` shows its log)",
                t.failure_reason
            );
            return Ok(t);
        }
        if tty {
            eprint!(
                "\r{what}: task {guid} {} ({:.0}s)   ",
                t.state,
                started.elapsed().as_secs_f64()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not finish in {timeout:?}: task {guid} is {} (`ltc task {guid}`)",
            t.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tar entry names of an exported backup.
const EXPORT_RECORD: &str = "backup.json";
const EXPORT_ARCHIVE: &str = "archive.tgz";

async fn export(api: &Api, id: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let b = api.backup(id).await?;
    anyhow::ensure!(
        b.state == "COMPLETED",
        "backup {id} is {}: only a COMPLETED backup can be exported",
        b.state
    );
    anyhow::ensure!(
        b.snapshot.is_empty(),
        "backup {id} is snapshot {} in the restic repository {} (store {}), not an archive: \
         `ltc backup key export` prints the repository's password, and `restic -r REPOSITORY \
         restore {} --target DIR` with it reads the data anywhere (the repository is laid out \
         as restic's own)",
        short(&b.snapshot),
        b.repository,
        b.store,
        short(&b.snapshot)
    );
    // The archive first to a file beside FILE (hashed on the way), then both into FILE.
    let part = file.with_extension("part");
    let mut resp = api.get_blob(&b.blob).await?;
    let mut out =
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut hash = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        hash.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk)?;
    }
    drop(out);
    let sum: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if sum != b.checksum {
        let _ = std::fs::remove_file(&part);
        anyhow::bail!(
            "the archive's sha256 is {sum}, the backup says {}: not exported",
            b.checksum
        );
    }
    let written = (|| -> anyhow::Result<()> {
        let tmp = file.with_extension("tmp");
        let mut tar = tar::Builder::new(std::fs::File::create(&tmp)?);
        let record = serde_json::to_vec_pretty(&b)?;
        let mut h = tar::Header::new_gnu();
        h.set_size(record.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, EXPORT_RECORD, &record[..])?;
        tar.append_path_with_name(&part, EXPORT_ARCHIVE)?;
        tar.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, file)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&part);
    written.with_context(|| format!("writing {}", file.display()))?;
    println!(
        "Exported backup {id} ({}) to {}: `ltc backup import {}` on another cluster brings it in.",
        format_size(size),
        file.display(),
        file.display()
    );
    Ok(())
}

async fn import(api: &Api, file: &std::path::Path) -> anyhow::Result<()> {
    let not_export = || {
        format!(
            "{} is not an exported backup (expected a tar with {EXPORT_RECORD} and {EXPORT_ARCHIVE}, as `ltc backup export` writes)",
            file.display()
        )
    };
    let mut record: Option<BackupResponse> = None;
    let mut archive: Option<(u64, u64)> = None; // (offset, size) in FILE
    let mut tar = tar::Archive::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    for entry in tar.entries().with_context(not_export)? {
        let mut entry = entry.with_context(not_export)?;
        let path = entry.path()?.to_string_lossy().to_string();
        match path.as_str() {
            EXPORT_RECORD => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text)?;
                record = Some(serde_json::from_str(&text).with_context(not_export)?);
            }
            EXPORT_ARCHIVE => archive = Some((entry.raw_file_position(), entry.size())),
            _ => {}
        }
    }
    let (Some(b), Some((offset, size))) = (record, archive) else {
        anyhow::bail!(not_export());
    };
    // Never overwrite the archive of a backup this cluster has.
    match api.backup(&b.id).await {
        Ok(_) => anyhow::bail!("backup {} already exists on this cluster", b.id),
        Err(e) if error_name(&e) == Some(ErrorName::BackupNotFound) => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::File::open(file)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
    let f = tokio::fs::File::from_std(f);
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
        tokio::io::AsyncReadExt::take(f, size),
    ));
    // The store checks the bytes against the record's checksum and keeps them only then.
    api.put_blob(&lattice_specs::backup::blob_name(&b.id), body, &b.checksum)
        .await
        .context("uploading the archive")?;
    match api.import_backup(&b).await {
        Err(e) if error_name(&e) == Some(ErrorName::BackupAlreadyExists) => {
            anyhow::bail!("backup {} already exists on this cluster", b.id)
        }
        r => r?,
    }
    println!(
        "Imported backup {} of volume {} ({}): `ltc backup restore {} --to VOLUME` restores it.",
        b.id,
        b.volume,
        format_size(size),
        b.id
    );
    Ok(())
}

/// `ltc backup create`: starts a backup and, unless told not to, waits for it.
async fn create_backup(
    api: &Api,
    volume: &str,
    hooks: &HookArgs,
    no_wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let b = match api.create_backup(volume, hooks.request()?).await {
        Err(e) if error_name(&e) == Some(ErrorName::BackupHookFailed) => {
            return Err(e.context(format!(
                "the pre hook failed, so no snapshot of volume {volume} was taken"
            )))
        }
        r => r?,
    };
    if no_wait {
        println!("{}", b.id);
        return Ok(());
    }
    let _ = wait_task(api, &b.task_guid, timeout, "backup").await;
    // The backup record, settled from the task, says how it went.
    let deadline = Instant::now() + Duration::from_secs(15);
    let b = loop {
        let b = api.backup(&b.id).await?;
        if b.state != "RUNNING" || Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    anyhow::ensure!(
        b.state == "COMPLETED",
        "backup {} of volume {volume} {}: {} (`ltc logs {}` shows its task's log)",
        b.id,
        b.state,
        b.failure_reason,
        b.task_guid
    );
    println!("Backup {}.", describe(&b));
    if !b.hook_status.is_empty() {
        println!("Hooks: {} ({}).", b.hook_status, b.hook_instance);
    }
    for w in &b.warnings {
        println!("Warning: {w}");
    }
    Ok(())
}

/// `ltc backup restore`: restores a COMPLETED backup into a volume, made first
/// when it does not exist.
async fn restore_backup(
    api: &Api,
    backup: &str,
    volume: &str,
    size: Option<String>,
    cell: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let b = api.backup(backup).await?;
    anyhow::ensure!(
        b.state == "COMPLETED",
        "backup {backup} is {}: only a COMPLETED backup can be restored (`ltc backup list`)",
        b.state
    );
    if api.volume(volume).await?.is_none() {
        let size = match size {
            Some(s) => parse_size(&s).map_err(|e| anyhow::anyhow!("--size: {e}"))?,
            None => {
                let source = api.volume(&b.volume).await?.map(|v| v.size_bytes);
                source.unwrap_or(0).max(1 << 30).max(MIN_SIZE)
            }
        };
        let req = VolumeCreateRequest {
            name: volume.into(),
            size_bytes: size,
            cell_id: cell.unwrap_or_default(),
            ..Default::default()
        };
        let v = create_volume(api, &req, timeout).await?;
        println!(
            "Made volume {volume} ({}) on cell {}.",
            format_size(v.size_bytes),
            v.cell_id
        );
    }
    let t = api.restore_backup(backup, volume).await?;
    wait_task(api, &t.task_guid, timeout, "restore").await?;
    println!("Restored backup {backup} into volume {volume}.");
    Ok(())
}

pub async fn backup(api: &Api, cmd: BackupCmd, now: i64) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::Create {
            volume,
            hooks,
            no_wait,
            timeout,
        } => create_backup(api, &volume, &hooks, no_wait, timeout).await?,
        BackupCmd::List { volume, json } => {
            let mut bs = api.backups().await?;
            if let Some(v) = &volume {
                bs.retain(|b| &b.volume == v);
            }
            if json {
                show::json(&bs)?;
            } else {
                print!("{}", backups_table(&bs, now));
            }
        }
        BackupCmd::Restore {
            backup,
            volume,
            size,
            cell,
            timeout,
        } => restore_backup(api, &backup, &volume, size, cell, timeout).await?,
        BackupCmd::Verify { backup, timeout } => {
            let t = api.verify_backup(&backup).await?;
            let r = wait_task(api, &t.task_guid, timeout, "verification").await;
            match r {
                Ok(_) => println!(
                    "Backup {backup} is good: it restores, and its data matches its checksum and manifest."
                ),
                Err(e) => return Err(e.context(format!("backup {backup} did not verify"))),
            }
        }
        BackupCmd::Export { backup, file } => export(api, &backup, &file).await?,
        BackupCmd::Key { cmd } => crate::backup_key::run(api, cmd).await?,
        BackupCmd::Import { file } => import(api, &file).await?,
        BackupCmd::Schedule {
            volume,
            every,
            policy,
            off,
            hooks,
        } => {
            if off {
                api.remove_schedule(&volume).await?;
                println!("Volume {volume} is no longer backed up on a schedule.");
            } else {
                let mut r = policy.request(&volume, &every.unwrap_or_default())?;
                r.hooks = hooks.request()?;
                api.set_backup_schedule(&r).await?;
                println!("{}", crate::backup_policy::confirmation(&r));
            }
        }
        BackupCmd::Schedules { json } => {
            let all = api.schedules().await?;
            if json {
                show::json(&all)?;
            } else if all.is_empty() {
                println!(
                    "No schedules: `ltc backup schedule VOLUME --every daily --keep 7` makes one."
                );
            } else {
                let now = lattice_specs::now_nanos();
                print!("{}", crate::backup_policy::table(&all, now));
            }
        }
        BackupCmd::Delete { backup } => {
            api.delete_backup(&backup).await?;
            println!(
                "Deleted backup {backup}: its archive at once, or its snapshot once a forget task has pruned it from the repository."
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_list_says_which_cells_pool_warns() {
        let v = |name: &str, cell: &str, warning: &str| VolumeResponse {
            name: name.into(),
            cell_id: cell.into(),
            state: "READY".into(),
            pool_warning: warning.into(),
            ..Default::default()
        };
        let out = volumes_table(
            &[
                v(
                    "db",
                    "cell-a",
                    "the volume pool is 91% full and at its maximum (10G)",
                ),
                v(
                    "logs",
                    "cell-a",
                    "the volume pool is 91% full and at its maximum (10G)",
                ),
                v("web", "cell-b", ""),
            ],
            0,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert_eq!(
            lines[4],
            "cell cell-a (db, logs): the volume pool is 91% full and at its maximum (10G)"
        );
    }
}
