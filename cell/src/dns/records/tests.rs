use super::*;
use lattice_specs::events::{ActualLrpChangedEvent, ActualLrpRemovedEvent};
use lattice_specs::models::ActualLrpNetInfo;

const D: &str = "apps.internal";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn running(guid: &str, index: i32, addr: &str, tag: u32) -> ActualLrp {
    let mut a = lattice_specs::testing::actual_lrp(guid, index, State::Running, "c", 1);
    a.net_info = Some(ActualLrpNetInfo {
        address: "192.168.1.2".into(),
        instance_address: addr.into(),
        ..Default::default()
    });
    a.modification_tag = Some(ModificationTag {
        epoch: format!("{guid}-{index}"),
        index: tag,
    });
    a
}

#[test]
fn names_read_case_insensitively_with_or_without_the_trailing_dot() {
    assert_eq!(parse("web.apps.internal", D), Query::App("web".into()));
    assert_eq!(parse("WEB.Apps.Internal.", D), Query::App("web".into()));
    assert_eq!(
        parse("web.apps.internal", "Apps.Internal."),
        Query::App("web".into())
    );
    assert_eq!(
        parse("3.web.apps.internal.", D),
        Query::Instance("web".into(), 3)
    );
    assert_eq!(parse("apps.internal.", D), Query::Apex);
    assert_eq!(parse("example.com.", D), Query::Outside);
    assert_eq!(
        parse("xapps.internal.", D),
        Query::Outside,
        "a label boundary"
    );
    assert_eq!(parse("internal.", D), Query::Outside);
    for unknown in [
        "-1.web.apps.internal.",
        "x.web.apps.internal.",
        "+1.web.apps.internal.",
        "99999999999.web.apps.internal.",
        "a.b.web.apps.internal.",
        "we!b.apps.internal.",
        ".apps.internal.",
    ] {
        assert_eq!(parse(unknown, D), Query::Unknown, "{unknown}");
    }
}

#[test]
fn running_instances_answer_by_app_and_by_index() {
    let mut r = Records::new();
    r.reset(&[
        running("web", 1, "10.255.1.3", 1),
        running("web", 0, "10.255.0.2", 1),
        running("db", 0, "10.255.0.9", 1),
    ]);
    assert_eq!(
        r.answer("web.apps.internal.", D),
        Answer::Addresses(vec![ip("10.255.0.2"), ip("10.255.1.3")])
    );
    assert_eq!(
        r.answer("1.WEB.apps.internal", D),
        Answer::Addresses(vec![ip("10.255.1.3")])
    );
    assert_eq!(
        r.answer("2.web.apps.internal.", D),
        Answer::NxDomain,
        "index out of range"
    );
    assert_eq!(r.answer("nope.apps.internal.", D), Answer::NxDomain);
    assert_eq!(r.answer("apps.internal.", D), Answer::Addresses(vec![]));
    assert_eq!(r.answer("example.com.", D), Answer::Forward);
}

#[test]
fn only_running_instances_with_a_reachable_address_count() {
    let mut r = Records::new();
    let mut claimed = running("web", 0, "10.255.0.2", 1);
    claimed.set_state(State::Claimed);
    let host_networked = running("web", 1, "127.0.0.1", 1);
    let no_address = running("web", 2, "", 1);
    r.reset(&[claimed, host_networked, no_address]);
    assert!(r.is_empty());
    assert_eq!(r.answer("web.apps.internal.", D), Answer::NxDomain);
}

#[test]
fn events_add_and_remove_instances_at_once() {
    let mut r = Records::new();
    let up = running("web", 0, "10.255.0.2", 2);
    r.apply(&Kind::ActualLrpChanged(ActualLrpChangedEvent {
        before: None,
        after: Some(up.clone()),
    }));
    assert_eq!(r.addresses("web", None), [ip("10.255.0.2")]);

    // It crashes: gone at once.
    let mut crashed = running("web", 0, "10.255.0.2", 3);
    crashed.set_state(State::Crashed);
    r.apply(&Kind::ActualLrpChanged(ActualLrpChangedEvent {
        before: Some(up.clone()),
        after: Some(crashed),
    }));
    assert!(r.addresses("web", None).is_empty());

    // Running again, then removed.
    let again = running("web", 0, "10.255.0.7", 4);
    r.upsert(&again);
    assert_eq!(r.addresses("web", Some(0)), [ip("10.255.0.7")]);
    r.apply(&Kind::ActualLrpRemoved(ActualLrpRemovedEvent {
        actual_lrp: Some(again),
    }));
    assert!(r.is_empty());
}

#[test]
fn stale_updates_and_removals_of_other_incarnations_are_ignored() {
    let mut r = Records::new();
    r.upsert(&running("web", 0, "10.255.0.2", 5));
    let mut older = running("web", 0, "10.255.0.2", 4);
    older.set_state(State::Claimed);
    r.upsert(&older);
    assert_eq!(
        r.len(),
        1,
        "an older CLAIMED does not remove a newer RUNNING"
    );

    let mut other = running("web", 0, "10.255.0.2", 9);
    other.modification_tag.as_mut().unwrap().epoch = "another".into();
    r.remove(&other);
    assert_eq!(
        r.len(),
        1,
        "a removal of another incarnation leaves this one"
    );
}

#[test]
fn an_ordinary_instance_hides_its_evacuating_copy() {
    let mut r = Records::new();
    let mut evacuating = running("web", 0, "10.255.0.2", 1);
    evacuating.set_presence(Presence::Evacuating);
    r.upsert(&evacuating);
    assert_eq!(
        r.addresses("web", None),
        [ip("10.255.0.2")],
        "the only copy answers"
    );
    r.upsert(&running("web", 0, "10.255.1.2", 1));
    assert_eq!(r.addresses("web", None), [ip("10.255.1.2")]);
    assert_eq!(r.addresses("web", Some(0)), [ip("10.255.1.2")]);
    assert_eq!(r.len(), 2);
}

#[test]
fn a_replaced_copy_answers_until_it_drains() {
    let mut r = Records::new();
    let mut copy = running("web", 0, "10.255.0.2", 1);
    copy.set_presence(Presence::Replaced);
    r.upsert(&copy);
    assert_eq!(
        r.addresses("web", None),
        [ip("10.255.0.2")],
        "the old instance serves while its replacement starts"
    );
    r.upsert(&running("web", 0, "10.255.1.2", 1));
    assert_eq!(r.addresses("web", Some(0)), [ip("10.255.1.2")]);
    let mut drained = copy.clone();
    drained.draining = true;
    drained.modification_tag.as_mut().unwrap().index = 2;
    r.apply(&Kind::ActualLrpChanged(ActualLrpChangedEvent {
        before: Some(copy),
        after: Some(drained.clone()),
    }));
    assert_eq!(r.len(), 1, "the draining copy is dropped at once");
    r.reset(&[drained, running("web", 0, "10.255.1.2", 1)]);
    assert_eq!(r.len(), 1, "and not taken back by a snapshot");
}

#[test]
fn guids_are_matched_lowercased() {
    let mut r = Records::new();
    r.upsert(&running("MyApp", 0, "10.255.0.2", 1));
    assert_eq!(
        r.answer("myapp.apps.internal.", D),
        Answer::Addresses(vec![ip("10.255.0.2")])
    );
    assert_eq!(
        r.answer("MYAPP.apps.internal.", D),
        Answer::Addresses(vec![ip("10.255.0.2")])
    );
    assert_eq!(r.answer("myap.apps.internal.", D), Answer::NxDomain);
}
