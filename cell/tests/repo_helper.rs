//! The repository helper (`lattice-shim --repo`) against local-directory repositories:
//! incremental backups store the change, restores give the data back byte for byte
//! (modes, owners, mtimes, symlinks), Debian's `restic` reads our repositories, a wrong
//! password writes nothing, stale restic locks go, the chroot confines a restore, and
//! forget + check work (a damaged pack fails the check).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lattice_specs::repo::{RepoJob, RepoOp, RepoOutcome};

const PASSWORD: &str = "0123456789abcdef-cluster-backup-key";

/// Runs the helper on `job`; its outcome and exit success.
fn helper(job: &RepoJob) -> (RepoOutcome, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-shim"))
        .arg("--repo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the helper");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(job).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let outcome: RepoOutcome = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "helper printed no outcome ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (outcome, out.status.success())
}

fn job(op: RepoOp, repo: &Path, path: &Path) -> RepoJob {
    RepoJob {
        op: Some(op),
        repository: repo.display().to_string(),
        password: PASSWORD.into(),
        path: path.display().to_string(),
        as_path: "/data".into(),
        host: "test-cell".into(),
        tags: vec!["volume=v1".into()],
        ..Default::default()
    }
}

/// A deterministic pseudo-random generator (xorshift).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "lattice", "volume", "cell ", "backup", "\n", "restic ", "42 ", "data ",
        ];
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(WORDS[(self.next() % 8) as usize].as_bytes());
        }
        v.truncate(n);
        v
    }
}

/// ~20 MB of mixed data: many small text files, some medium random ones, a large
/// compressible and a large incompressible file, modes, owners, mtimes, a symlink.
fn dataset(dir: &Path) {
    let mut g = Gen(0x5eed_1234_abcd_0001);
    for d in 0..8 {
        let sub = dir.join(format!("text/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..50 {
            let n = 1000 + (g.next() % 8000) as usize;
            std::fs::write(sub.join(format!("f{f}.txt")), g.text(n)).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("media")).unwrap();
    for m in 0..8 {
        std::fs::write(dir.join(format!("media/m{m}.bin")), g.bytes(400_000)).unwrap();
    }
    std::fs::write(dir.join("big-random.bin"), g.bytes(8_000_000)).unwrap();
    std::fs::write(dir.join("big-log.txt"), g.text(6_000_000)).unwrap();
    std::fs::write(dir.join("secret"), b"only mine\n").unwrap();
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.join("media"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(dir.join("media/m0.bin"), Some(1234), Some(5678)).unwrap();
    symlink("text/d0/f0.txt", dir.join("link")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    std::fs::set_permissions(dir.join("drop"), std::fs::Permissions::from_mode(0o3770)).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.join("secret"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Changes about 1% of the data set: 200 kB inside the large random file, one new file.
fn change_one_percent(dir: &Path) {
    let mut g = Gen(0x0c4a_96e5);
    let mut f = std::fs::File::options()
        .write(true)
        .open(dir.join("big-random.bin"))
        .unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(3_000_000)).unwrap();
    f.write_all(&g.bytes(200_000)).unwrap();
    std::fs::write(dir.join("text/new.txt"), g.text(5000)).unwrap();
}

/// Every entry under `dir`: type, mode, owner, mtime, content or link target.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let desc = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {}:{} {}", m.mode(), m.uid(), m.gid(), m.mtime())
            } else {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} {}:{} {}.{} {} {:x}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.mtime_nsec(),
                    data.len(),
                    md5_like(&data)
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// A content fingerprint (FNV-1a, 64 bits).
fn md5_like(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    assert_eq!(ta.len(), tb.len(), "entry counts differ");
    for (k, v) in &ta {
        assert_eq!(Some(v), tb.get(k), "{} differs", k.display());
    }
}

fn restic(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", repo.join("../restic-cache"))
        .output()
        .expect("Debian's restic (/usr/bin/restic, scripts/setup.sh installs it)")
}

#[test]
fn second_backup_stores_the_change_and_restores_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    dataset(&data);

    let (first, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{first:?}");
    assert_eq!(first.op, Some(RepoOp::Backup));
    assert_eq!(first.snapshot.len(), 64, "{first:?}");
    assert!(first.total_bytes > 19_000_000, "{first:?}");
    // Compressed: the text compresses, the random data does not.
    assert!(first.added_bytes < first.total_bytes, "{first:?}");
    assert!(first.added_bytes > 8_000_000, "{first:?}");

    change_one_percent(&data);
    let (second, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{second:?}");
    assert_ne!(second.snapshot, first.snapshot);
    // The change is ~205 kB inside the 8 MB random file. What is stored again is the
    // chunks around it: about 1 MiB on average, but the chunker's polynomial is random per
    // repository and a chunk may be up to 8 MiB, so in an unlucky repository that is the
    // whole file. Never the 11 MB of files that did not change.
    let changed_file = std::fs::metadata(data.join("big-random.bin"))
        .unwrap()
        .len();
    assert!(second.added_bytes >= 200_000, "{second:?}");
    assert!(
        second.added_bytes < changed_file + 100_000,
        "the second backup added {} of {} bytes: more than the changed file's {changed_file}",
        second.added_bytes,
        second.total_bytes
    );

    let target = tmp.path().join("restored");
    let mut r = job(RepoOp::Restore, &repo, &target);
    r.snapshot = second.snapshot.clone();
    let (restored, ok) = helper(&r);
    assert!(ok, "{restored:?}");
    assert_eq!(restored.snapshot, second.snapshot);
    assert_eq!(restored.files, second.files);
    assert_same_tree(&data, &target);
}

/// Runs the helper on `job`; its outcome, exit success and peak resident memory (bytes).
// The child is reaped by `wait4`, for its resource usage, rather than by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn helper_peak(job: &RepoJob) -> (RepoOutcome, bool, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-shim"))
        .arg("--repo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the helper");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(job).unwrap()).unwrap();
    drop(stdin);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: the child is ours and not yet reaped; both out-pointers are live.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32, "{}", std::io::Error::last_os_error());
    let outcome: RepoOutcome = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("helper printed no outcome ({e}): {stdout}"));
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (outcome, ok, usage.ru_maxrss as u64 * 1024)
}

/// rustic_core's restorer held the data it had read until its writes caught up: a
/// 256 MB volume's restore used ~520 MB and was OOM-killed in its task's cgroup, and
/// this restore peaked at 402 MB with it. Ours (145 MB here) stays within a few blobs
/// per worker plus rustic's blob cache, whatever the data's size.
#[test]
fn a_large_restore_stays_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir_all(data.join("many")).unwrap();
    let mut g = Gen(0xb16_da7a);
    {
        // Incompressible, so that nothing shrinks in memory either.
        let mut f = std::fs::File::create(data.join("big.bin")).unwrap();
        for _ in 0..64 {
            f.write_all(&g.bytes(4 << 20)).unwrap();
        }
        // A hole at the end.
        f.set_len(272 << 20).unwrap();
    }
    for i in 0..200 {
        std::fs::write(data.join(format!("many/{i}")), g.bytes(50_000)).unwrap();
    }
    let (backup, ok, peak) = helper_peak(&job(RepoOp::Backup, &repo, &data));
    eprintln!("the backup peaked at {} MB", peak >> 20);
    assert!(ok, "{backup:?}");
    let target = tmp.path().join("restored");
    let mut r = job(RepoOp::Restore, &repo, &target);
    r.snapshot = backup.snapshot.clone();
    let (restored, ok, peak) = helper_peak(&r);
    eprintln!("the restore peaked at {} MB", peak >> 20);
    assert!(ok, "{restored:?}");
    assert_eq!(restored.files, backup.files);
    assert_eq!(restored.total_bytes, (272 << 20) + 200 * 50_000);
    assert!(
        peak < 256 << 20,
        "the restore of ~280 MB peaked at {} MB",
        peak >> 20
    );
    assert_same_tree(&data, &target);
}

#[test]
fn debian_restic_lists_and_restores_our_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    dataset(&data);
    let (out, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{out:?}");

    let list = restic(&repo, &["snapshots", "--json"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], out.snapshot.as_str());
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/data"]));
    assert_eq!(snaps[0]["hostname"], "test-cell");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["volume=v1"]));

    let target = tmp.path().join("by-restic");
    let restore = restic(
        &repo,
        &[
            "restore",
            &out.snapshot,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_same_tree(&data, &target.join("data"));

    let check = restic(&repo, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// Every file under `dir` (paths), to see that nothing was written.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn wrong_password_fails_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"a").unwrap();
    let (out, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{out:?}");
    let before = files(&repo);

    std::fs::write(data.join("b"), b"b").unwrap();
    let mut bad = job(RepoOp::Backup, &repo, &data);
    bad.password = "not the key".into();
    let (out, ok) = helper(&bad);
    assert!(!ok);
    assert_eq!(
        out.error.as_deref(),
        Some("the repository refused the cluster's backup key: wrong password")
    );
    assert_eq!(
        files(&repo),
        before,
        "a refused backup wrote into the repository"
    );
}

/// A restic lock file (encrypted JSON), as restic writes them, into `repo/locks/`.
fn plant_lock(repo: &Path, time: &str, host: &str, pid: i64) -> PathBuf {
    use aes256ctr_poly1305aes::aead::AeadInPlace;
    use rustic_core::{Credentials, Repository, RepositoryBackends, RepositoryOptions};
    let be = rustic_backend::LocalBackend::new(repo.to_str().unwrap(), std::iter::empty()).unwrap();
    let backends = RepositoryBackends::new(std::sync::Arc::new(be), None);
    let opened = Repository::new(&RepositoryOptions::default().no_cache(true), &backends)
        .unwrap()
        .open(&Credentials::Password(PASSWORD.into()))
        .unwrap();
    let key = opened.key();
    let raw = [key.encrypt.as_slice(), &key.mac.k, &key.mac.r].concat();
    let cipher = aes256ctr_poly1305aes::Aes256CtrPoly1305Aes::new(
        aes256ctr_poly1305aes::Key::from_slice(&raw),
    );
    let json = serde_json::json!({
        "time": time, "exclusive": false, "hostname": host,
        "username": "root", "pid": pid, "uid": 0, "gid": 0,
    });
    let nonce: [u8; 16] =
        std::array::from_fn(|i| (pid as u8).wrapping_add((i as u8).wrapping_mul(31)));
    let mut body = serde_json::to_vec(&json).unwrap();
    let tag = cipher
        .encrypt_in_place_detached(
            aes256ctr_poly1305aes::Nonce::from_slice(&nonce),
            &[],
            &mut body,
        )
        .unwrap();
    let file = [nonce.as_slice(), &body, tag.as_slice()].concat();
    let id: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&file)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    std::fs::create_dir_all(repo.join("locks")).unwrap();
    let path = repo.join("locks").join(id);
    std::fs::write(&path, file).unwrap();
    path
}

#[test]
fn stale_locks_are_removed_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"a").unwrap();
    let (out, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{out:?}");

    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let now = rustic_core::jiff::Timestamp::now();
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid as i64
    };
    let killed = plant_lock(&repo, &now.to_string(), &host, dead);
    let old = plant_lock(
        &repo,
        "2020-01-01T00:00:00.123456789+01:00",
        "elsewhere",
        4242,
    );
    let live = plant_lock(&repo, &now.to_string(), &host, std::process::id() as i64);
    // restic itself sees our planted locks as locks.
    let listed = restic(&repo, &["list", "locks", "--no-lock"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 3);

    std::fs::write(data.join("b"), b"b").unwrap();
    let (out, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{out:?}");
    assert_eq!(out.stale_locks_removed, 2, "{out:?}");
    assert!(!killed.exists() && !old.exists());
    assert!(live.exists(), "a live process's lock was removed");
}

#[test]
fn chrooted_restore_does_not_follow_a_symlink_out_of_its_root() {
    let tmp = tempfile::tempdir().unwrap();
    // The volume holds its data, its repository (a local one must be inside the root)
    // and a hostile `x -> /`.
    let volume = tmp.path().join("volume");
    let data = volume.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("payload"), b"inside").unwrap();
    symlink("/", volume.join("x")).unwrap();
    let mut b = job(RepoOp::Backup, Path::new("/repo"), Path::new("/data"));
    b.root = volume.display().to_string();
    let (out, ok) = helper(&b);
    assert!(ok, "{out:?}");
    assert!(volume.join("repo/config").exists());

    // Restored through `x`: outside the root that would be the host's /…; inside it
    // is the volume's own root.
    let name = format!("lattice-escape-{}", std::process::id());
    let mut r = job(
        RepoOp::Restore,
        Path::new("/repo"),
        &Path::new("/x/tmp").join(&name),
    );
    r.root = volume.display().to_string();
    r.snapshot = out.snapshot.clone();
    let (res, ok) = helper(&r);
    assert!(ok, "{res:?}");
    assert!(
        !Path::new("/tmp").join(&name).exists(),
        "the restore escaped its root"
    );
    assert_eq!(
        std::fs::read(volume.join("tmp").join(&name).join("payload")).unwrap(),
        b"inside"
    );
}

#[test]
fn restore_refuses_a_non_empty_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"new").unwrap();
    let (out, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{out:?}");
    let target = tmp.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("a"), b"old").unwrap();
    let mut r = job(RepoOp::Restore, &repo, &target);
    r.snapshot = out.snapshot;
    let (res, ok) = helper(&r);
    assert!(!ok);
    assert!(res.error.unwrap().contains("is not empty"));
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"old");
}

#[test]
fn forget_prunes_and_check_finds_a_damaged_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, repo) = (tmp.path().join("data"), tmp.path().join("repo"));
    std::fs::create_dir_all(&data).unwrap();
    let mut g = Gen(99);
    std::fs::write(data.join("old"), g.bytes(3_000_000)).unwrap();
    let (first, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{first:?}");
    std::fs::remove_file(data.join("old")).unwrap();
    std::fs::write(data.join("new"), g.bytes(1_000_000)).unwrap();
    let (second, ok) = helper(&job(RepoOp::Backup, &repo, &data));
    assert!(ok, "{second:?}");

    let mut f = job(RepoOp::Forget, &repo, Path::new(""));
    f.forget = vec![first.snapshot.clone()];
    let (forgot, ok) = helper(&f);
    assert!(ok, "{forgot:?}");
    assert_eq!(forgot.forgotten, vec![first.snapshot.clone()]);
    assert!(forgot.removed_bytes >= 2_900_000, "{forgot:?}");
    let list = restic(&repo, &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["id"], second.snapshot.as_str());
    // Packs marked for deletion (deleted by a later prune) do not trouble restic.
    let check = restic(&repo, &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let mut c = job(RepoOp::Check, &repo, Path::new(""));
    c.snapshot = second.snapshot.clone();
    let (checked, ok) = helper(&c);
    assert!(ok, "{checked:?}");

    // Damage every pack in the middle: the check reads the data and fails.
    for pack in files(&repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
    {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&pack, bytes).unwrap();
    }
    let (damaged, ok) = helper(&c);
    assert!(!ok, "a damaged pack passed the check: {damaged:?}");
    assert!(
        damaged.error.unwrap().contains(&second.snapshot),
        "names the snapshot"
    );
}
