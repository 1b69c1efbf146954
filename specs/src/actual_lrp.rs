//! The ActualLRP state machine: UNCLAIMED → CLAIMED → RUNNING, or CRASHED.
//!
//! Every transition of an instance is checked here, by `allows_transition`,
//! and applied by the pure operations below (`claim`, `start`, `crash`,
//! `unclaim`, `fail_placement`). A cell may only move an instance that is
//! unclaimed or already its own (same instance key); only the system (an empty
//! instance key) may send an instance back to UNCLAIMED.

use crate::models::actual_lrp::{Presence, State};
use crate::models::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, ModificationTag,
};
use crate::restart::RestartPolicy;
use crate::ModelError;

pub fn state_name(s: State) -> &'static str {
    match s {
        State::Unclaimed => "UNCLAIMED",
        State::Claimed => "CLAIMED",
        State::Running => "RUNNING",
        State::Crashed => "CRASHED",
    }
}

pub fn presence_name(p: Presence) -> &'static str {
    match p {
        Presence::Ordinary => "ORDINARY",
        Presence::Evacuating => "EVACUATING",
        Presence::Suspect => "SUSPECT",
        Presence::Replaced => "REPLACED",
    }
}

pub fn instance_key_is_empty(ik: &ActualLrpInstanceKey) -> bool {
    ik.instance_guid.is_empty() && ik.cell_id.is_empty()
}

/// Is an update tagged `new` older than the record held, tagged `held` (the same
/// incarnation, a lower index)? Followers of the BBS's events (the router, a cell's
/// DNS) discard such updates, of actual and desired LRPs alike.
pub fn is_stale(held: Option<&ModificationTag>, new: Option<&ModificationTag>) -> bool {
    match (held, new) {
        (Some(h), Some(n)) => h.epoch == n.epoch && n.index < h.index,
        _ => false,
    }
}

/// Is a removal tagged `removed` about the incarnation held, tagged `held` (the same
/// epoch)? A removal of another incarnation leaves the held one.
pub fn same_incarnation(held: Option<&ModificationTag>, removed: Option<&ModificationTag>) -> bool {
    held.map(|t| &t.epoch) == removed.map(|t| &t.epoch)
}

/// May `before` move to state `to` at the request of the holder of `ik`
/// (an empty key means the system itself: the converger or the auctioneer)?
pub fn allows_transition(before: &ActualLrp, ik: &ActualLrpInstanceKey, to: State) -> bool {
    let empty = instance_key_is_empty(ik);
    let same = !empty && before.instance_key.as_ref() == Some(ik);
    use State::*;
    match (before.state(), to) {
        (Unclaimed, Unclaimed) => empty,
        (Unclaimed, Claimed) | (Unclaimed, Running) => !empty,
        (Unclaimed, Crashed) => false,
        (Claimed | Running, Unclaimed) => empty,
        (Claimed | Running, Claimed | Running | Crashed) => same,
        (Crashed, Unclaimed) => empty,
        (Crashed, Claimed | Running | Crashed) => false,
    }
}

/// A fresh UNCLAIMED instance record.
pub fn new_unclaimed(process_guid: &str, index: i32, domain: &str, now: i64) -> ActualLrp {
    ActualLrp {
        key: Some(ActualLrpKey {
            process_guid: process_guid.into(),
            index,
            domain: domain.into(),
        }),
        since: now,
        modification_tag: Some(ModificationTag {
            epoch: new_epoch(now, process_guid, index),
            index: 0,
        }),
        ..Default::default()
    }
}

fn new_epoch(now: i64, guid: &str, index: i32) -> String {
    // Unique enough to tell two incarnations of one key apart; no I/O needed.
    format!("{now:x}-{:x}", fxhash(guid) ^ index as u64)
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The refusal of `op` on `lrp` in its current state.
pub(crate) fn refuse(lrp: &ActualLrp, op: &'static str, detail: String) -> ModelError {
    let key = lrp.key.clone().unwrap_or_default();
    ModelError::ActualLrpTransition {
        op,
        process_guid: key.process_guid,
        index: key.index,
        from: state_name(lrp.state()),
        detail,
    }
}

fn check(
    lrp: &ActualLrp,
    ik: &ActualLrpInstanceKey,
    op: &'static str,
    to: State,
) -> Result<(), ModelError> {
    if allows_transition(lrp, ik, to) {
        return Ok(());
    }
    let detail = match &lrp.instance_key {
        Some(owner) if !instance_key_is_empty(owner) && owner != ik => {
            format!(
                " (held by instance {} on cell {})",
                owner.instance_guid, owner.cell_id
            )
        }
        _ => String::new(),
    };
    Err(refuse(lrp, op, detail))
}

fn bump(lrp: &mut ActualLrp) {
    let tag = lrp.modification_tag.get_or_insert_with(Default::default);
    tag.index = tag.index.wrapping_add(1);
}

fn set_state(lrp: &mut ActualLrp, to: State, now: i64) {
    if lrp.state() != to {
        lrp.since = now;
    }
    lrp.set_state(to);
    bump(lrp);
}

/// A cell claims the instance it won in the auction.
pub fn claim(lrp: &mut ActualLrp, ik: &ActualLrpInstanceKey, now: i64) -> Result<(), ModelError> {
    check(lrp, ik, "claim", State::Claimed)?;
    lrp.instance_key = Some(ik.clone());
    lrp.net_info = None;
    lrp.placement_error.clear();
    set_state(lrp, State::Claimed, now);
    Ok(())
}

/// The instance is up and healthy on its cell (or the cell re-adopts it).
pub fn start(
    lrp: &mut ActualLrp,
    ik: &ActualLrpInstanceKey,
    net: ActualLrpNetInfo,
    now: i64,
) -> Result<(), ModelError> {
    check(lrp, ik, "start", State::Running)?;
    lrp.instance_key = Some(ik.clone());
    lrp.net_info = Some(net);
    lrp.placement_error.clear();
    set_state(lrp, State::Running, now);
    Ok(())
}

/// The instance's process exited or failed its health check. Returns whether
/// it should be re-placed right away (the first crashes); otherwise it stays
/// CRASHED until the converger restarts it after its backoff.
pub fn crash(
    lrp: &mut ActualLrp,
    ik: &ActualLrpInstanceKey,
    reason: &str,
    now: i64,
    policy: &RestartPolicy,
) -> Result<bool, ModelError> {
    check(lrp, ik, "crash", State::Crashed)?;
    let running_since = (lrp.state() == State::Running).then_some(lrp.since);
    let count = policy.next_crash_count(lrp.crash_count.max(0) as u32, running_since, now);
    lrp.crash_count = count.min(i32::MAX as u32) as i32;
    lrp.crash_reason = reason.to_string();
    lrp.instance_key = None;
    lrp.net_info = None;
    let immediately = policy.restart_immediately(count);
    lrp.since = now;
    lrp.set_state(if immediately {
        State::Unclaimed
    } else {
        State::Crashed
    });
    bump(lrp);
    Ok(immediately)
}

/// The system takes the instance back (restart after backoff, vanished or
/// evacuating cell, stale claim): UNCLAIMED, ready for the auction.
pub fn unclaim(lrp: &mut ActualLrp, now: i64) -> Result<(), ModelError> {
    check(
        lrp,
        &ActualLrpInstanceKey::default(),
        "unclaim",
        State::Unclaimed,
    )?;
    lrp.instance_key = None;
    lrp.net_info = None;
    set_state(lrp, State::Unclaimed, now);
    Ok(())
}

/// The auction could not place the instance: record why.
pub fn fail_placement(lrp: &mut ActualLrp, reason: &str, now: i64) -> Result<(), ModelError> {
    if lrp.state() != State::Unclaimed {
        return Err(refuse(lrp, "fail", String::new()));
    }
    lrp.placement_error = reason.to_string();
    set_state(lrp, State::Unclaimed, now);
    Ok(())
}

/// Is this CRASHED instance due for a restart at `now`?
pub fn should_restart(lrp: &ActualLrp, now: i64, policy: &RestartPolicy) -> bool {
    lrp.state() == State::Crashed
        && policy.should_restart(now, lrp.since, lrp.crash_count.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::instance_key;

    const ALL: [State; 4] = [
        State::Unclaimed,
        State::Claimed,
        State::Running,
        State::Crashed,
    ];

    fn lrp_in(state: State) -> ActualLrp {
        let mut l = new_unclaimed("web", 0, "d", 1);
        if matches!(state, State::Claimed | State::Running) {
            l.instance_key = Some(instance_key("i1", "c1"));
        }
        l.set_state(state);
        l
    }

    /// Who asks: the owner (i1@c1), another cell (i2@c2), or the system (empty).
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        Owner,
        Other,
        System,
    }

    fn key_of(w: Who) -> ActualLrpInstanceKey {
        match w {
            Who::Owner => instance_key("i1", "c1"),
            Who::Other => instance_key("i2", "c2"),
            Who::System => ActualLrpInstanceKey::default(),
        }
    }

    #[test]
    fn transition_table_is_exactly_the_allowed_set() {
        use State::*;
        use Who::*;
        // (from, who, to) triples that are allowed; everything else is refused.
        let allowed = [
            (Unclaimed, System, Unclaimed),
            (Unclaimed, Owner, Claimed),
            (Unclaimed, Other, Claimed),
            (Unclaimed, Owner, Running),
            (Unclaimed, Other, Running),
            (Claimed, System, Unclaimed),
            (Claimed, Owner, Claimed),
            (Claimed, Owner, Running),
            (Claimed, Owner, Crashed),
            (Running, System, Unclaimed),
            (Running, Owner, Claimed),
            (Running, Owner, Running),
            (Running, Owner, Crashed),
            (Crashed, System, Unclaimed),
        ];
        let mut checked = 0;
        for from in ALL {
            for who in [Owner, Other, System] {
                for to in ALL {
                    let got = allows_transition(&lrp_in(from), &key_of(who), to);
                    assert_eq!(
                        got,
                        allowed.contains(&(from, who, to)),
                        "{from:?} by {who:?} -> {to:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 48);
    }

    #[test]
    fn claim_sets_owner_and_refuses_a_second_claimer() {
        let mut l = lrp_in(State::Unclaimed);
        l.placement_error = "insufficient resources: memory".into();
        claim(&mut l, &instance_key("i1", "c1"), 7).unwrap();
        assert_eq!(l.state(), State::Claimed);
        assert_eq!(l.since, 7);
        assert!(l.placement_error.is_empty());
        assert_eq!(l.modification_tag.as_ref().unwrap().index, 1);
        let before = l.clone();
        let err = claim(&mut l, &instance_key("i2", "c2"), 8).unwrap_err();
        assert_eq!(
            err.name(),
            crate::errors::ErrorName::ActualLRPCannotBeClaimed
        );
        assert!(
            err.to_string().contains("held by instance i1 on cell c1"),
            "{err}"
        );
        assert_eq!(l, before, "a refused claim changes nothing");
        // the owner re-claiming is idempotent on state, not on `since`
        claim(&mut l, &instance_key("i1", "c1"), 9).unwrap();
        assert_eq!(l.since, 7);
    }

    #[test]
    fn start_records_net_info() {
        let mut l = lrp_in(State::Claimed);
        let net = ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ports: vec![],
            instance_address: String::new(),
        };
        start(&mut l, &instance_key("i1", "c1"), net.clone(), 11).unwrap();
        assert_eq!(l.state(), State::Running);
        assert_eq!(l.net_info, Some(net.clone()));
        assert!(start(&mut l, &instance_key("i2", "c2"), net, 12).is_err());
    }

    #[test]
    fn crash_restarts_immediately_then_backs_off() {
        let p = RestartPolicy::default();
        let mut l = lrp_in(State::Running);
        for n in 1..=3 {
            l.instance_key = Some(instance_key("i1", "c1"));
            l.set_state(State::Running);
            assert_eq!(
                crash(
                    &mut l,
                    &instance_key("i1", "c1"),
                    "exited with status 2",
                    100,
                    &p
                ),
                Ok(true),
                "crash {n}"
            );
            assert_eq!(l.state(), State::Unclaimed);
            assert_eq!(l.crash_count, n);
            assert!(l.instance_key.is_none() && l.net_info.is_none());
        }
        l.instance_key = Some(instance_key("i1", "c1"));
        l.set_state(State::Running);
        assert_eq!(
            crash(
                &mut l,
                &instance_key("i1", "c1"),
                "health check failed",
                200,
                &p
            ),
            Ok(false)
        );
        assert_eq!(l.state(), State::Crashed);
        assert_eq!(l.crash_count, 4);
        assert_eq!(l.crash_reason, "health check failed");
        assert!(!should_restart(&l, 200 + 29_000_000_000, &p));
        assert!(should_restart(&l, 200 + 30_000_000_000, &p));
        unclaim(&mut l, 300).unwrap();
        assert_eq!(l.state(), State::Unclaimed);
        assert_eq!(l.crash_count, 4, "the count survives the restart");
    }

    #[test]
    fn crash_after_five_healthy_minutes_resets_the_count() {
        let p = RestartPolicy::default();
        let mut l = lrp_in(State::Running);
        l.crash_count = 50;
        l.since = 0;
        assert_eq!(
            crash(&mut l, &instance_key("i1", "c1"), "x", 301_000_000_000, &p),
            Ok(true)
        );
        assert_eq!(l.crash_count, 1);
    }

    #[test]
    fn crash_by_another_cell_or_of_unclaimed_is_refused() {
        let p = RestartPolicy::default();
        assert!(crash(
            &mut lrp_in(State::Running),
            &instance_key("i2", "c2"),
            "x",
            1,
            &p
        )
        .is_err());
        assert!(crash(
            &mut lrp_in(State::Unclaimed),
            &instance_key("i1", "c1"),
            "x",
            1,
            &p
        )
        .is_err());
        assert!(crash(
            &mut lrp_in(State::Crashed),
            &instance_key("i1", "c1"),
            "x",
            1,
            &p
        )
        .is_err());
    }

    #[test]
    fn placement_errors_only_on_unclaimed() {
        for s in ALL {
            let mut l = lrp_in(s);
            assert_eq!(
                fail_placement(&mut l, "insufficient resources: memory", 1).is_ok(),
                s == State::Unclaimed
            );
        }
    }
}
