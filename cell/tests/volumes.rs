//! The local volume driver on real loop devices (as root): thin provisioning, the size
//! as a hard quota, online growth, copy-on-write snapshots that stay consistent while
//! the volume is written, and volumes found again when the pool is reopened.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lattice_cell::testing::require_root;
use lattice_cell::volume::{parse_size, Volumes};

/// A pool in a temporary directory, unmounted and removed on drop.
struct Pool {
    v: Option<Volumes>,
    dir: PathBuf,
}

impl Pool {
    fn new(size: &str) -> Pool {
        require_root();
        let dir =
            std::env::temp_dir().join(format!("lattice-vol-{}", uuid::Uuid::new_v4().simple()));
        let v = Volumes::open(&dir, parse_size(size).unwrap()).expect("opening the pool");
        Pool { v: Some(v), dir }
    }

    fn v(&self) -> &Volumes {
        self.v.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.v.take().unwrap().close().unwrap();
        self.v = Some(Volumes::open(&self.dir, 0).unwrap());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(v) = self.v.take() {
            let _ = v.close();
        }
        // Whatever a failed test left mounted under the pool (a snapshot).
        lattice_cell::volume::unmount_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_mb(path: &std::path::Path, mb: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..mb {
        f.write_all(&chunk)?;
    }
    f.sync_all()
}

#[test]
fn ten_10g_volumes_cost_almost_nothing() {
    let pool = Pool::new("200G");
    for i in 0..10 {
        let info = pool.v().create(&format!("thin{i}"), 10 << 30).unwrap();
        assert_eq!(info.size_bytes, 10 << 30);
    }
    let real = std::fs::metadata(pool.dir.join("pool.img"))
        .unwrap()
        .blocks()
        * 512;
    assert!(
        real < 100 << 20,
        "ten 10 GB volumes take {} MB of real disk",
        real >> 20
    );
    let list = pool.v().list().unwrap();
    assert_eq!(list.len(), 10);
    // An empty 10 GB XFS keeps some of itself (log, inodes): nothing like 10 GB.
    assert!(list.iter().all(|v| v.used_bytes < 300 << 20), "{list:?}");
    let p = pool.v().pool().unwrap();
    assert!(p.warning.is_none(), "{p:?}");
    let e = pool.v().create("thin0", 1 << 30).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    assert!(pool.v().create("Bad/Name", 1 << 30).is_err());
}

#[test]
fn a_pool_past_80_percent_warns() {
    let pool = Pool::new("1G");
    let names = ["a", "b", "c"];
    for n in names {
        pool.v().create(n, 300 << 20).unwrap();
    }
    // Fill the volumes 40 MB at a time until the pool warns; it must warn before the
    // volumes are full (they could hold ~88% of the pool).
    let mut written = 0;
    for round in 0..7 {
        for n in names {
            let p = pool.v().pool().unwrap();
            if let Some(w) = &p.warning {
                assert!(w.contains("% full: grow it or remove volumes"), "{w}");
                assert!(p.used_bytes * 10 >= p.size_bytes * 8, "{p:?}");
                return;
            }
            write_mb(&pool.v().path(n).join(format!("f{round}")), 40)
                .unwrap_or_else(|e| panic!("no warning after {written} MB: {e} ({p:?})"));
            written += 40;
        }
    }
    panic!(
        "no warning after {written} MB: {:?}",
        pool.v().pool().unwrap()
    );
}

/// Issue 25: a pool given a maximum grows at its watermark while a volume fills it
/// (thin: the volume is larger than the pool), the data stays whole, the growth
/// survives reopening, and at the maximum it warns instead of growing.
#[test]
fn a_pool_grows_past_its_first_size_as_a_volume_fills_it_up_to_its_maximum() {
    let (first, max) = (parse_size("600M").unwrap(), parse_size("1G").unwrap());
    let mut pool = Pool::new("600M");
    let v = pool.v().create("fill", 2 << 30).unwrap();
    let mut sizes = vec![pool.v().tend_pool(max).unwrap().size_bytes];
    assert_eq!(sizes[0], first);
    let mut written = 0;
    let warning = loop {
        let t = pool.v().tend_pool(max).unwrap();
        assert!(t.grow_failed.is_none(), "{t:?}");
        if let Some(from) = t.grew_from {
            assert_eq!(Some(&from), sizes.last(), "{t:?}");
            assert!(t.size_bytes > from && t.size_bytes <= max, "{t:?}");
            sizes.push(t.size_bytes);
        }
        if let Some(w) = t.warning.clone() {
            assert_eq!(t.size_bytes, max, "warns only at its maximum: {t:?}");
            assert!(t.used_bytes as f64 >= max as f64 * 0.8, "{t:?}");
            break w;
        }
        assert!(written < 1024, "no warning after {written} MB: {t:?}");
        write_mb(&v.path.join(format!("f{written}")), 40).unwrap_or_else(|e| {
            panic!("the pool did not grow in time at {written} MB: {e} ({t:?})")
        });
        written += 40;
    };
    assert!(warning.contains("at its maximum (1G)"), "{warning}");
    // 600M, then half again (900M), then capped at the maximum.
    assert_eq!(sizes, vec![first, first * 3 / 2, max], "{sizes:?}");
    // The filesystem grew with the file.
    assert!(
        pool.v().pool().unwrap().size_bytes > first,
        "{:?}",
        pool.v().pool()
    );
    for at in (0..written).step_by(40) {
        let f = std::fs::read(v.path.join(format!("f{at}"))).unwrap();
        assert!(f.len() == 40 << 20 && f.iter().all(|b| *b == 7), "f{at}");
    }
    pool.reopen();
    let t = pool.v().tend_pool(max).unwrap();
    assert_eq!((t.size_bytes, t.grew_from), (max, None));
    assert!(t.warning.is_some(), "{t:?}");
}

#[test]
fn the_size_is_a_hard_quota_and_grows_online() {
    let pool = Pool::new("10G");
    let v = pool.v().create("quota", 300 << 20).unwrap();
    let err = write_mb(&v.path.join("big"), 310).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    std::fs::remove_file(v.path.join("big")).unwrap();
    // Grown while mounted: the same write now fits.
    let grown = pool.v().grow("quota", 400 << 20).unwrap();
    assert_eq!(grown.size_bytes, 400 << 20);
    write_mb(&v.path.join("big"), 310).unwrap();
    assert!(
        pool.v().grow("quota", 1 << 20).is_err(),
        "volumes only grow"
    );
    // Used counts what was written.
    assert!(pool.v().info("quota").unwrap().used_bytes >= 310 << 20);
    let e = pool.v().create("small", 100 << 20).unwrap_err().to_string();
    assert!(e.contains("at least 300M"), "{e}");
}

#[test]
fn snapshots_are_cheap_consistent_and_copy_on_write() {
    let mut pool = Pool::new("10G");
    let v = pool.v().create("data", 1 << 30).unwrap();
    write_mb(&v.path.join("payload"), 200).unwrap();
    std::fs::write(v.path.join("note"), "before").unwrap();
    let pool_before = pool.v().pool().unwrap().used_bytes;

    // A writer keeps appending while the snapshot is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, log) = (stop.clone(), v.path.join("log"));
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&log).unwrap();
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            // One write(2) per line: what an app's log append is.
            f.write_all(format!("line {n}\n").as_bytes()).unwrap();
            n += 1;
        }
        f.sync_all().unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    pool.v().snapshot("data", "s1").unwrap();
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        took < Duration::from_secs(2),
        "a snapshot of 200 MB took {took:?}"
    );
    // Copy-on-write: the pool did not gain another 200 MB.
    let pool_after = pool.v().pool().unwrap().used_bytes;
    assert!(
        pool_after < pool_before + (50 << 20),
        "snapshot copied data: {} -> {} MB",
        pool_before >> 20,
        pool_after >> 20
    );

    std::fs::write(v.path.join("note"), "after").unwrap();
    let at = pool.dir.join("snap-mnt");
    pool.v().mount_snapshot("data", "s1", &at).unwrap();
    assert_eq!(std::fs::read_to_string(at.join("note")).unwrap(), "before");
    assert_eq!(
        std::fs::metadata(at.join("payload")).unwrap().len(),
        200 << 20
    );
    // The log in the snapshot is whole lines: the filesystem was frozen, not torn.
    let log = std::fs::read_to_string(at.join("log")).unwrap();
    assert!(
        log.is_empty() || log.ends_with('\n'),
        "torn last line: {:?}",
        &log[log.len().saturating_sub(40)..]
    );
    std::process::Command::new("umount")
        .arg(&at)
        .status()
        .unwrap();
    assert_eq!(pool.v().info("data").unwrap().snapshots, vec!["s1"]);
    pool.v().release_snapshot("data", "s1").unwrap();
    assert!(pool.v().info("data").unwrap().snapshots.is_empty());

    // Reopened (a cell restart): the volume is mounted again with its data.
    pool.reopen();
    assert_eq!(
        std::fs::read_to_string(pool.v().path("data").join("note")).unwrap(),
        "after"
    );
    pool.v().remove("data").unwrap();
    assert!(pool.v().list().unwrap().is_empty());
    assert!(pool.v().remove("data").is_err());
}
