//! Where `ltc` sends its requests: the API's URL, credentials and the apps' domain,
//! saved by `ltc target` (in `$LTC_HOME/config.json`, default `~/.lattice`, 0600) and
//! overridden by `LTC_TARGET` (`http://USER:PASSWORD@HOST:PORT`) and `LTC_TOKEN` (an
//! API token, sent as `Authorization: Bearer`). An https target carries the CA the user
//! trusted for it (see [`crate::trust`]); with `LTC_TARGET`, `LTC_CA_FILE` names it.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The domain `lattice up` serves apps at, with the router's port.
pub const DEFAULT_DOMAIN: &str = "lattice.localhost:8080";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Target {
    /// `http://HOST:PORT`, no credentials.
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An API token (`ltc login`), preferred over user and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The CA certificate (PEM) the user trusted for an https API: the only root
    /// its certificate is verified against. None: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The apps' domain, with the router's port when it is not 80: apps answer at
    /// `http://APP.DOMAIN`.
    #[serde(default = "default_domain")]
    pub domain: String,
}

fn default_domain() -> String {
    DEFAULT_DOMAIN.into()
}

impl Target {
    /// Parses `URL` (scheme optional, credentials optional).
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let url = url.trim().trim_end_matches('/');
        anyhow::ensure!(
            !url.is_empty(),
            "an empty target: give the API's address, e.g. `ltc target http://127.0.0.1:8888`"
        );
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s, r),
            None => ("http", url),
        };
        anyhow::ensure!(
            scheme == "http" || scheme == "https",
            "target {url:?}: the API speaks http or https, not {scheme}"
        );
        let (creds, host) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        anyhow::ensure!(
            !host.is_empty() && !host.contains('/'),
            "target {url:?}: expected http://HOST:PORT (no path)"
        );
        let (user, password) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        Ok(Target {
            api: format!("{scheme}://{host}"),
            user,
            password,
            token: None,
            ca: None,
            domain: default_domain(),
        })
    }

    /// The API's host (an IPv6 address without brackets) and port.
    pub fn host_port(&self) -> anyhow::Result<(String, u16)> {
        let (scheme, rest) = self.api.split_once("://").unwrap_or(("http", &self.api));
        let default = if scheme == "https" { 443 } else { 80 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.ends_with(']') => (h, Some(p)),
            _ => (rest, None),
        };
        let port = match port {
            Some(p) => p
                .parse()
                .with_context(|| format!("target {}: {p:?} is not a port", self.api))?,
            None => default,
        };
        Ok((host.trim_matches(['[', ']']).to_string(), port))
    }

    /// The host part of the domain (what routes name).
    pub fn route_domain(&self) -> &str {
        self.domain.split(':').next().unwrap_or(&self.domain)
    }

    /// Where a TCP route answers (the router, at the apps' domain), and where it goes:
    /// `tcp://DOMAIN:EXTERNAL -> CONTAINER`.
    pub fn tcp_route(&self, r: &lattice_specs::routes::TcpRoute) -> String {
        format!(
            "tcp://{}:{} -> {}",
            self.route_domain(),
            r.external_port,
            r.container_port
        )
    }

    /// The URL an app with route `host` answers at.
    pub fn app_url(&self, host: &str) -> String {
        match self.domain.split_once(':') {
            Some((_, port)) if port != "80" => format!("http://{host}:{port}/"),
            _ => format!("http://{host}/"),
        }
    }
}

/// `$LTC_HOME/config.json`, `~/.lattice/config.json` by default.
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("LTC_HOME") {
        return Ok(PathBuf::from(home).join("config.json"));
    }
    let home = std::env::var_os("HOME").context(
        "neither LTC_HOME nor HOME is set: set LTC_HOME to a directory for ltc's config",
    )?;
    Ok(PathBuf::from(home).join(".lattice/config.json"))
}

/// The target to use: `LTC_TARGET`, else the saved one; `LTC_TOKEN` overrides its token.
pub fn load() -> anyhow::Result<Target> {
    let mut t = load_target()?;
    if let Ok(token) = std::env::var("LTC_TOKEN") {
        t.token = Some(token);
    }
    Ok(t)
}

fn load_target() -> anyhow::Result<Target> {
    if let Ok(url) = std::env::var("LTC_TARGET") {
        let mut t = Target::parse(&url).context("LTC_TARGET")?;
        if let Ok(d) = std::env::var("LTC_DOMAIN") {
            t.domain = d;
        }
        if let Some(f) = std::env::var_os("LTC_CA_FILE") {
            let f = PathBuf::from(f);
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("LTC_CA_FILE {}: cannot read it", f.display()))?;
            crate::trust::pem_certs(&text)
                .with_context(|| format!("LTC_CA_FILE {}", f.display()))?;
            t.ca = Some(text);
        }
        return Ok(t);
    }
    load_saved()
}

/// The target `ltc target` saved.
pub fn load_saved() -> anyhow::Result<Target> {
    let path = config_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no target set: run `ltc target http://127.0.0.1:8888` (the address `lattice up` printed)"
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a target ltc wrote: run `ltc target URL` again",
            path.display()
        )
    })
}

/// Saves `t` (readable by its owner only: it may hold a password).
pub fn save(t: &Target) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // A leftover tmp file keeps its old mode: set it, since this may hold a password.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(serde_json::to_string_pretty(t)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_or_without_scheme_and_credentials() {
        let t = Target::parse("127.0.0.1:8888").unwrap();
        assert_eq!(t.api, "http://127.0.0.1:8888");
        assert_eq!((t.user, t.password), (None, None));
        let t = Target::parse("http://admin:s3:cret@10.0.0.1:8888/").unwrap();
        assert_eq!(t.api, "http://10.0.0.1:8888");
        assert_eq!(t.user.as_deref(), Some("admin"));
        assert_eq!(t.password.as_deref(), Some("s3:cret"));
        assert!(Target::parse("ftp://x")
            .unwrap_err()
            .to_string()
            .contains("http or https"));
        assert!(Target::parse("http://h:1/v1").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn hosts_and_ports_of_targets() {
        let hp = |u: &str| Target::parse(u).unwrap().host_port().unwrap();
        assert_eq!(hp("https://h:1"), ("h".into(), 1));
        assert_eq!(hp("https://h"), ("h".into(), 443));
        assert_eq!(hp("h"), ("h".into(), 80));
        assert_eq!(hp("https://[::1]:8888"), ("::1".into(), 8888));
        assert_eq!(hp("https://[::1]"), ("::1".into(), 443));
        assert!(Target::parse("https://h:x").unwrap().host_port().is_err());
    }

    #[test]
    fn app_urls_carry_the_router_port() {
        let mut t = Target::parse("h:1").unwrap();
        assert_eq!(t.route_domain(), "lattice.localhost");
        assert_eq!(
            t.app_url("hello.lattice.localhost"),
            "http://hello.lattice.localhost:8080/"
        );
        t.domain = "apps.example.com".into();
        assert_eq!(
            t.app_url("a.apps.example.com"),
            "http://a.apps.example.com/"
        );
    }
}
