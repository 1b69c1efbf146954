//! Parsing of `rootfs` URLs.
//!
//! Accepted forms:
//! - `preloaded:NAME` — a rootfs directory the cell is configured with;
//! - `oci:PATH[:TAG]` — an OCI image layout on the cell's disk;
//! - `docker://HOST[:PORT]/REPO[:TAG]` — pulled from a registry;
//! - Diego's `docker:///REPO#TAG` (default registry) and `docker://HOST:PORT/REPO#TAG`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    Preloaded {
        name: String,
    },
    Oci {
        path: String,
        tag: Option<String>,
    },
    Docker {
        registry: Option<String>,
        repository: String,
        tag: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rootfs {url:?}: {reason}; use preloaded:NAME, oci:/PATH[:TAG] or docker://HOST[:PORT]/REPO[:TAG]")]
pub struct RootFsError {
    pub url: String,
    pub reason: &'static str,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn valid_repo(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.ends_with('/')
        && s.split('/').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

impl RootFs {
    pub fn parse(url: &str) -> Result<RootFs, RootFsError> {
        let err = |reason| RootFsError {
            url: url.to_string(),
            reason,
        };
        if let Some(name) = url.strip_prefix("preloaded:") {
            return if valid_name(name) {
                Ok(RootFs::Preloaded { name: name.into() })
            } else {
                Err(err("bad preloaded rootfs name"))
            };
        }
        if let Some(rest) = url.strip_prefix("oci:") {
            // The tag is what follows the last ':' after the last '/'.
            let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
            let (path, tag) = match rest[last_slash..].rfind(':') {
                Some(i) => (
                    &rest[..last_slash + i],
                    Some(rest[last_slash + i + 1..].to_string()),
                ),
                None => (rest, None),
            };
            if !path.starts_with('/') {
                return Err(err("an oci: path must be absolute"));
            }
            if tag.as_deref() == Some("") {
                return Err(err("empty tag"));
            }
            return Ok(RootFs::Oci {
                path: path.into(),
                tag,
            });
        }
        if let Some(rest) = url.strip_prefix("docker://") {
            let (host, path) = rest
                .split_once('/')
                .ok_or_else(|| err("missing repository"))?;
            let registry = if host.is_empty() {
                None
            } else {
                Some(host.to_string())
            };
            if let Some(h) = &registry {
                let (name, port) = h
                    .rsplit_once(':')
                    .map(|(n, p)| (n, Some(p)))
                    .unwrap_or((h.as_str(), None));
                if !valid_name(name) || port.is_some_and(|p| p.parse::<u16>().is_err()) {
                    return Err(err("bad registry host"));
                }
            }
            let (repo, tag) = if let Some((r, t)) = path.split_once('#') {
                (r, t)
            } else {
                let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
                match path[last_slash..].rfind(':') {
                    Some(i) => (&path[..last_slash + i], &path[last_slash + i + 1..]),
                    None => (path, "latest"),
                }
            };
            if !valid_repo(repo) {
                return Err(err(
                    "bad repository name (lowercase letters, digits, . _ - and /)",
                ));
            }
            if !valid_name(tag) {
                return Err(err("bad tag"));
            }
            return Ok(RootFs::Docker {
                registry,
                repository: repo.into(),
                tag: tag.into(),
            });
        }
        Err(err("unknown scheme"))
    }

    /// The rootfs provider a cell must offer: "preloaded", "oci" or "docker".
    pub fn provider(&self) -> &'static str {
        match self {
            RootFs::Preloaded { .. } => "preloaded",
            RootFs::Oci { .. } => "oci",
            RootFs::Docker { .. } => "docker",
        }
    }
}

impl fmt::Display for RootFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootFs::Preloaded { name } => write!(f, "preloaded:{name}"),
            RootFs::Oci { path, tag: Some(t) } => write!(f, "oci:{path}:{t}"),
            RootFs::Oci { path, tag: None } => write!(f, "oci:{path}"),
            RootFs::Docker {
                registry,
                repository,
                tag,
            } => {
                write!(
                    f,
                    "docker://{}/{repository}:{tag}",
                    registry.as_deref().unwrap_or("")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(reg: Option<&str>, repo: &str, tag: &str) -> RootFs {
        RootFs::Docker {
            registry: reg.map(Into::into),
            repository: repo.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn parses_every_form() {
        let cases = [
            (
                "preloaded:busybox",
                RootFs::Preloaded {
                    name: "busybox".into(),
                },
            ),
            (
                "oci:/var/images/app",
                RootFs::Oci {
                    path: "/var/images/app".into(),
                    tag: None,
                },
            ),
            (
                "oci:/var/images/app:v1",
                RootFs::Oci {
                    path: "/var/images/app".into(),
                    tag: Some("v1".into()),
                },
            ),
            (
                "oci:/a:b/app",
                RootFs::Oci {
                    path: "/a:b/app".into(),
                    tag: None,
                },
            ),
            (
                "docker://127.0.0.1:5000/lib/app:1.2",
                docker(Some("127.0.0.1:5000"), "lib/app", "1.2"),
            ),
            (
                "docker://registry.local/app",
                docker(Some("registry.local"), "app", "latest"),
            ),
            (
                "docker:///cloudfoundry/lattice-app#v2",
                docker(None, "cloudfoundry/lattice-app", "v2"),
            ),
            (
                "docker:///cloudfoundry/lattice-app",
                docker(None, "cloudfoundry/lattice-app", "latest"),
            ),
            (
                "docker://localhost:5000/app#edge",
                docker(Some("localhost:5000"), "app", "edge"),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(RootFs::parse(url), Ok(want), "{url}");
        }
    }

    #[test]
    fn refuses_bad_urls_with_a_reason() {
        for url in [
            "",
            "busybox",
            "preloaded:",
            "preloaded:a/b",
            "oci:relative/path",
            "oci:/p:",
            "docker://",
            "docker://host",
            "docker://host:notaport/app",
            "docker://host/App",
            "docker://host/app:",
            "http://x/y",
        ] {
            let e = RootFs::parse(url).unwrap_err();
            assert!(e.to_string().contains("use preloaded:NAME"), "{url}: {e}");
        }
    }

    #[test]
    fn provider_and_display() {
        assert_eq!(
            RootFs::parse("preloaded:busybox").unwrap().provider(),
            "preloaded"
        );
        assert_eq!(RootFs::parse("oci:/x").unwrap().provider(), "oci");
        let d = RootFs::parse("docker:///a/b#c").unwrap();
        assert_eq!(d.provider(), "docker");
        assert_eq!(RootFs::parse(&d.to_string()), Ok(d));
    }
}
