//! The task definitions that back up, restore and verify a volume: the shell scripts
//! (in busybox) the BBS desires as Tasks in `lattice_specs::backup::DOMAIN`. How a
//! finished task settles its backup is `lattice_specs::backup`'s; `backups` desires
//! these and settles them.
//!
//! - **backup**: on the volume's cell, the container mounts a fresh snapshot of the
//!   volume read-only at `/data`; a Run step writes the data's *manifest* (sha256 over
//!   the sorted sha256 of every file) to the result file; an Upload step streams `/data`
//!   as a gzip-compressed tar to the blob store, which keeps it only when whole.
//! - **restore**: the archive is downloaded (its checksum checked before anything is
//!   unpacked) into a staging directory inside the target volume; a Run step checks the
//!   staged data against the manifest, then swaps it in. Any failure leaves the volume's
//!   data as it was.
//! - **verify**: the same download and manifest check into the container's own scratch
//!   space: a backup that was never restored is not trusted.

use lattice_specs::models::{
    action, Action, Backup, DownloadAction, RunAction, SerialAction, TaskDefinition, UploadAction,
    VolumeMount,
};

/// The rootfs those tasks run in (its shell, find, sha256sum, sort).
pub const ROOTFS: &str = "preloaded:busybox";
/// Where the task's container sees the volume.
pub const MOUNT: &str = "/data";
const RESULT_FILE: &str = "/tmp/lattice-manifest";
const STAGING: &str = ".lattice-restore";
const OLD: &str = ".lattice-old";

/// A shell line printing the manifest of a directory: sha256 over the sorted list of
/// every entry's name, mode and owner and every file's sha256 (a restore must give all
/// of that back; a leftover staging directory is not part of the data).
fn manifest_of(dir: &str) -> String {
    format!(
        "cd '{dir}' && {{ find . \\( -path './{STAGING}' -o -path './{OLD}' \\) -prune -o ! -name . -exec stat -c '%n %f %u %g' {{}} + ; \
         find . \\( -path './{STAGING}' -o -path './{OLD}' \\) -prune -o -type f -exec sha256sum {{}} + ; }} | sort | sha256sum | cut -d' ' -f1"
    )
}

fn sh(script: String) -> Action {
    Action {
        action: Some(action::Action::Run(RunAction {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), format!("set -eo pipefail\n{script}")],
            user: "root".into(),
            ..Default::default()
        })),
    }
}

fn serial(actions: Vec<Action>) -> Action {
    Action {
        action: Some(action::Action::Serial(SerialAction {
            actions,
            ..Default::default()
        })),
    }
}

fn definition(log_guid: &str, mounts: Vec<VolumeMount>, action: Action) -> TaskDefinition {
    TaskDefinition {
        rootfs: ROOTFS.into(),
        action: Some(action),
        memory_mb: 256,
        disk_mb: 0,
        cpu_weight: 50,
        log_guid: log_guid.into(),
        log_source: "BACKUP".into(),
        result_file: RESULT_FILE.into(),
        volume_mounts: mounts,
        privileged: false,
        ..Default::default()
    }
}

/// The task that makes backup `b` (of `b.volume`, on its cell) into `blob_url`.
pub fn backup_task(b: &Backup, blob_url: &str) -> TaskDefinition {
    let mount = VolumeMount {
        driver: "local".into(),
        volume: b.volume.clone(),
        container_path: MOUNT.into(),
        read_only: true,
        snapshot: true,
        scratch_bytes: 0,
    };
    let action = serial(vec![
        sh(format!("{} > {RESULT_FILE}", manifest_of(MOUNT))),
        Action {
            action: Some(action::Action::Upload(UploadAction {
                artifact: "backup".into(),
                from: MOUNT.into(),
                to: blob_url.into(),
                ..Default::default()
            })),
        },
    ]);
    definition(&b.task_guid, vec![mount], action)
}

fn download(b: &Backup, blob_url: &str, to: &str) -> Action {
    Action {
        action: Some(action::Action::Download(DownloadAction {
            artifact: "backup".into(),
            from: blob_url.into(),
            to: to.into(),
            checksum_algorithm: "sha256".into(),
            checksum_value: b.checksum.clone(),
            ..Default::default()
        })),
    }
}

fn check_manifest(dir: &str, expected: &str) -> String {
    format!(
        "m=$({})\n[ \"$m\" = '{expected}' ] || {{ echo \"the restored data differs from the backup (manifest $m, expected {expected})\" >&2; exit 1; }}",
        manifest_of(dir)
    )
}

/// The task that restores backup `b` into `volume` (whose cell runs it), replacing the
/// volume's data only once the archive is whole and its data matches the manifest.
pub fn restore_task(task_guid: &str, b: &Backup, blob_url: &str, volume: &str) -> TaskDefinition {
    let mount = VolumeMount {
        driver: "local".into(),
        volume: volume.into(),
        container_path: MOUNT.into(),
        read_only: false,
        snapshot: false,
        scratch_bytes: 0,
    };
    let staging = format!("{MOUNT}/{STAGING}");
    let check = check_manifest(&staging, &b.manifest);
    let action = serial(vec![
        // What an earlier, interrupted restore may have left.
        sh(format!("rm -rf '{staging}'")),
        download(b, blob_url, &staging),
        // The swap is renames only (old data aside, new data in, old data deleted),
        // so the window in which the volume is neither is as short as it can be.
        sh(format!(
            "( {check} ) || {{ rm -rf '{staging}'; exit 1; }}\n\
             cd '{MOUNT}'\n\
             rm -rf '{OLD}' && mkdir '{OLD}'\n\
             find . -mindepth 1 -maxdepth 1 ! -name '{STAGING}' ! -name '{OLD}' -exec mv {{}} '{OLD}/' \\;\n\
             find '{STAGING}' -mindepth 1 -maxdepth 1 ! -name '{STAGING}' ! -name '{OLD}' -exec mv {{}} . \\;\n\
             rm -rf '{STAGING}'\n\
             rm -rf '{OLD}'\n\
             echo restored > {RESULT_FILE}"
        )),
    ]);
    definition(task_guid, vec![mount], action)
}

/// The task that restores backup `b` into a scratch volume (made for it on the cell
/// that runs it, removed after) and checks it against its checksum and manifest.
pub fn verify_task(task_guid: &str, b: &Backup, blob_url: &str) -> TaskDefinition {
    let scratch = "/scratch";
    let mount = VolumeMount {
        driver: "local".into(),
        container_path: scratch.into(),
        // Room for the data as it was, and the filesystem's own needs.
        scratch_bytes: (b.volume_used_bytes.max(b.size_bytes) * 2)
            .max(lattice_specs::volume::MIN_SIZE),
        ..Default::default()
    };
    // Into a directory of the volume: the download streams into a new directory.
    let into = format!("{scratch}/data");
    let action = serial(vec![
        download(b, blob_url, &into),
        sh(format!(
            "{}\necho ok > {RESULT_FILE}",
            check_manifest(&into, &b.manifest)
        )),
    ]);
    definition(task_guid, vec![mount], action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::backup::DOMAIN;
    use lattice_specs::validation::validate_task;

    use lattice_specs::testing::backup;

    #[test]
    fn task_definitions_are_valid_tasks() {
        let b = backup();
        let url = "http://127.0.0.1:1/v1/blobs/backup-pg-1.tgz";
        let t = backup_task(&b, url);
        validate_task("backup-pg-1", DOMAIN, &t).unwrap();
        assert!(t.volume_mounts[0].snapshot && t.volume_mounts[0].read_only);
        let r = restore_task("restore-x", &b, url, "pg2");
        validate_task("restore-x", DOMAIN, &r).unwrap();
        assert_eq!(r.volume_mounts[0].volume, "pg2");
        assert!(!r.volume_mounts[0].read_only);
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(&b.checksum) && json.contains(&b.manifest),
            "{json}"
        );
        let v = verify_task("verify-x", &b, url);
        validate_task("verify-x", DOMAIN, &v).unwrap();
        assert!(v.volume_mounts[0].volume.is_empty());
        assert_eq!(
            v.volume_mounts[0].scratch_bytes,
            lattice_specs::volume::MIN_SIZE
        );
    }
}
