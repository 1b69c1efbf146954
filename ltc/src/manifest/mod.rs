//! `ltc apply -f FILE` and `ltc export APP…`: whole systems (apps, tasks, volumes,
//! backup schedules) declared in a YAML or TOML manifest. The file is read
//! ([`model`]), checked whole against the cluster ([`check`]), diffed into a plan
//! ([`plan`]) and carried out ([`run`]); nothing changes unless every check passes,
//! and applying the same file again changes nothing.

mod build;
mod check;
mod model;
mod plan;
mod run;
mod schedule;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use crate::api::Api;
use model::{Format, Manifest, VolumeSpec};
use plan::{Cluster, Prune};

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The manifest: NAME.yaml, NAME.yml or NAME.toml.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print what would change, field by field, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the apps, tasks and backup schedules that an earlier apply of this
    /// manifest made and the file no longer declares.
    #[arg(long)]
    pub prune: bool,
    /// Remove such volumes too, with their data.
    #[arg(long, requires = "prune")]
    pub prune_volumes: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The apps to write (with the volumes they mount and those volumes' schedules).
    #[arg(required = true)]
    pub apps: Vec<String>,
    /// Write to this file (its extension says YAML or TOML) instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// yaml or toml, for standard output.
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "toml"])]
    pub format: String,
}

/// Reads and parses the file; its name is the manifest's unless the file names one.
fn read(file: &std::path::Path) -> anyhow::Result<Manifest> {
    let format = Format::of(file)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut m =
        model::parse(&text, format).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if m.name.is_empty() {
        m.name = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default();
    }
    Ok(m)
}

async fn cluster(api: &Api, manifest: &str) -> anyhow::Result<Cluster> {
    Ok(Cluster {
        apps: by_name(api.desired_lrps().await?, |d| {
            d.request.process_guid.clone()
        }),
        tasks: by_name(api.tasks().await?, |t| t.request.task_guid.clone()),
        volumes: by_name(api.volumes().await?, |v| v.name.clone()),
        schedules: by_name(api.schedules().await?, |s| s.volume.clone()),
        ledger: run::load_ledger(api, manifest).await?,
    })
}

fn by_name<T>(items: Vec<T>, name: impl Fn(&T) -> String) -> BTreeMap<String, T> {
    items.into_iter().map(|i| (name(&i), i)).collect()
}

fn problems(file: &std::path::Path, errors: Vec<String>) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {} problem(s), nothing was changed:\n  - {}",
        file.display(),
        errors.len(),
        errors.join("\n  - ")
    )
}

/// `ltc apply`.
pub async fn apply(api: &Api, a: &ApplyArgs) -> anyhow::Result<()> {
    let m = read(&a.file)?;
    if !check::valid_name(&m.name) {
        return Err(problems(
            &a.file,
            vec![format!(
                "name {:?}: use lowercase letters, digits and dashes (name: in the file, or the file's name)",
                m.name
            )],
        ));
    }
    let cluster = cluster(api, &m.name).await?;
    let checked = check::check(&m, &cluster, &api.target).map_err(|e| problems(&a.file, e))?;
    let prune = Prune {
        apps: a.prune,
        volumes: a.prune_volumes,
    };
    let plan =
        plan::plan(&m, &checked, &cluster, &api.target, prune).map_err(|e| problems(&a.file, e))?;
    if a.dry_run {
        print!("{}", plan::render(&plan));
        if !plan.is_empty() {
            println!("Dry run: nothing was changed.");
        }
        return Ok(());
    }
    let mut fx = run::ApiEffects::new(api, &m.name);
    // With nothing to change, only the manifest's record may be brought up to date.
    run::run(&plan, &cluster.ledger, &mut fx).await?;
    if plan.is_empty() {
        print!("{}", plan::render(&plan));
        return Ok(());
    }
    for n in &plan.notes {
        println!("note: {n}");
    }
    println!(
        "Applied {}: the cluster holds what it says.",
        a.file.display()
    );
    Ok(())
}

/// `ltc export`: the manifest of what runs.
pub async fn export(api: &Api, a: &ExportArgs) -> anyhow::Result<()> {
    let mut m = Manifest::default();
    for name in &a.apps {
        let d = api.app(name).await?;
        let spec = build::app_spec(name, &d.request, &api.target);
        // What a manifest cannot say is kept as it is when the export is applied.
        let said = build::app_request(name, &spec, &api.target)
            .map(|r| plan::unsaid(r, &d.request))
            .with_context(|| format!("app {name}: its definition does not read back"))?;
        if !said.is_empty() {
            eprintln!(
                "ltc: app {name}: a manifest cannot say {}: the export leaves them out",
                said.join(", ")
            );
        }
        for v in &spec.volumes {
            let volume = v.split(':').next().unwrap_or_default().to_string();
            if let Some(vol) = api.volume(&volume).await? {
                m.volumes.insert(
                    volume.clone(),
                    VolumeSpec {
                        size: build::exact_size(vol.size_bytes),
                        cell: None,
                    },
                );
            }
        }
        m.apps.insert(name.clone(), spec);
    }
    for s in api.schedules().await? {
        if m.volumes.contains_key(&s.volume) {
            m.backup_schedules
                .insert(s.volume.clone(), schedule::spec_of(&s));
        }
    }
    let format = match &a.output {
        Some(path) => Format::of(path)?,
        None if a.format == "toml" => Format::Toml,
        None => Format::Yaml,
    };
    let text = model::write(&m, format)?;
    match &a.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "Wrote {} app(s) to {}: `ltc apply -f {}` makes them again.",
                m.apps.len(),
                path.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
