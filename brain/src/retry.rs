//! What becomes of work an auction round did not place: a pure decision, applied by
//! the auctioneer.
//!
//! Diego's semantics: work that does not fit *now* stays waiting (an LRP instance
//! UNCLAIMED with its placement error, a Task PENDING) and is tried again with a
//! backoff; a Task fails for lack of room only when the converger's pending timeout
//! passes (`ConvergeConfig::expire_pending_task`). Work no cell could ever run as
//! the cells are (rootfs, placement tags, volume drivers, too big for any cell) is
//! given up on at once: an LRP keeps its placement error until convergence tries it
//! again, a Task is rejected (failed after its max retries).
//!
//! Work a cell refuses (its `Perform` hands it back, or the cell cannot be reached)
//! is tried again after a short pause, kept off the cells that refused it, up to
//! `max_refusals` times; after that it waits with the backoff like work without room.

use std::time::Duration;

use crate::auction::Unplaced;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Refusals by cells after which refused work is no longer kept off them and
    /// waits with the backoff instead.
    pub max_refusals: u32,
    /// The pause before refused work is offered to another cell.
    pub refused_pause: Duration,
    /// The first wait of work without room; it doubles with each such round…
    pub initial_backoff: Duration,
    /// …up to this.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_refusals: 3,
            refused_pause: Duration::from_millis(100),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why a round did not place a piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setback {
    /// The placement found no cell for it.
    Unplaced(Unplaced),
    /// The cell it was given refused it, or could not be reached.
    Refused { cell: String, reason: String },
}

/// What the auctioneer remembers of work waiting for another round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Times cells refused it.
    pub refusals: u32,
    /// Rounds in a row it found no room (its backoff grows with them).
    pub no_room: u32,
    /// Cells to keep it off in its next round (those that just refused it).
    pub avoid: Vec<String>,
    /// The reason last recorded for it, so the same one is not written again.
    pub noted: Option<String>,
}

/// The decision for one setback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Auction it again after `after`. `note`: a new reason to record on the waiting
    /// work (an LRP instance's placement error; a Task stays PENDING as it is).
    Retry {
        after: Duration,
        note: Option<String>,
    },
    /// Stop trying it here: record the failure (an LRP instance's placement error, a
    /// Task's rejection).
    GiveUp(String),
}

/// Decides what becomes of work after `setback`, updating what is remembered of it.
pub fn next(w: &mut Waiting, setback: Setback, cfg: &RetryConfig) -> Verdict {
    let reason = match setback {
        Setback::Unplaced(Unplaced::Incompatible(reason)) => return Verdict::GiveUp(reason),
        Setback::Unplaced(Unplaced::NoRoom(reason)) => reason,
        Setback::Refused { cell, reason } => {
            w.refusals += 1;
            if w.refusals < cfg.max_refusals {
                w.avoid.push(cell);
                return Verdict::Retry {
                    after: cfg.refused_pause,
                    note: None,
                };
            }
            reason
        }
    };
    // No room now: wait (with every cell a candidate again) and try later.
    w.avoid.clear();
    let after = backoff(w.no_room, cfg);
    w.no_room = w.no_room.saturating_add(1);
    let note = (w.noted.as_deref() != Some(reason.as_str())).then(|| reason.clone());
    w.noted = Some(reason);
    Verdict::Retry { after, note }
}

/// `initial × 2^rounds`, at most `max`.
fn backoff(rounds: u32, cfg: &RetryConfig) -> Duration {
    let factor = 1u32.checked_shl(rounds.min(31)).unwrap_or(u32::MAX);
    cfg.initial_backoff
        .checked_mul(factor)
        .unwrap_or(cfg.max_backoff)
        .min(cfg.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn no_room(r: &str) -> Setback {
        Setback::Unplaced(Unplaced::NoRoom(r.into()))
    }

    fn refused(cell: &str) -> Setback {
        Setback::Refused {
            cell: cell.into(),
            reason: format!("cell {cell} refused the work"),
        }
    }

    #[test]
    fn work_without_room_waits_with_a_doubling_backoff_and_never_gives_up() {
        let cfg = RetryConfig::default();
        let mut w = Waiting::default();
        let mut waits = vec![];
        for _ in 0..40 {
            match next(&mut w, no_room("insufficient resources: containers"), &cfg) {
                Verdict::Retry { after, .. } => waits.push(after),
                other => panic!("work without room was given up: {other:?}"),
            }
        }
        assert_eq!(
            waits[..5],
            [500 * MS, 1000 * MS, 2000 * MS, 4000 * MS, 5000 * MS]
        );
        assert!(
            waits[5..].iter().all(|w| *w == cfg.max_backoff),
            "{waits:?}"
        );
    }

    #[test]
    fn a_reason_is_noted_once_until_it_changes() {
        let cfg = RetryConfig::default();
        let mut w = Waiting::default();
        let note = |v: Verdict| match v {
            Verdict::Retry { note, .. } => note,
            other => panic!("{other:?}"),
        };
        let mem = "insufficient resources: memory";
        assert_eq!(note(next(&mut w, no_room(mem), &cfg)), Some(mem.into()));
        assert_eq!(note(next(&mut w, no_room(mem), &cfg)), None);
        let slots = "insufficient resources: containers";
        assert_eq!(note(next(&mut w, no_room(slots), &cfg)), Some(slots.into()));
    }

    #[test]
    fn work_no_cell_could_run_is_given_up_at_once() {
        let why = "found no compatible cell with placement tag \"gpu\"";
        let v = next(
            &mut Waiting::default(),
            Setback::Unplaced(Unplaced::Incompatible(why.into())),
            &RetryConfig::default(),
        );
        assert_eq!(v, Verdict::GiveUp(why.into()));
    }

    #[test]
    fn refused_work_tries_other_cells_then_waits_like_work_without_room() {
        let cfg = RetryConfig::default();
        let mut w = Waiting::default();
        assert_eq!(
            next(&mut w, refused("a"), &cfg),
            Verdict::Retry {
                after: cfg.refused_pause,
                note: None
            }
        );
        assert_eq!(w.avoid, ["a"]);
        assert_eq!(
            next(&mut w, refused("b"), &cfg),
            Verdict::Retry {
                after: cfg.refused_pause,
                note: None
            }
        );
        assert_eq!(w.avoid, ["a", "b"]);
        // The third refusal: no more avoiding, a backoff, and the reason recorded.
        assert_eq!(
            next(&mut w, refused("a"), &cfg),
            Verdict::Retry {
                after: cfg.initial_backoff,
                note: Some("cell a refused the work".into())
            }
        );
        assert!(w.avoid.is_empty());
        assert!(matches!(
            next(&mut w, refused("a"), &cfg),
            Verdict::Retry { after, note: None } if after == 2 * cfg.initial_backoff
        ));
    }

    #[test]
    fn only_refusing_cells_left_means_waiting_on_all_cells_again() {
        // A lone cell refused: the next round finds only it, avoided: no room. The wait
        // that follows offers it the work again.
        let cfg = RetryConfig::default();
        let mut w = Waiting::default();
        next(&mut w, refused("a"), &cfg);
        let v = next(&mut w, no_room("cell a refused the work"), &cfg);
        assert!(matches!(v, Verdict::Retry { after, .. } if after == cfg.initial_backoff));
        assert!(w.avoid.is_empty(), "{w:?}");
    }
}
