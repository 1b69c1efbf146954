//! The `local` volume driver's pool growing at its watermark: when to grow it and to
//! what ([`grow_to`]), what it warns ([`warning`]), both pure, and [`tend`], which
//! applies them to a pool through the narrow [`PoolDisk`] trait (the real pool in
//! [`crate::volume::Volumes`], a fake in the tests).
//!
//! The pool is a sparse file: growing it costs nothing until volumes write, so the
//! cell starts small and grows by steps of half its size (at least enough to bring
//! its use back under the watermark) up to the operator's `--volume-pool-max`. At the
//! maximum it warns instead.

use lattice_specs::volume::format_size;
use serde::Serialize;

/// Pool use (a share of its size) at which it grows, or warns when it cannot.
pub const WATERMARK: f64 = 0.8;

/// Sizes are whole MiB (XFS grows by whole blocks).
const MIB: u64 = 1 << 20;

/// The pool's figures, in terms of its file: `size` is its length, `used` what of it
/// is not free to volumes (its filesystem's own log and metadata included), so that
/// `used / size` is the share the watermark applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// The pool after [`tend`]: its figures, its maximum, its warning, and whether it grew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tended {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub max_bytes: u64,
    /// Past the watermark at the maximum, or a growth that failed.
    pub warning: Option<String>,
    /// The size it had before it grew now.
    pub grew_from: Option<u64>,
    /// Why growing it failed now.
    pub grow_failed: Option<String>,
}

/// A pool's disk: its figures, and growing its file (and filesystem) to a size.
pub trait PoolDisk {
    fn figures(&self) -> anyhow::Result<PoolFigures>;
    fn grow(&self, size_bytes: u64) -> anyhow::Result<()>;
}

fn past_watermark(size: u64, used: u64) -> bool {
    used as f64 >= size as f64 * WATERMARK
}

/// The size the pool grows to now, if any: once `used` passes the watermark, half its
/// `size` again (which brings even a full pool back under the watermark), never past
/// `max`.
pub fn grow_to(size: u64, used: u64, max: u64) -> Option<u64> {
    if size == 0 || size >= max || !past_watermark(size, used) {
        return None;
    }
    let want = size
        .saturating_add(size / 2)
        .div_ceil(MIB)
        .saturating_mul(MIB);
    Some(want.min(max)).filter(|&to| to > size)
}

/// What the pool warns: past the watermark, either at its maximum or because growing
/// it failed (`grow_failed`, why). `None` under the watermark.
pub fn warning(size: u64, used: u64, max: u64, grow_failed: Option<&str>) -> Option<String> {
    if !past_watermark(size, used) {
        return None;
    }
    let share = used as f64 * 100.0 / size.max(1) as f64;
    Some(match grow_failed {
        _ if size >= max => format!(
            "the volume pool is {share:.0}% full and at its maximum ({}): remove volumes, or raise the cell's --volume-pool-max",
            format_size(max)
        ),
        Some(why) => format!("the volume pool is {share:.0}% full and growing it failed: {why}"),
        None => format!("the volume pool is {share:.0}% full: it grows at its next check"),
    })
}

/// Grows the pool on `disk` when it is past the watermark (up to `max`), and says
/// what it is now. A growth that fails leaves the pool as it was, with a warning.
pub fn tend(disk: &dyn PoolDisk, max: u64) -> anyhow::Result<Tended> {
    let before = disk.figures()?;
    let (mut now, mut grew_from, mut grow_failed) = (before, None, None);
    if let Some(to) = grow_to(before.size_bytes, before.used_bytes, max) {
        match disk.grow(to) {
            Ok(()) => {
                now = disk.figures()?;
                grew_from = Some(before.size_bytes);
            }
            Err(e) => grow_failed = Some(format!("{e:#}")),
        }
    }
    Ok(Tended {
        size_bytes: now.size_bytes,
        used_bytes: now.used_bytes,
        max_bytes: max,
        warning: warning(now.size_bytes, now.used_bytes, max, grow_failed.as_deref()),
        grew_from,
        grow_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_pool_grows_by_half_at_the_watermark_up_to_its_maximum() {
        // Under the watermark: no growth.
        assert_eq!(grow_to(10 * GIB, 7 * GIB, 40 * GIB), None);
        // At it: half again.
        assert_eq!(grow_to(10 * GIB, 8 * GIB, 40 * GIB), Some(15 * GIB));
        // Full: half again brings it back under the watermark.
        let to = grow_to(10 * GIB, 10 * GIB, 40 * GIB).unwrap();
        assert_eq!(to, 15 * GIB);
        assert!((10 * GIB) as f64 / to as f64 <= WATERMARK);
        // Capped by the maximum.
        assert_eq!(grow_to(10 * GIB, 9 * GIB, 12 * GIB), Some(12 * GIB));
        // At (or past) the maximum: never.
        assert_eq!(grow_to(12 * GIB, 11 * GIB, 12 * GIB), None);
        assert_eq!(grow_to(20 * GIB, 19 * GIB, 12 * GIB), None);
        // No maximum beyond the size (the default): never.
        assert_eq!(grow_to(10 * GIB, 10 * GIB, 10 * GIB), None);
        assert_eq!(grow_to(0, 0, 10 * GIB), None);
        // Whole MiB.
        let odd = grow_to(1000 * MIB + 3, 900 * MIB, 40 * GIB).unwrap();
        assert_eq!(odd % MIB, 0);
        assert!(odd >= 1500 * MIB);
    }

    #[test]
    fn the_warning_says_whether_the_pool_is_at_its_maximum_or_could_not_grow() {
        assert_eq!(warning(10 * GIB, 7 * GIB, 10 * GIB, None), None);
        let w = warning(10 * GIB, 9 * GIB, 10 * GIB, None).unwrap();
        assert!(w.contains("90% full and at its maximum (10G)"), "{w}");
        assert!(w.contains("--volume-pool-max"), "{w}");
        let w = warning(10 * GIB, 9 * GIB, 20 * GIB, Some("disk full")).unwrap();
        assert_eq!(
            w,
            "the volume pool is 90% full and growing it failed: disk full"
        );
    }

    /// A pool in memory: growing it keeps its use.
    struct FakeDisk {
        figures: Mutex<PoolFigures>,
        fail: Option<&'static str>,
        grown_to: Mutex<Vec<u64>>,
    }

    impl FakeDisk {
        fn new(size: u64, used: u64, fail: Option<&'static str>) -> FakeDisk {
            FakeDisk {
                figures: Mutex::new(PoolFigures {
                    size_bytes: size,
                    used_bytes: used,
                }),
                fail,
                grown_to: Mutex::default(),
            }
        }
    }

    impl PoolDisk for FakeDisk {
        fn figures(&self) -> anyhow::Result<PoolFigures> {
            Ok(*self.figures.lock().unwrap())
        }
        fn grow(&self, size: u64) -> anyhow::Result<()> {
            self.grown_to.lock().unwrap().push(size);
            if let Some(why) = self.fail {
                anyhow::bail!("{why}");
            }
            self.figures.lock().unwrap().size_bytes = size;
            Ok(())
        }
    }

    #[test]
    fn tending_grows_a_full_pool_and_warns_only_when_it_cannot() {
        let disk = FakeDisk::new(10 * GIB, 9 * GIB, None);
        let t = tend(&disk, 40 * GIB).unwrap();
        assert_eq!(*disk.grown_to.lock().unwrap(), vec![15 * GIB]);
        assert_eq!((t.size_bytes, t.grew_from), (15 * GIB, Some(10 * GIB)));
        assert_eq!(t.warning, None);

        // Growing to the maximum still past the watermark: the warning says so.
        let disk = FakeDisk::new(10 * GIB, 9 * GIB, None);
        let t = tend(&disk, 11 * GIB).unwrap();
        assert_eq!(t.size_bytes, 11 * GIB);
        assert!(t.warning.unwrap().contains("at its maximum (11G)"));

        // A growth that fails: the pool as it was, the reason in the warning.
        let disk = FakeDisk::new(10 * GIB, 9 * GIB, Some("xfs_growfs: no space"));
        let t = tend(&disk, 40 * GIB).unwrap();
        assert_eq!((t.size_bytes, t.grew_from), (10 * GIB, None));
        assert!(t
            .warning
            .unwrap()
            .ends_with("growing it failed: xfs_growfs: no space"));

        // Under the watermark: nothing happens.
        let disk = FakeDisk::new(10 * GIB, GIB, None);
        let t = tend(&disk, 40 * GIB).unwrap();
        assert!(disk.grown_to.lock().unwrap().is_empty());
        assert_eq!((t.warning, t.grew_from), (None, None));
    }
}
