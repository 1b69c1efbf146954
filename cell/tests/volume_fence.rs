//! Fencing a volume's copy off on real loop devices (as root): the copy is unmounted,
//! moved out of the volumes (never listed or mounted again, also after the pool is
//! reopened), its data kept for the operator; a volume made afresh at a newer epoch
//! carries that epoch; a standby copy taken over becomes the volume with its data.

use std::path::PathBuf;

use lattice_cell::testing::require_root;
use lattice_cell::volume::{parse_size, Volumes};

/// A pool in a temporary directory, unmounted and removed on drop.
struct Pool {
    v: Option<Volumes>,
    dir: PathBuf,
    /// Where the test mounts a fenced image (unmounted on drop).
    look: PathBuf,
}

impl Pool {
    fn new(size: &str) -> Pool {
        require_root();
        let dir =
            std::env::temp_dir().join(format!("lattice-fence-{}", uuid::Uuid::new_v4().simple()));
        let v = Volumes::open(&dir, parse_size(size).unwrap()).expect("opening the pool");
        let look = dir.join("look");
        Pool {
            v: Some(v),
            dir,
            look,
        }
    }

    fn v(&self) -> &Volumes {
        self.v.as_ref().unwrap()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.look, nix::mount::MntFlags::MNT_DETACH);
        if let Some(v) = self.v.take() {
            let _ = v.close();
        }
        lattice_cell::volume::unmount_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_fenced_copy_is_never_mounted_again_and_keeps_its_data() {
    let mut pool = Pool::new("4G");
    let info = pool.v().create("pg", 400 << 20).unwrap();
    std::fs::write(info.path.join("row"), "before the failover").unwrap();
    assert_eq!(pool.v().epoch("pg"), 0, "made before any failover");

    let kept = pool.v().fence("pg", "pg@fenced-e0-17").unwrap();
    assert!(kept.exists(), "{}", kept.display());
    assert!(pool.v().info("pg").is_err(), "no volume pg any more");
    assert!(pool.v().list().unwrap().is_empty());
    assert!(
        !lattice_cell::rootfs::is_mounted(&pool.v().path("pg")),
        "unmounted"
    );
    assert_eq!(
        pool.v().fenced().unwrap(),
        vec![("pg".to_string(), kept.clone())]
    );
    let err = pool.v().fence("web", "../x").unwrap_err().to_string();
    assert!(
        err.contains("no volume web") || err.contains("named web@"),
        "{err}"
    );

    // Reopened (the cell restarted): still not mounted, still kept.
    pool.v.take().unwrap().close().unwrap();
    pool.v = Some(Volumes::open(&pool.dir, 0).unwrap());
    assert!(pool.v().list().unwrap().is_empty());
    assert_eq!(pool.v().fenced().unwrap().len(), 1);

    // The operator reads it where it lies.
    std::fs::create_dir_all(&pool.look).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-o", "loop,ro,nouuid"])
        .arg(&kept)
        .arg(&pool.look)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(pool.look.join("row")).unwrap(),
        "before the failover"
    );

    // The volume made here again at a newer epoch is empty and says its epoch.
    let again = pool.v().create("pg", 400 << 20).unwrap();
    pool.v().set_epoch("pg", 2).unwrap();
    assert_eq!(pool.v().epoch("pg"), 2);
    assert!(!again.path.join("row").exists());
    pool.v().remove("pg").unwrap();
    assert_eq!(pool.v().epoch("pg"), 0, "the marker goes with the volume");
}

#[test]
fn a_standby_copy_becomes_the_volume_with_its_data() {
    let pool = Pool::new("4G");
    let copy = lattice_specs::volume::standby_name("pg");
    let info = pool.v().create(&copy, 400 << 20).unwrap();
    std::fs::write(info.path.join("row"), "restored from pg-1").unwrap();
    assert!(pool.v().holds(&copy) && !pool.v().holds("pg"));
    // Only a standby copy of a valid name is a name the pool takes.
    assert!(pool.v().create("pg.other", 400 << 20).is_err());

    let taken = pool.v().promote("pg").unwrap();
    assert_eq!(taken.name, "pg");
    assert_eq!(
        std::fs::read_to_string(taken.path.join("row")).unwrap(),
        "restored from pg-1"
    );
    assert!(!pool.v().holds(&copy), "the copy is the volume now");
    assert!(
        !lattice_cell::rootfs::is_mounted(&pool.v().path(&copy)),
        "the copy's mount is gone"
    );
    let names: Vec<String> = pool
        .v()
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["pg"]);
    // Nothing to take over twice, and a volume is never overwritten by a copy.
    assert!(pool.v().promote("pg").is_err());
    pool.v().create(&copy, 400 << 20).unwrap();
    let err = pool.v().promote("pg").unwrap_err().to_string();
    assert!(err.contains("exists already"), "{err}");
    pool.v().remove(&copy).unwrap();
    pool.v().remove("pg").unwrap();
}
