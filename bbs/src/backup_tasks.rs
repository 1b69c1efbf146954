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
//!
//! **Credentials.** No task carries an API credential. Each carries, in the user
//! information of its blob URL, a credential of its own ([`credential_url`]: user
//! [`TASK_CREDENTIAL_USER`], password `SECRET.TASK_GUID`) that [`grants`] exactly what
//! its actions do with that URL (upload for a backup, download for a restore or
//! verify, that one blob) while the task is pending or running.

use lattice_specs::models::{
    action, task, Action, Backup, DownloadAction, RunAction, SerialAction, Task, TaskDefinition,
    UploadAction, VolumeMount,
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
        let mut t = Task {
            task_guid: b.task_guid.clone(),
            domain: DOMAIN.into(),
            definition: Some(backup_task(&b, &url)),
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
