//! The rep runs only what the BBS stores. A `Perform` names work and carries its
//! definition, but anyone who can reach the rep's port can send one: the definition it
//! carries is checked against the BBS's before anything is claimed or started, and the
//! BBS's copy is what runs.
//!
//! Pure: [`task_matches`] and [`lrp_matches`] decide; the rep fetches the stored copy.

use lattice_specs::models;

/// Why a Perform's work was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("the BBS has no such work")]
    Unknown,
    #[error("its definition differs from the one the BBS stores")]
    Differs,
}

/// Whether a Task sent in a Perform is the one the BBS stores (a Task's definition
/// never changes once desired).
pub fn task_matches(sent: &models::Task, stored: Option<&models::Task>) -> Result<(), Mismatch> {
    let stored = stored.ok_or(Mismatch::Unknown)?;
    if sent.task_guid != stored.task_guid || sent.definition != stored.definition {
        return Err(Mismatch::Differs);
    }
    Ok(())
}

/// Whether an LRP sent in a Perform is the one the BBS stores, but for the fields
/// that change in place (instances, routes, annotation and so the modification tag)
/// and the rolling update's progress (`deployment`; the generation is compared).
pub fn lrp_matches(
    sent: &models::DesiredLrp,
    stored: Option<&models::DesiredLrp>,
) -> Result<(), Mismatch> {
    let stored = stored.ok_or(Mismatch::Unknown)?;
    if immutable(sent) != immutable(stored) {
        return Err(Mismatch::Differs);
    }
    Ok(())
}

fn immutable(d: &models::DesiredLrp) -> models::DesiredLrp {
    models::DesiredLrp {
        instances: 0,
        routes: Default::default(),
        annotation: String::new(),
        modification_tag: None,
        deployment: None,
        ..d.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrp() -> models::DesiredLrp {
        models::DesiredLrp {
            process_guid: "web".into(),
            rootfs: "preloaded:busybox".into(),
            instances: 2,
            memory_mb: 64,
            ..Default::default()
        }
    }

    #[test]
    fn lrps_match_but_for_what_changes_in_place() {
        let stored = lrp();
        let mut sent = lrp();
        sent.instances = 5;
        sent.annotation = "newer".into();
        sent.routes.insert("cf-router".into(), "[]".into());
        // A rolling update's progress moves on while a Perform is on its way.
        sent.deployment = Some(models::Deployment {
            updated_instances: 1,
            ..Default::default()
        });
        assert_eq!(lrp_matches(&sent, Some(&stored)), Ok(()));
        sent.privileged = true;
        assert_eq!(lrp_matches(&sent, Some(&stored)), Err(Mismatch::Differs));
        assert_eq!(lrp_matches(&lrp(), None), Err(Mismatch::Unknown));
    }

    #[test]
    fn tasks_match_only_when_their_definitions_are_equal() {
        let stored = models::Task {
            task_guid: "t".into(),
            definition: Some(models::TaskDefinition {
                rootfs: "preloaded:busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut sent = stored.clone();
        sent.state = 2;
        assert_eq!(task_matches(&sent, Some(&stored)), Ok(()));
        sent.definition.as_mut().unwrap().privileged = true;
        assert_eq!(task_matches(&sent, Some(&stored)), Err(Mismatch::Differs));
        assert_eq!(task_matches(&sent, None), Err(Mismatch::Unknown));
    }
}
