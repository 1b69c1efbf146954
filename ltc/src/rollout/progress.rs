//! Where a rolling update stands, judged from the app and its instances (pure), and
//! the wait that shows it until the deployment ends, pauses or fails.

use std::time::Duration;

use lattice_specs::receptor::rollout::DeploymentJson;
use lattice_specs::receptor::{ActualLrpResponse, DesiredLrpResponse};

use crate::api::Api;
use crate::app::ProgressLine;

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// Every instance on this generation (an update, a promotion).
    Forward(i64),
    /// A rollback to this generation.
    Back(i64),
}

/// Where the deployment stands for an [`Aim`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Waiting(String),
    Done(String),
    /// A canary waits for `ltc promote` (ltc exits 0).
    Paused(String),
    Failed(String),
}

/// Instances that serve, by generation: ordinary RUNNING ones below `instances` that
/// are not draining, and replaced copies still serving.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ordinary running instances on the target generation.
    pub updated: usize,
    /// Old instances still serving (ordinary on another generation, or replaced copies).
    pub old: usize,
}

pub fn counts(actuals: &[ActualLrpResponse], instances: i32, target: i64) -> Counts {
    let serving =
        |a: &&ActualLrpResponse| a.state == "RUNNING" && !a.draining && a.index < instances;
    let ordinary = |a: &ActualLrpResponse| a.presence.is_empty() || a.presence == "ORDINARY";
    Counts {
        updated: actuals
            .iter()
            .filter(serving)
            .filter(|a| ordinary(a) && a.generation == target)
            .count(),
        old: actuals
            .iter()
            .filter(serving)
            .filter(|a| (ordinary(a) && a.generation != target) || a.presence == "REPLACED")
            .count(),
    }
}

/// Judges `d`'s deployment for `aim`.
pub fn judge(d: &DesiredLrpResponse, actuals: &[ActualLrpResponse], aim: Aim) -> Outcome {
    let app = &d.request.process_guid;
    let n = d.request.instances;
    let Some(dep) = &d.deployment else {
        return Outcome::Waiting(format!("{app}: waiting for the deployment to start"));
    };
    let t = dep.target_generation;
    let c = counts(actuals, n, t);
    let old = if c.old > 0 {
        format!(", {} old still serving", c.old)
    } else {
        String::new()
    };
    let moved = || {
        Outcome::Failed(format!(
            "{app}: the deployment is {} to generation {t} now, not what ltc waited for: `ltc history {app}` and `ltc status {app}` say more",
            dep.state
        ))
    };
    match (dep.state.as_str(), aim) {
        ("rolling_back", _) => Outcome::Waiting(format!(
            "{app}: rolling back to generation {t}{}: {}/{n} instances back{old}",
            because(dep),
            c.updated
        )),
        ("failed" | "rolled_back", Aim::Back(b)) if b == t => Outcome::Done(format!(
            "App {app} is back on generation {t}, {n} instance(s)."
        )),
        ("failed" | "rolled_back", Aim::Forward(g)) => Outcome::Failed(format!(
            "{app}: generation {g} was rolled back to generation {t}{}. `ltc history {app}` and `ltc logs {app}` say more",
            because(dep)
        )),
        ("rolling", Aim::Forward(g)) if g == t => Outcome::Waiting(format!(
            "{app}: generation {t}: {}/{n} instances updated{old}",
            c.updated
        )),
        ("paused", Aim::Forward(g)) if g == t => Outcome::Paused(format!(
            "{app}: {} canary instance(s) of generation {t} run beside {} of generation {}. `ltc promote {app}` rolls out the rest; `ltc rollback {app}` goes back.",
            c.updated, c.old, dep.previous_generation
        )),
        ("succeeded", Aim::Forward(g)) if g == t => {
            Outcome::Done(format!("App {app} runs generation {t}, {n} instance(s)."))
        }
        _ => moved(),
    }
}

fn because(dep: &DeploymentJson) -> String {
    if dep.reason.is_empty() {
        String::new()
    } else {
        format!(" because {}", dep.reason)
    }
}

/// `ltc status`'s line about the deployment, e.g. `rolling to generation 3 (from 2):
/// 1/4 updated, started 12s ago by admin`.
pub fn describe(d: &DesiredLrpResponse, actuals: &[ActualLrpResponse], now: i64) -> Option<String> {
    let dep = d.deployment.as_ref()?;
    let t = dep.target_generation;
    let c = counts(actuals, d.request.instances, t);
    let mut s = format!(
        "{} to generation {t} (from {}): {}/{} updated",
        dep.state.replace('_', " "),
        dep.previous_generation,
        c.updated,
        d.request.instances
    );
    if dep.strategy.canary > 0 {
        s.push_str(&format!(
            ", canary {}{}",
            dep.strategy.canary,
            if dep.promoted { " (promoted)" } else { "" }
        ));
    }
    if dep.started_at > 0 {
        s.push_str(&format!(
            ", started {} ago",
            crate::show::age(dep.started_at, now)
        ));
    }
    if !dep.requested_by.is_empty() {
        s.push_str(&format!(" by {}", dep.requested_by));
    }
    s.push_str(&because(dep));
    Some(s)
}

/// Waits, showing progress on stderr, until the deployment of `app` reaches `aim`
/// (Ok with the final words), pauses for a canary (Ok), fails (Err with the reason)
/// or `timeout` passes (Err: the deployment carries on).
pub async fn wait(api: &Api, app: &str, aim: Aim, timeout: Duration) -> anyhow::Result<String> {
    let mut shown = ProgressLine::new();
    let mut errors = 0;
    loop {
        // A passing hiccup of the API (a slow store) is not the app's failure.
        let seen =
            async { anyhow::Ok((api.desired_lrp(app).await?, api.actual_lrps_of(app).await?)) };
        let (d, actuals) = match seen.await {
            Ok(s) => {
                errors = 0;
                s
            }
            Err(e) if errors < 5 => {
                errors += 1;
                crate::app::say_retrying(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = match judge(&d, &actuals, aim) {
            Outcome::Waiting(line) => line,
            end => {
                shown.end();
                return match end {
                    Outcome::Done(s) | Outcome::Paused(s) => Ok(s),
                    Outcome::Failed(why) => Err(anyhow::anyhow!(why)),
                    Outcome::Waiting(_) => unreachable!("matched above"),
                };
            }
        };
        shown.show(line);
        if shown.timed_out(timeout) {
            anyhow::bail!(
                "timed out after {}s with {}. The deployment carries on: `ltc status {app}` shows it, `ltc rollback {app}` stops it",
                timeout.as_secs(),
                shown.last
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::receptor::DesiredLrpCreateRequest;

    fn app(state: &str, target: i64, reason: &str) -> DesiredLrpResponse {
        DesiredLrpResponse {
            request: DesiredLrpCreateRequest {
                process_guid: "web".into(),
                instances: 3,
                ..Default::default()
            },
            generation: target,
            deployment: Some(DeploymentJson {
                state: state.into(),
                target_generation: target,
                previous_generation: 1,
                reason: reason.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn inst(index: i32, generation: i64, state: &str, presence: &str) -> ActualLrpResponse {
        ActualLrpResponse {
            index,
            generation,
            state: state.into(),
            presence: presence.into(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_take_serving_instances_by_generation() {
        let mut draining = inst(1, 1, "RUNNING", "REPLACED");
        draining.draining = true;
        let actuals = [
            inst(0, 2, "RUNNING", "ORDINARY"),
            inst(0, 1, "RUNNING", "REPLACED"),
            inst(1, 2, "RUNNING", "ORDINARY"),
            draining,
            inst(2, 0, "UNCLAIMED", "ORDINARY"),
            inst(2, 1, "RUNNING", "REPLACED"),
            inst(3, 2, "RUNNING", "ORDINARY"),
        ];
        assert_eq!(counts(&actuals, 3, 2), Counts { updated: 2, old: 2 });
    }

    #[test]
    fn an_update_waits_while_rolling_and_ends_with_the_deployment() {
        let actuals = [inst(0, 2, "RUNNING", ""), inst(1, 1, "RUNNING", "")];
        assert_eq!(
            judge(&app("rolling", 2, ""), &actuals, Aim::Forward(2)),
            Outcome::Waiting(
                "web: generation 2: 1/3 instances updated, 1 old still serving".into()
            )
        );
        assert_eq!(
            judge(&app("succeeded", 2, ""), &actuals, Aim::Forward(2)),
            Outcome::Done("App web runs generation 2, 3 instance(s).".into())
        );
        let Outcome::Paused(p) = judge(&app("paused", 2, ""), &actuals, Aim::Forward(2)) else {
            panic!()
        };
        assert!(
            p.contains("1 canary instance(s) of generation 2") && p.contains("`ltc promote web`"),
            "{p}"
        );
        let mut none = app("rolling", 2, "");
        none.deployment = None;
        assert!(matches!(
            judge(&none, &[], Aim::Forward(2)),
            Outcome::Waiting(_)
        ));
    }

    #[test]
    fn a_failed_generation_waits_for_its_rollback_then_fails_with_the_reason() {
        let why = "instance 2 crashed: exited with status 1";
        let Outcome::Waiting(w) = judge(&app("rolling_back", 1, why), &[], Aim::Forward(2)) else {
            panic!()
        };
        assert!(
            w.contains("rolling back to generation 1 because instance 2 crashed"),
            "{w}"
        );
        let Outcome::Failed(f) = judge(&app("failed", 1, why), &[], Aim::Forward(2)) else {
            panic!()
        };
        assert!(f.contains("generation 2 was rolled back to generation 1 because instance 2 crashed: exited with status 1"), "{f}");
        // The same end is what a rollback waits for.
        assert!(matches!(
            judge(&app("failed", 1, why), &[], Aim::Back(1)),
            Outcome::Done(_)
        ));
        assert!(matches!(
            judge(&app("rolled_back", 1, ""), &[], Aim::Back(1)),
            Outcome::Done(_)
        ));
        // Someone else's deployment is not this wait's success.
        assert!(matches!(
            judge(&app("succeeded", 3, ""), &[], Aim::Forward(2)),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            judge(&app("rolled_back", 2, ""), &[], Aim::Back(1)),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn status_describes_the_deployment() {
        let s = 1_000_000_000;
        let mut d = app("paused", 2, "");
        let dep = d.deployment.as_mut().unwrap();
        dep.strategy.canary = 1;
        dep.started_at = 10 * s;
        dep.requested_by = "admin".into();
        let line = describe(&d, &[inst(0, 2, "RUNNING", "")], 40 * s).unwrap();
        assert_eq!(
            line,
            "paused to generation 2 (from 1): 1/3 updated, canary 1, started 30s ago by admin"
        );
        d.deployment = None;
        assert_eq!(describe(&d, &[], 0), None);
    }
}
