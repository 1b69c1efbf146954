//! The task definitions that back up, restore and verify a volume: busybox shell steps
//! and the cell's repository action, which the BBS desires as Tasks in
//! `lattice_specs::backup::DOMAIN`. How a finished task settles its backup is
//! `lattice_specs::backup`'s; `backups` desires these and settles them.
//!
//! - **backup**: on the volume's cell, the container mounts a fresh snapshot of the
//!   volume read-only at `/data`; a Run step writes the data's *manifest* (sha256 over
//!   the sorted name, mode, owner and sha256 of every entry); a `repository` step backs
//!   `/data` up into the volume's restic-format repository (`lattice_specs::repo`);
//!   a last step writes both as the task's result (`lattice_specs::backup::TaskResult`).
//! - **restore**: the snapshot is restored into a staging directory inside the target
//!   volume; a Run step checks the staged data against the manifest, then swaps it in.
//!   Any failure leaves the volume's data as it was.
//! - **verify**: the same restore and manifest check into the container's own scratch
//!   space, then a `check` of the repository reading every pack the snapshot uses: a
//!   backup that was never restored is not trusted.
//!
//! Legacy backups (a gzip tarball in the blob store, from before repositories, or
//! imported) restore and verify as they always did: a Download step whose checksum is
//! checked before anything is unpacked.
//!
//! **Credentials.** No task carries an API credential. Each carries, in the user
//! information of its repository or blob URL, a credential of its own
//! ([`credential_url`]: user [`TASK_CREDENTIAL_USER`], password `SECRET.TASK_GUID`)
//! that grants exactly what its actions do with that URL while the task is pending or
//! running ([`grants`] for blobs; the repository's REST server for repositories).

use lattice_specs::backup::in_repository;
use lattice_specs::models::{
    action, task, Action, Backup, DownloadAction, RepositoryAction, RunAction, SerialAction, Task,
    TaskDefinition, VolumeMount,
};
use lattice_specs::repo::RepoOp;

/// The rootfs those tasks run in (its shell, find, sha256sum, sort).
pub const ROOTFS: &str = "preloaded:busybox";
/// Where the task's container sees the volume.
pub const MOUNT: &str = "/data";
const RESULT_FILE: &str = "/tmp/lattice-result";
const MANIFEST_FILE: &str = "/tmp/lattice-manifest";
const OUTCOME_FILE: &str = "/tmp/lattice-outcome";
/// The memory of a task whose repository helper chunks, compresses and encrypts, or
/// restores: its backups and restores peak at ~140 MB whatever the volume's size
/// (`cell/tests/repo_helper.rs` measures them; the restorer is our own, bounded, since
/// rustic_core's queued its writes without a bound and was OOM-killed here).
const REPOSITORY_MEMORY_MB: i32 = 512;
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
        memory_mb: REPOSITORY_MEMORY_MB,
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

/// One operation on the repository at `url` (a `rest:` URL with the task's credential).
fn repository(op: RepoOp, url: &str, path: &str, snapshot: &str) -> RepositoryAction {
    RepositoryAction {
        op: op.as_str().into(),
        repository: url.into(),
        path: path.into(),
        snapshot: snapshot.into(),
        log_source: "BACKUP".into(),
        ..Default::default()
    }
}

fn repository_step(r: RepositoryAction) -> Action {
    Action {
        action: Some(action::Action::Repository(r)),
    }
}

/// The task that makes backup `b` (of `b.volume`, on its cell) into the volume's
/// repository at `repo_url` (with the task's credential, `RepoOp::Backup`).
pub fn backup_task(b: &Backup, repo_url: &str) -> TaskDefinition {
    let mount = VolumeMount {
        driver: "local".into(),
        volume: b.volume.clone(),
        container_path: MOUNT.into(),
        read_only: true,
        snapshot: true,
        scratch_bytes: 0,
    };
    let backup = RepositoryAction {
        // Every backup of the volume is of one host and path: the next one finds this
        // one as its parent, and reads only what changed.
        host: b.volume.clone(),
        tags: vec!["lattice".into(), b.id.clone()],
        outcome_file: OUTCOME_FILE.into(),
        ..repository(RepoOp::Backup, repo_url, MOUNT, "")
    };
    let action = serial(vec![
        sh(format!("{} > {MANIFEST_FILE}", manifest_of(MOUNT))),
        repository_step(backup),
        // lattice_specs::backup::TaskResult; the manifest is hex, the outcome JSON.
        sh(format!(
            "printf '{{\"manifest\":\"%s\",\"outcome\":%s}}\\n' \"$(cat {MANIFEST_FILE})\" \"$(cat {OUTCOME_FILE})\" > {RESULT_FILE}"
        )),
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

/// The step that brings backup `b`'s data into directory `to` (made by it): its
/// snapshot restored from the repository at `url`, or (a legacy backup) its archive
/// downloaded from the blob at `url`, checksum first.
fn fetch(b: &Backup, url: &str, to: &str) -> Action {
    if in_repository(b) {
        repository_step(repository(RepoOp::Restore, url, to, &b.snapshot))
    } else {
        download(b, url, to)
    }
}

/// The task that restores backup `b` into `volume` (whose cell runs it), replacing the
/// volume's data only once it is whole and matches the manifest. `url` is the backup's
/// repository (`RepoOp::Restore`) or, for a legacy backup, its blob, with the task's
/// credential (`backups::source_url` gives it).
pub fn restore_task(task_guid: &str, b: &Backup, url: &str, volume: &str) -> TaskDefinition {
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
        fetch(b, url, &staging),
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
/// that runs it, removed after) and checks it against its manifest, then (a snapshot)
/// checks the repository, reading every pack the snapshot uses, or (a legacy archive)
/// its checksum as it downloads. `url` as [`restore_task`] takes it.
pub fn verify_task(task_guid: &str, b: &Backup, url: &str) -> TaskDefinition {
    let scratch = "/scratch";
    let held = b.volume_used_bytes.max(b.size_bytes).max(b.total_bytes);
    let mount = VolumeMount {
        driver: "local".into(),
        container_path: scratch.into(),
        // Room for the data as it was, and the filesystem's own needs.
        scratch_bytes: (held * 2).max(lattice_specs::volume::MIN_SIZE),
        ..Default::default()
    };
    // Into a directory of the volume: the restore makes a new directory.
    let into = format!("{scratch}/data");
    let mut steps = vec![fetch(b, url, &into), sh(check_manifest(&into, &b.manifest))];
    if in_repository(b) {
        steps.push(repository_step(repository(
            RepoOp::Check,
            url,
            "",
            &b.snapshot,
        )));
    }
    steps.push(sh(format!("echo ok > {RESULT_FILE}")));
    definition(task_guid, vec![mount], serial(steps))
}

/// The HTTP Basic user name of a backup task's blob credential.
pub const TASK_CREDENTIAL_USER: &str = "lattice-task";

/// What a task's blob credential lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobVerb {
    /// PUT or POST the blob (a backup's Upload action).
    Upload,
    /// GET or HEAD the blob (a restore's or verify's Download action).
    Download,
}

impl BlobVerb {
    /// The verb an HTTP method is; None for any other (DELETE above all).
    pub fn of(method: &axum::http::Method) -> Option<BlobVerb> {
        use axum::http::Method;
        match *method {
            Method::PUT | Method::POST => Some(BlobVerb::Upload),
            Method::GET | Method::HEAD => Some(BlobVerb::Download),
            _ => None,
        }
    }
}

/// `url` (`scheme://HOST/v1/blobs/NAME`) carrying a fresh credential of task
/// `task_guid` (a random 256-bit secret) in its user information.
pub fn credential_url(url: &str, task_guid: &str) -> String {
    let password = format!("{}.{task_guid}", crate::db::new_secret());
    match url.split_once("://") {
        Some((scheme, rest)) => format!(
            "{scheme}://{TASK_CREDENTIAL_USER}:{}@{rest}",
            lattice_specs::path_segment(&password)
        ),
        None => url.to_string(),
    }
}

/// The task guid a credential's password names.
pub fn credential_task(password: &str) -> Option<&str> {
    password
        .split_once('.')
        .map(|(_, guid)| guid)
        .filter(|g| !g.is_empty())
}

/// The (verb, URL) of every transfer in `a`, at any depth.
fn transfers<'a>(a: Option<&'a Action>, out: &mut Vec<(BlobVerb, &'a str)>) {
    use action::Action as A;
    let Some(a) = a.and_then(|a| a.action.as_ref()) else {
        return;
    };
    match a {
        A::Download(d) => out.push((BlobVerb::Download, &d.from)),
        A::Upload(u) => out.push((BlobVerb::Upload, &u.to)),
        A::Run(_) | A::Repository(_) => {}
        A::Timeout(t) => transfers(t.action.as_deref(), out),
        A::EmitProgress(e) => transfers(e.action.as_deref(), out),
        A::Try(t) => transfers(t.action.as_deref(), out),
        A::Parallel(p) => p.actions.iter().for_each(|a| transfers(Some(a), out)),
        A::Serial(s) => s.actions.iter().for_each(|a| transfers(Some(a), out)),
        A::Codependent(c) => c.actions.iter().for_each(|a| transfers(Some(a), out)),
    }
}

/// Does `t` let the holder of `password` (a [`TASK_CREDENTIAL_USER`] credential) do
/// `verb` to the blob at `path` (the request's path)? Only a backup-domain task that is
/// pending or running, one of whose actions does that verb to that path with exactly
/// that credential.
pub fn grants(t: &Task, verb: BlobVerb, path: &str, password: &str) -> bool {
    let live = matches!(t.state(), task::State::Pending | task::State::Running);
    if !live || t.domain != lattice_specs::backup::DOMAIN {
        return false;
    }
    let mut found = Vec::new();
    transfers(
        t.definition.as_ref().and_then(|d| d.action.as_ref()),
        &mut found,
    );
    // Compared by hash: how long the comparison takes says nothing about the secret.
    let given = crate::db::secret_hash(password);
    found.iter().any(|(v, url)| {
        *v == verb
            && reqwest::Url::parse(url).is_ok_and(|u| {
                u.username() == TASK_CREDENTIAL_USER
                    && u.path() == path
                    && u.password()
                        .is_some_and(|p| crate::db::secret_hash(p) == given)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::backup::DOMAIN;
    use lattice_specs::validation::validate_task;

    use lattice_specs::testing::backup;

    fn snapshot_backup() -> Backup {
        Backup {
            store: "default".into(),
            repository: "pg".into(),
            snapshot: "5".repeat(64),
            total_bytes: 3 << 30,
            checksum: String::new(),
            ..backup()
        }
    }

    /// The repository actions of `def`, in order.
    fn repository_steps(def: &TaskDefinition) -> Vec<RepositoryAction> {
        let Some(action::Action::Serial(s)) = def.action.as_ref().and_then(|a| a.action.as_ref())
        else {
            panic!("a serial action: {def:?}")
        };
        s.actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(action::Action::Repository(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_backup_task_snapshots_the_volume_into_its_repository_and_reports_both() {
        let b = snapshot_backup();
        let url = "rest:http://lattice-task:s.backup-pg-1@127.0.0.1:1/v1/repos/pg/";
        let t = backup_task(&b, url);
        validate_task("backup-pg-1", DOMAIN, &t).unwrap();
        assert!(t.volume_mounts[0].snapshot && t.volume_mounts[0].read_only);
        let steps = repository_steps(&t);
        assert_eq!(steps.len(), 1);
        let r = &steps[0];
        assert_eq!(
            (r.op.as_str(), r.repository.as_str(), r.path.as_str()),
            ("backup", url, MOUNT)
        );
        assert_eq!(
            r.host, "pg",
            "every backup of a volume is one host: parents are found"
        );
        assert!(r.tags.contains(&b.id));
        assert_eq!(r.outcome_file, OUTCOME_FILE);
        assert_eq!(t.result_file, RESULT_FILE);
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\\\"manifest\\\""), "{json}");
    }

    #[test]
    fn a_snapshot_restores_and_verifies_from_its_repository_an_archive_from_its_blob() {
        let b = snapshot_backup();
        let url = "rest:http://lattice-task:s.restore-x@127.0.0.1:1/v1/repos/pg/";
        let r = restore_task("restore-x", &b, url, "pg2");
        validate_task("restore-x", DOMAIN, &r).unwrap();
        assert_eq!(r.volume_mounts[0].volume, "pg2");
        assert!(!r.volume_mounts[0].read_only);
        let steps = repository_steps(&r);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].op, "restore");
        assert_eq!(steps[0].snapshot, b.snapshot);
        assert_eq!(
            steps[0].path,
            format!("{MOUNT}/{STAGING}"),
            "into staging first"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(&b.manifest),
            "the manifest is checked: {json}"
        );

        let v = verify_task("verify-x", &b, url);
        validate_task("verify-x", DOMAIN, &v).unwrap();
        assert!(v.volume_mounts[0].volume.is_empty());
        assert_eq!(
            v.volume_mounts[0].scratch_bytes,
            6 << 30,
            "room for what it held"
        );
        let ops: Vec<String> = repository_steps(&v).into_iter().map(|r| r.op).collect();
        assert_eq!(ops, ["restore", "check"]);

        // A legacy archive: downloaded, its checksum checked, no repository step.
        let legacy = backup();
        let blob = "http://127.0.0.1:1/v1/blobs/backup-pg-1.tgz";
        for def in [
            restore_task("restore-x", &legacy, blob, "pg2"),
            verify_task("verify-x", &legacy, blob),
        ] {
            validate_task("restore-x", DOMAIN, &def).unwrap();
            assert!(repository_steps(&def).is_empty());
            let json = serde_json::to_string(&def).unwrap();
            assert!(
                json.contains(&legacy.checksum) && json.contains(&legacy.manifest),
                "{json}"
            );
        }
        assert_eq!(
            verify_task("verify-x", &legacy, blob).volume_mounts[0].scratch_bytes,
            lattice_specs::volume::MIN_SIZE
        );
    }

    #[test]
    fn a_task_credential_grants_its_own_verb_on_its_own_blob_while_the_task_runs() {
        let b = backup();
        let plain = "http://10.0.0.1:8888/v1/blobs/backup-pg-1.tgz";
        let url = credential_url(plain, &b.task_guid);
        let u = reqwest::Url::parse(&url).unwrap();
        assert_eq!(u.username(), TASK_CREDENTIAL_USER);
        let password = u.password().unwrap().to_string();
        assert_eq!(credential_task(&password), Some(b.task_guid.as_str()));
        assert_ne!(
            credential_url(plain, &b.task_guid),
            url,
            "every task gets a fresh secret"
        );
        // An archive's upload (as backups made them before repositories).
        let upload = serial(vec![Action {
            action: Some(action::Action::Upload(
                lattice_specs::models::UploadAction {
                    artifact: "backup".into(),
                    from: MOUNT.into(),
                    to: url.clone(),
                    ..Default::default()
                },
            )),
        }]);
        let mut t = Task {
            task_guid: b.task_guid.clone(),
            domain: DOMAIN.into(),
            definition: Some(definition(&b.task_guid, vec![], upload)),
            state: task::State::Running as i32,
            ..Default::default()
        };
        let path = "/v1/blobs/backup-pg-1.tgz";
        assert!(grants(&t, BlobVerb::Upload, path, &password));
        assert!(
            !grants(&t, BlobVerb::Download, path, &password),
            "a backup only uploads"
        );
        assert!(!grants(
            &t,
            BlobVerb::Upload,
            "/v1/blobs/other.tgz",
            &password
        ));
        let wrong = format!("x{password}");
        assert!(!grants(&t, BlobVerb::Upload, path, &wrong));
        assert_eq!(
            BlobVerb::of(&axum::http::Method::DELETE),
            None,
            "nobody deletes with it"
        );

        // A restore only downloads, and only while it is not done.
        let r_url = credential_url(plain, "restore-pg2-abc");
        let r_pass = reqwest::Url::parse(&r_url)
            .unwrap()
            .password()
            .unwrap()
            .to_string();
        let mut r = Task {
            task_guid: "restore-pg2-abc".into(),
            domain: DOMAIN.into(),
            definition: Some(restore_task("restore-pg2-abc", &b, &r_url, "pg2")),
            state: task::State::Pending as i32,
            ..Default::default()
        };
        assert!(grants(&r, BlobVerb::Download, path, &r_pass));
        assert!(!grants(&r, BlobVerb::Upload, path, &r_pass));
        assert!(
            !grants(&r, BlobVerb::Download, path, &password),
            "another task's secret"
        );
        r.state = task::State::Completed as i32;
        assert!(
            !grants(&r, BlobVerb::Download, path, &r_pass),
            "expires with the task"
        );
        t.domain = "apps".into();
        assert!(
            !grants(&t, BlobVerb::Upload, path, &password),
            "only backup tasks"
        );
    }
}
