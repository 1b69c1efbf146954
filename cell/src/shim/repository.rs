//! The RepositoryAction's real step: the job for the repository helper (its root is the
//! volume, or root filesystem, the action's `path` lies on), the repository's password
//! fetched with the task's own credential, the helper run in the container's cgroup
//! with its stderr in the task's log, and its outcome written into the container.

use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::{anyhow, bail, Context as _};
use lattice_specs::models;
use lattice_specs::repo::{RepoJob, RepoOp, RepoOutcome};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use super::actions::Steps as _;
use super::context::Ctx;
use super::ShimConfig;

/// Where the password of a `rest:` repository is: its URL's `password` (the BBS's
/// `lattice_specs::repo::password_path`), without the credential, and the credential.
pub(super) fn password_request(repository: &str) -> anyhow::Result<(reqwest::Url, String, String)> {
    let url = repository
        .strip_prefix("rest:")
        .ok_or_else(|| anyhow!("repository: not a `rest:` URL"))?;
    let mut url = reqwest::Url::parse(url).context("repository: not a URL after `rest:`")?;
    let user = url.username().to_string();
    let pass = url.password().unwrap_or_default().to_string();
    if user.is_empty() || pass.is_empty() {
        bail!("repository: the URL carries no credential (rest:https://USER:PASS@HOST/…)");
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    let url = url.join("password")?;
    Ok((url, user, pass))
}

/// The helper's job for action `r` of the container `cfg` describes (without its
/// password and addresses, which the caller adds).
pub(super) fn job_for(cfg: &ShimConfig, r: &models::RepositoryAction) -> anyhow::Result<RepoJob> {
    let op = RepoOp::parse(&r.op)
        .ok_or_else(|| anyhow!("op {:?}: expected backup, restore, forget or check", r.op))?;
    if matches!(op, RepoOp::Backup | RepoOp::Restore) && !r.path.starts_with('/') {
        bail!("path {:?}: an absolute path in the container", r.path);
    }
    // The helper is confined to the volume (or root filesystem) the path lies on.
    let (at, _) = cfg.host_path(if r.path.is_empty() { "/" } else { &r.path });
    Ok(RepoJob {
        op: Some(op),
        repository: r.repository.clone(),
        root: at.root.display().to_string(),
        path: at.path.display().to_string(),
        as_path: r.path.clone(),
        snapshot: r.snapshot.clone(),
        forget: r.forget.clone(),
        host: r.host.clone(),
        tags: r.tags.clone(),
        extra_ca_pem: cfg.extra_ca.clone(),
        ..Default::default()
    })
}

/// The repository's password: from the BBS with the task's credential, or (a local
/// directory repository: tests and benchmarks) the container's `RESTIC_PASSWORD`.
async fn password(cfg: &ShimConfig, repository: &str) -> anyhow::Result<String> {
    if !repository.starts_with("rest:") {
        return cfg
            .env
            .iter()
            .find(|(k, _)| k == "RESTIC_PASSWORD")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                anyhow!("a local repository's password comes from RESTIC_PASSWORD in the task's environment")
            });
    }
    let (url, user, pass) = password_request(repository)?;
    let http = crate::transfer::client(&cfg.extra_ca)?;
    let resp = http
        .get(url.clone())
        .basic_auth(user, Some(pass))
        .send()
        .await
        .with_context(|| format!("fetching the repository password from {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("the BBS refused the task's credential for the repository password ({status})");
    }
    Ok(resp.text().await?.trim().to_string())
}

/// The addresses of the repository's host (the confined helper resolves no name).
async fn resolve(repository: &str) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let Some(url) = repository.strip_prefix("rest:") else {
        return Ok(Vec::new());
    };
    let url = reqwest::Url::parse(url).context("repository: not a URL after `rest:`")?;
    let host = url.host_str().unwrap_or_default().to_string();
    if host.is_empty()
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok()
    {
        return Ok(Vec::new());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving the repository host {host}"))?;
    Ok(addrs.map(|a| (host.clone(), a)).collect())
}

/// Runs action `r`: the helper's outcome, written into the container when the action
/// names an outcome file; an error when the helper failed.
pub(super) async fn run(ctx: &Ctx, r: &models::RepositoryAction) -> anyhow::Result<()> {
    let mut job = job_for(&ctx.cfg, r)?;
    job.password = password(&ctx.cfg, &r.repository).await?;
    job.resolve = resolve(&r.repository).await?;
    let outcome = run_helper(ctx, r, &job).await;
    let outcome = outcome.unwrap_or_else(|e| RepoOutcome {
        op: job.op,
        error: Some(format!("{e:#}")),
        ..Default::default()
    });
    if !r.outcome_file.is_empty() {
        let (at, _) = ctx.cfg.host_path(&r.outcome_file);
        let json = serde_json::to_vec(&outcome)?;
        at.run(move |p| std::fs::write(p, json))
            .await
            .and_then(|r| r)
            .with_context(|| format!("writing the outcome to {}", r.outcome_file))?;
    }
    match outcome.error {
        Some(e) => Err(anyhow!(e)),
        None => Ok(()),
    }
}

/// Starts the helper (this program, `--repo`), in the container's cgroup; its stderr
/// into the task's log; its outcome. Dropping the future kills it.
async fn run_helper(
    ctx: &Ctx,
    r: &models::RepositoryAction,
    job: &RepoJob,
) -> anyhow::Result<RepoOutcome> {
    let exe = std::env::current_exe().context("finding the shim's own program")?;
    let mut child = tokio::process::Command::new(exe)
        .args(super::PREFIX_ARGS.get().cloned().unwrap_or_default())
        .arg(crate::repo::REPO_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the repository helper")?;
    if let Some(pid) = child.id() {
        if let Err(e) = crate::cgroup::enter(&ctx.cfg.cgroup, pid) {
            tracing::warn!("repository helper {pid}: not in the container's cgroup: {e}");
        }
    }
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        bail!("the repository helper's pipes are missing");
    };
    stdin.write_all(&serde_json::to_vec(job)?).await?;
    drop(stdin);
    let source = ctx.source(&r.log_source).to_string();
    let log = async {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut last = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            ctx.log(&source, "stderr", &line).await;
            last = line;
        }
        last
    };
    let mut out = String::new();
    let read = stdout.read_to_string(&mut out);
    let (last, read) = tokio::join!(log, read);
    read.context("reading the repository helper's outcome")?;
    let status = child.wait().await?;
    match out.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => serde_json::from_str(line)
            .with_context(|| format!("the repository helper's outcome is not JSON: {line}")),
        None => bail!("the repository helper ended ({status}) without an outcome: {last}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_url_from_the_repository_url() {
        let (url, user, pass) =
            password_request("rest:https://lattice-task:S.T@10.0.0.1:8889/v1/repos/v1/").unwrap();
        assert_eq!(url.as_str(), "https://10.0.0.1:8889/v1/repos/v1/password");
        assert_eq!((user.as_str(), pass.as_str()), ("lattice-task", "S.T"));
        let (url, _, _) = password_request("rest:https://a:b@bbs/v1/repos/v1").unwrap();
        assert_eq!(url.as_str(), "https://bbs/v1/repos/v1/password");
        assert!(password_request("rest:https://bbs/v1/repos/v1/")
            .unwrap_err()
            .to_string()
            .contains("no credential"));
        assert!(password_request("/srv/repo").is_err());
    }

    fn cfg() -> ShimConfig {
        ShimConfig {
            id: "t".into(),
            state_root: "/run/s".into(),
            bundle: "/b".into(),
            rootfs: "/c/rootfs".into(),
            env: Vec::new(),
            action: models::Action::default(),
            log_source: "TASK".into(),
            log_socket: "/l".into(),
            grace_ms: 1,
            cgroup: "lattice/t".into(),
            binds: vec![crate::bundle::Bind {
                host_path: "/pool/snap".into(),
                container_path: "/data".into(),
                read_only: true,
            }],
            result_file: String::new(),
            extra_ca: vec!["PEM".into()],
            redirects: Vec::new(),
        }
    }

    #[test]
    fn the_job_is_confined_to_the_volume_of_its_path() {
        let r = models::RepositoryAction {
            op: "backup".into(),
            repository: "rest:https://u:p@bbs/v1/repos/v1/".into(),
            path: "/data".into(),
            host: "vol".into(),
            ..Default::default()
        };
        let job = job_for(&cfg(), &r).unwrap();
        assert_eq!(job.op, Some(RepoOp::Backup));
        assert_eq!((job.root.as_str(), job.path.as_str()), ("/pool/snap", "/"));
        assert_eq!(job.as_path, "/data");
        assert_eq!(job.extra_ca_pem, vec!["PEM".to_string()]);
        let deeper = models::RepositoryAction {
            op: "restore".into(),
            path: "/data/staging".into(),
            ..r.clone()
        };
        let job = job_for(&cfg(), &deeper).unwrap();
        assert_eq!(
            (job.root.as_str(), job.path.as_str()),
            ("/pool/snap", "/staging")
        );
        let outside = models::RepositoryAction {
            path: "/tmp/x".into(),
            ..r.clone()
        };
        assert_eq!(job_for(&cfg(), &outside).unwrap().root, "/c/rootfs");
        let bad = models::RepositoryAction {
            op: "destroy".into(),
            ..r
        };
        assert!(job_for(&cfg(), &bad)
            .unwrap_err()
            .to_string()
            .contains("op \"destroy\""));
    }
}
