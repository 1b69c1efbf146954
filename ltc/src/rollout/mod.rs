//! Rolling updates: `ltc update` (a new definition rolled out instance by instance,
//! or applied in place), `ltc history`, `ltc rollback`, `ltc promote`; the wait with
//! progress they share ([`progress`]), the definition change ([`change`]) and what
//! changed between definitions ([`diff`]).

pub mod change;
pub mod diff;
pub mod progress;

use std::collections::BTreeSet;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::rollout::{GenerationRequest, GenerationResponse, StrategyJson};

use crate::api::{error_name, Api};
use crate::app::{baseline, wait_running, CreateArgs};
use crate::show;
use progress::Aim;

/// `ltc update`'s own flags, besides `ltc create`'s definition flags.
#[derive(clap::Args, Debug, Default)]
pub struct RolloutFlags {
    /// NAME: remove one environment variable (repeatable; -e sets or overrides one).
    #[arg(long = "unset-env")]
    pub unset_env: Vec<String>,
    /// Run without privileges again.
    #[arg(long = "no-privileged", conflicts_with = "privileged")]
    pub no_privileged: bool,
    /// Take every TCP route away (--tcp-route gives the whole new list).
    #[arg(long = "no-tcp-routes", conflicts_with = "tcp_routes")]
    pub no_tcp_routes: bool,
    /// How many new instances may start beside the old ones at a time.
    #[arg(long = "max-surge", default_value_t = 1)]
    pub max_surge: i32,
    /// How many instances may be missing at a time (stopped before their successor runs).
    #[arg(long = "max-unavailable", default_value_t = 0)]
    pub max_unavailable: i32,
    /// Replace only N instances, then pause until `ltc promote APP` or `ltc rollback APP`.
    #[arg(long, default_value_t = 0)]
    pub canary: i32,
}

/// `ltc update APP [IMAGE] [create's flags] [rollout flags] [-- CMD]`: `ltc create`'s
/// flags, of which only those named change the app.
#[derive(Debug)]
pub struct UpdateArgs {
    /// Create's flags as given (their defaults where not named).
    pub def: CreateArgs,
    /// The clap ids of the flags named on the command line.
    pub named: BTreeSet<String>,
    pub roll: RolloutFlags,
}

impl FromArgMatches for UpdateArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        // Arguments only (the derived structs' groups are ids too).
        let named = Self::augment_args(Command::new("update"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| m.value_source(id) == Some(ValueSource::CommandLine))
            .collect();
        Ok(UpdateArgs {
            def: CreateArgs::from_arg_matches(m)?,
            named,
            roll: RolloutFlags::from_arg_matches(m)?,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for UpdateArgs {
    fn augment_args(cmd: Command) -> Command {
        // Create's defaults are not update's: a flag not named keeps the app's value.
        let create = CreateArgs::augment_args(cmd).mut_args(|a| {
            if a.get_action().takes_values() {
                a.hide_default_value(true)
            } else {
                a
            }
        });
        RolloutFlags::augment_args(create)
            // mut_arg moves an argument last: the positionals keep their places.
            .mut_arg("image", |a| {
                a.index(2)
                    .required(false)
                    .default_value("")
                    .hide_default_value(true)
                    .help("The new image (default: the app's)")
            })
            .mut_arg("command", |a| a.index(3))
            .mut_arg("timeout", |a| {
                a.help("How long to wait for the rollout, e.g. 90s, 5m (the app's start timeout stays)")
                    .default_value("5m")
                    .hide_default_value(false)
            })
            .after_help(
                "Only the flags named change the app. A repeatable flag (--http-route, --placement-tag, --volume) gives the whole new list; -e NAME=VALUE sets one variable, --unset-env NAME removes one. Instances and routes change in place; anything else makes a new generation that replaces the instances a few at a time.",
            )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl UpdateArgs {
    /// The rollout strategy the flags ask for, checked against the new instance count.
    pub fn strategy(&self, instances: i32) -> anyhow::Result<StrategyJson> {
        let r = &self.roll;
        anyhow::ensure!(
            r.max_surge >= 0 && r.max_unavailable >= 0 && r.canary >= 0,
            "--max-surge, --max-unavailable and --canary are 0 or more"
        );
        anyhow::ensure!(
            r.max_surge + r.max_unavailable > 0,
            "--max-surge 0 and --max-unavailable 0 would replace nothing: allow one of them"
        );
        anyhow::ensure!(
            r.canary == 0 || r.canary < instances,
            "--canary {}: of {instances} instance(s), fewer must be canaries (the rest wait for `ltc promote`)",
            r.canary
        );
        Ok(StrategyJson {
            max_surge: r.max_surge,
            max_unavailable: r.max_unavailable,
            canary: r.canary,
        })
    }
}

/// `ltc update`: the changed definition posted as a new generation, then the wait.
pub async fn update(api: &Api, u: &UpdateArgs) -> anyhow::Result<()> {
    let app = &u.def.app;
    let d = api.app(app).await?;
    let new = change::changed_definition(&d.request, u, api.target.route_domain())?;
    let strategy = u.strategy(new.instances)?;
    let (changes, in_place) = (
        diff::definition_changes(&d.request, &new),
        diff::in_place_changes(&d.request, &new),
    );
    if changes.is_empty() && in_place.is_empty() {
        println!(
            "Nothing to change: {app} already has that definition (generation {}).",
            d.generation
        );
        return Ok(());
    }
    // Crashes from before this update are not its failure.
    let base = baseline(&api.actual_lrps_of(app).await?);
    let req = GenerationRequest {
        definition: new,
        strategy,
    };
    let got = match api.create_generation(app, &req).await {
        Err(e) if error_name(&e) == Some(ErrorName::DeploymentInProgress) => {
            anyhow::bail!("{app}: {e:#}. `ltc status {app}` shows how it goes")
        }
        r => r?,
    };
    if got.generation == d.generation {
        if got.request == d.request {
            println!(
                "Nothing to change: {app} already has that definition (generation {}).",
                d.generation
            );
            return Ok(());
        }
        eprintln!("Updating {app} in place: {}", in_place.join("; "));
        if got.request.instances != d.request.instances {
            let n = got.request.instances as usize;
            wait_running(api, app, n, u.def.timeout, &base).await?;
        }
        println!(
            "Updated {app} (generation {}, {} instance(s)).",
            got.generation, got.request.instances
        );
    } else {
        let all: Vec<String> = changes.into_iter().chain(in_place).collect();
        eprintln!(
            "Rolling out generation {} of {app}: {}",
            got.generation,
            all.join("; ")
        );
        let end = progress::wait(api, app, Aim::Forward(got.generation), u.def.timeout).await?;
        println!("{end}");
    }
    crate::app::print_urls(&api.target, &api.desired_lrp(app).await?);
    Ok(())
}

/// `ltc rollback APP [GENERATION]`: back to a kept generation (default: the last
/// that ran healthy), then the wait.
pub async fn rollback(
    api: &Api,
    app: &str,
    generation: Option<i64>,
    timeout: Duration,
) -> anyhow::Result<()> {
    api.app(app).await?;
    let got = match api.rollback(app, generation.unwrap_or(0)).await {
        Err(e) if error_name(&e) == Some(ErrorName::GenerationNotFound) => anyhow::bail!(
            "{app} keeps no generation {}: `ltc history {app}` lists the kept ones",
            generation.unwrap_or(0)
        ),
        r => r?,
    };
    let to = got
        .deployment
        .as_ref()
        .map(|dep| dep.target_generation)
        .unwrap_or(got.generation);
    eprintln!("Rolling {app} back to generation {to}");
    println!(
        "{}",
        progress::wait(api, app, Aim::Back(to), timeout).await?
    );
    Ok(())
}

/// `ltc promote APP`: a paused canary rolls out to every instance, then the wait.
pub async fn promote(api: &Api, app: &str, timeout: Duration) -> anyhow::Result<()> {
    api.app(app).await?;
    let got = match api.promote(app).await {
        Err(e) if error_name(&e) == Some(ErrorName::DeploymentNotPaused) => anyhow::bail!(
            "{app} has no canary waiting for promotion: `ltc status {app}` shows its deployment"
        ),
        r => r?,
    };
    eprintln!(
        "Promoting generation {} of {app} to every instance",
        got.generation
    );
    println!(
        "{}",
        progress::wait(api, app, Aim::Forward(got.generation), timeout).await?
    );
    Ok(())
}

/// `ltc history APP`: the kept generations, oldest first, and what each changed.
pub async fn history(api: &Api, app: &str, json: bool, now: i64) -> anyhow::Result<()> {
    api.app(app).await?;
    let gens = api.generations(app).await?;
    if json {
        return show::json(&gens);
    }
    print!("{}", history_table(&gens, now));
    Ok(())
}

/// The history as a table: each generation against the one before it.
pub fn history_table(gens: &[GenerationResponse], now: i64) -> String {
    let rows: Vec<Vec<String>> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let changes = match i.checked_sub(1).map(|p| &gens[p]) {
                Some(prev) => diff::definition_changes(&prev.definition, &g.definition).join("; "),
                None if g.generation == 1 => "created".into(),
                None => "-".into(),
            };
            let status = if g.reason.is_empty() {
                g.status.clone()
            } else {
                format!("{}: {}", g.status, g.reason)
            };
            vec![
                g.generation.to_string(),
                format!("{} ago", show::age(g.created_at, now)),
                if g.created_by.is_empty() {
                    "-".into()
                } else {
                    g.created_by.clone()
                },
                status,
                changes,
            ]
        })
        .collect();
    show::table(&["GENERATION", "CREATED", "BY", "STATUS", "CHANGES"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use lattice_specs::receptor::DesiredLrpCreateRequest;

    #[derive(Parser)]
    struct U {
        #[command(flatten)]
        u: UpdateArgs,
    }

    fn parse(v: &[&str]) -> Result<UpdateArgs, clap::Error> {
        U::try_parse_from(std::iter::once("ltc").chain(v.iter().copied())).map(|u| u.u)
    }

    #[test]
    fn only_flags_given_count_as_named() {
        let u = parse(&[
            "web",
            "preloaded:alpine",
            "-m",
            "64",
            "--canary",
            "1",
            "--",
            "true",
        ])
        .unwrap();
        let named: Vec<&str> = u.named.iter().map(String::as_str).collect();
        assert_eq!(named, ["app", "canary", "command", "image", "memory_mb"]);
        assert_eq!(u.def.timeout, Duration::from_secs(300));
        let bare = parse(&["web"]).unwrap();
        assert_eq!(bare.named, BTreeSet::from(["app".to_string()]));
        assert_eq!(bare.def.image, "");
        assert!(parse(&["web", "--privileged", "--no-privileged"]).is_err());
    }

    #[test]
    fn strategies_are_checked() {
        let s = parse(&["web", "--max-surge", "2", "--canary", "1"])
            .unwrap()
            .strategy(4)
            .unwrap();
        assert_eq!((s.max_surge, s.max_unavailable, s.canary), (2, 0, 1));
        assert_eq!(
            parse(&["web"]).unwrap().strategy(1).unwrap(),
            StrategyJson::default()
        );
        for (args, want) in [
            (&["web", "--max-surge", "0"][..], "would replace nothing"),
            (&["web", "--canary", "3"], "fewer must be canaries"),
            (&["web", "--max-unavailable=-1"], "0 or more"),
        ] {
            let e = parse(args).unwrap().strategy(3).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn history_shows_each_generation_against_the_one_before() {
        let s = 1_000_000_000;
        let g = |n: i64, image: &str, status: &str, reason: &str| GenerationResponse {
            generation: n,
            created_at: n * 60 * s,
            created_by: "dev".into(),
            status: status.into(),
            reason: reason.into(),
            definition: DesiredLrpCreateRequest {
                rootfs: image.into(),
                ..Default::default()
            },
        };
        let t = history_table(
            &[
                g(1, "preloaded:a", "superseded", ""),
                g(2, "preloaded:b", "failed", "instance 0 crashed"),
                g(3, "preloaded:b", "current", ""),
            ],
            200 * s,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("GENERATION  CREATED"), "{t}");
        assert!(
            lines[1].starts_with("1           2m20s ago  dev") && lines[1].ends_with("created"),
            "{t}"
        );
        assert!(
            lines[2].contains("failed: instance 0 crashed")
                && lines[2].ends_with("image preloaded:a → preloaded:b"),
            "{t}"
        );
        assert!(lines[3].contains("current"), "{t}");
    }
}
