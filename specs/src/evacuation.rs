//! The copies an instance leaves behind when its cell goes away, as pure decisions.
//!
//! - SUSPECT: the instance's cell vanished but the instance may still run (a
//!   partition). A RUNNING record is kept as a SUSPECT copy and its ordinary
//!   record starts over UNCLAIMED, so a replacement is placed ([`suspect`]).
//! - EVACUATING: the instance's cell is draining. A RUNNING instance keeps
//!   serving from an EVACUATING copy while its ordinary record is re-placed,
//!   and stops once the replacement runs ([`evacuate_running`],
//!   [`record_evacuating`]); a CLAIMED one just gives its claim back
//!   ([`give_up_claim`]).
//!
//! The BBS reads the records, asks these functions, and writes what they say
//! with compare-and-swap; nothing here does I/O.

use crate::actual_lrp::{self as alrp, presence_name};
use crate::models::actual_lrp::{Presence, State};
use crate::models::{ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo};
use crate::ModelError;

/// Does record `l` belong to instance `ik`?
pub fn owned_by(l: &ActualLrp, ik: &ActualLrpInstanceKey) -> bool {
    l.instance_key.as_ref() == Some(ik)
}

/// What a RUNNING instance whose cell vanished becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspected {
    /// The record as it was, kept under the SUSPECT key until its replacement runs.
    pub suspect: ActualLrp,
    /// The ordinary record, UNCLAIMED again so that a replacement is placed.
    pub replacement: ActualLrp,
}

/// The instance's cell vanished: only a RUNNING instance may become suspect.
pub fn suspect(current: &ActualLrp, now: i64) -> Result<Suspected, ModelError> {
    if current.state() != State::Running {
        return Err(alrp::refuse(
            current,
            "suspect",
            " (only a RUNNING instance can become suspect)".into(),
        ));
    }
    let mut suspect = current.clone();
    suspect.set_presence(Presence::Suspect);
    let mut replacement = current.clone();
    alrp::unclaim(&mut replacement, now)?;
    Ok(Suspected {
        suspect,
        replacement,
    })
}

/// An evacuating cell gives back an instance it only claimed: the record goes
/// back to UNCLAIMED if it still is that cell's claim; otherwise nothing changes.
pub fn give_up_claim(
    l: &mut ActualLrp,
    ik: &ActualLrpInstanceKey,
    now: i64,
) -> Result<(), ModelError> {
    if owned_by(l, ik) && l.state() == State::Claimed {
        alrp::unclaim(l, now)?;
    }
    Ok(())
}

/// How an evacuating cell keeps serving an instance it runs while a
/// replacement is placed.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepServing {
    /// The EVACUATING record the instance serves from.
    pub copy: ActualLrp,
    /// The ordinary record is still this instance's: it goes back to
    /// UNCLAIMED ([`hand_back`]) so a replacement is placed.
    pub unclaim_ordinary: bool,
}

/// A RUNNING instance `ik` (at `net`) on an evacuating cell, given its ordinary
/// record (None: the record is gone). None: stop it, its replacement runs
/// already or it is no longer desired.
pub fn evacuate_running(
    ordinary: Option<&ActualLrp>,
    ik: &ActualLrpInstanceKey,
    net: ActualLrpNetInfo,
    now: i64,
) -> Option<KeepServing> {
    let o = ordinary?;
    if o.state() == State::Running && !owned_by(o, ik) {
        return None;
    }
    let mut copy = o.clone();
    copy.instance_key = Some(ik.clone());
    copy.net_info = Some(net);
    copy.set_state(State::Running);
    copy.set_presence(Presence::Evacuating);
    copy.since = now;
    Some(KeepServing {
        copy,
        unclaim_ordinary: owned_by(o, ik),
    })
}

/// Whether to write `copy` over the EVACUATING record `current`: yes when there
/// is none or it is this instance's with other net info; no when it is already
/// the same; refused when another instance is evacuating.
pub fn record_evacuating(
    current: Option<&ActualLrp>,
    copy: &ActualLrp,
    ik: &ActualLrpInstanceKey,
) -> Result<bool, ModelError> {
    match current {
        Some(l) if !owned_by(l, ik) => {
            let key = copy.key.clone().unwrap_or_default();
            Err(ModelError::ActualLrpTransition {
                op: "evacuate",
                process_guid: key.process_guid,
                index: key.index,
                from: presence_name(Presence::Evacuating),
                detail: " (another instance is evacuating)".into(),
            })
        }
        Some(l) if l.net_info == copy.net_info => Ok(false),
        _ => Ok(true),
    }
}

/// The ordinary record of an instance that now serves from its EVACUATING
/// copy: UNCLAIMED again while it still is that instance's.
pub fn hand_back(l: &mut ActualLrp, ik: &ActualLrpInstanceKey, now: i64) -> Result<(), ModelError> {
    if owned_by(l, ik) {
        alrp::unclaim(l, now)?;
    }
    Ok(())
}

/// Is the EVACUATING record `current` instance `ik`'s, to be removed when it stops?
pub fn removes_evacuating(current: Option<&ActualLrp>, ik: &ActualLrpInstanceKey) -> bool {
    current.is_some_and(|l| owned_by(l, ik))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorName;
    use crate::testing::instance_key;

    const ALL: [State; 4] = [
        State::Unclaimed,
        State::Claimed,
        State::Running,
        State::Crashed,
    ];

    fn net(address: &str) -> ActualLrpNetInfo {
        ActualLrpNetInfo {
            address: address.into(),
            ports: vec![],
            instance_address: String::new(),
        }
    }

    /// A record in `state`, held (when CLAIMED or RUNNING) by i1 on c1.
    fn lrp_in(state: State) -> ActualLrp {
        let mut l = alrp::new_unclaimed("web", 3, "d", 1);
        if matches!(state, State::Claimed | State::Running) {
            l.instance_key = Some(instance_key("i1", "c1"));
            l.net_info = Some(net("10.0.0.1"));
        }
        l.set_state(state);
        l
    }

    /// The evacuating instance: the record's owner, or another one.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        Owner,
        Other,
    }

    fn key_of(w: Who) -> ActualLrpInstanceKey {
        match w {
            Who::Owner => instance_key("i1", "c1"),
            Who::Other => instance_key("i2", "c2"),
        }
    }

    #[test]
    fn only_a_running_instance_becomes_suspect() {
        for from in ALL {
            let current = lrp_in(from);
            match suspect(&current, 50) {
                Ok(s) => {
                    assert_eq!(from, State::Running);
                    let mut kept = current.clone();
                    kept.set_presence(Presence::Suspect);
                    assert_eq!(s.suspect, kept, "the suspect copy is the record as it was");
                    assert_eq!(s.replacement.state(), State::Unclaimed);
                    assert_eq!(s.replacement.presence(), Presence::Ordinary);
                    assert!(s.replacement.instance_key.is_none());
                    assert!(s.replacement.net_info.is_none());
                    assert_eq!(s.replacement.since, 50);
                }
                Err(e) => {
                    assert_ne!(from, State::Running);
                    assert_eq!(e.name(), ErrorName::InvalidStateTransition);
                    let msg = e.to_string();
                    assert!(msg.contains("suspect actual LRP web/3"), "{msg}");
                    assert!(msg.contains("only a RUNNING instance"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn give_up_claim_unclaims_only_the_cells_own_claim() {
        // (state, who) pairs whose record goes back to UNCLAIMED; every other is unchanged.
        let unclaimed = [(State::Claimed, Who::Owner)];
        for from in ALL {
            for who in [Who::Owner, Who::Other] {
                let before = lrp_in(from);
                let mut l = before.clone();
                give_up_claim(&mut l, &key_of(who), 9).unwrap();
                if unclaimed.contains(&(from, who)) {
                    assert_eq!(l.state(), State::Unclaimed, "{from:?} by {who:?}");
                    assert!(l.instance_key.is_none());
                } else {
                    assert_eq!(l, before, "{from:?} by {who:?}");
                }
            }
        }
    }

    #[test]
    fn hand_back_unclaims_whatever_the_instance_still_holds() {
        let unclaimed = [(State::Claimed, Who::Owner), (State::Running, Who::Owner)];
        for from in ALL {
            for who in [Who::Owner, Who::Other] {
                let before = lrp_in(from);
                let mut l = before.clone();
                hand_back(&mut l, &key_of(who), 9).unwrap();
                if unclaimed.contains(&(from, who)) {
                    assert_eq!(l.state(), State::Unclaimed, "{from:?} by {who:?}");
                    assert!(l.instance_key.is_none() && l.net_info.is_none());
                } else {
                    assert_eq!(l, before, "{from:?} by {who:?}");
                }
            }
        }
    }

    #[test]
    fn evacuate_running_table() {
        // (ordinary record, who evacuates) -> None: stop; Some(unclaim_ordinary): keep.
        let table: [(Option<State>, Who, Option<bool>); 9] = [
            (None, Who::Owner, None),
            (Some(State::Running), Who::Other, None),
            (Some(State::Running), Who::Owner, Some(true)),
            (Some(State::Claimed), Who::Owner, Some(true)),
            (Some(State::Claimed), Who::Other, Some(false)),
            (Some(State::Unclaimed), Who::Owner, Some(false)),
            (Some(State::Unclaimed), Who::Other, Some(false)),
            (Some(State::Crashed), Who::Owner, Some(false)),
            (Some(State::Crashed), Who::Other, Some(false)),
        ];
        for (ordinary, who, want) in table {
            let o = ordinary.map(lrp_in);
            let plan = evacuate_running(o.as_ref(), &key_of(who), net("10.9.9.9"), 70);
            match (plan, want) {
                (None, None) => {}
                (
                    Some(KeepServing {
                        copy,
                        unclaim_ordinary,
                    }),
                    Some(unclaim),
                ) => {
                    assert_eq!(unclaim_ordinary, unclaim, "{ordinary:?} by {who:?}");
                    assert_eq!(copy.key, o.unwrap().key);
                    assert_eq!(copy.instance_key, Some(key_of(who)));
                    assert_eq!(copy.net_info, Some(net("10.9.9.9")));
                    assert_eq!(copy.state(), State::Running);
                    assert_eq!(copy.presence(), Presence::Evacuating);
                    assert_eq!(copy.since, 70);
                }
                (plan, want) => panic!("{ordinary:?} by {who:?}: {plan:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn record_evacuating_table() {
        let owner = key_of(Who::Owner);
        let copy = evacuate_running(Some(&lrp_in(State::Running)), &owner, net("10.0.0.1"), 5)
            .expect("the owner of a RUNNING record keeps serving")
            .copy;
        let mut moved = copy.clone();
        moved.net_info = Some(net("10.0.0.2"));
        let mut others = copy.clone();
        others.instance_key = Some(key_of(Who::Other));
        // (EVACUATING record now) -> Some(write?) or None: refused.
        let table = [
            (None, Some(true)),
            (Some(copy.clone()), Some(false)),
            (Some(moved), Some(true)),
            (Some(others), None),
        ];
        for (current, want) in table {
            match (record_evacuating(current.as_ref(), &copy, &owner), want) {
                (Ok(write), Some(w)) => assert_eq!(write, w, "{current:?}"),
                (Err(e), None) => {
                    assert_eq!(e.name(), ErrorName::InvalidStateTransition);
                    assert!(e.to_string().contains("another instance is evacuating"));
                    assert!(e.to_string().contains("in state EVACUATING"));
                }
                (got, want) => panic!("{current:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn only_the_owners_evacuating_copy_is_removed() {
        let copy = lrp_in(State::Running);
        assert!(!removes_evacuating(None, &key_of(Who::Owner)));
        assert!(removes_evacuating(Some(&copy), &key_of(Who::Owner)));
        assert!(!removes_evacuating(Some(&copy), &key_of(Who::Other)));
    }
}
