//! Health checks of LRP instances: a TCP port check, an HTTP GET check, or a command
//! run in the container. The rep checks fast (every 0.5 s) until the instance is
//! healthy, then slowly (every 30 s); an instance is RUNNING only once healthy.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use lattice_specs::models::{self, action::Action as A, check::Check as C};

/// One way to tell whether an instance is healthy.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Tcp {
        port: u16,
        timeout: Duration,
    },
    Http {
        port: u16,
        path: String,
        timeout: Duration,
    },
    /// A command run in the container; exit status 0 is healthy.
    Command(models::RunAction),
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

fn ms(v: u64) -> Duration {
    if v == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(v)
    }
}

/// The checks for a DesiredLRP: its check definition (an empty one means "no checks":
/// `ltc create --no-monitor`), else its monitor action (a Run, possibly inside a
/// Timeout), else a port check on its first port, else none (healthy as soon as it
/// starts).
pub fn checks_for(d: &models::DesiredLrp) -> Vec<Check> {
    if let Some(def) = &d.check_definition {
        return def
            .checks
            .iter()
            .filter_map(|c| match c.check.as_ref()? {
                C::Tcp(t) => Some(Check::Tcp {
                    port: t.port as u16,
                    timeout: ms(t.connect_timeout_ms),
                }),
                C::Http(h) => Some(Check::Http {
                    port: h.port as u16,
                    path: if h.path.is_empty() {
                        "/".into()
                    } else {
                        h.path.clone()
                    },
                    timeout: ms(h.request_timeout_ms),
                }),
            })
            .collect();
    }
    if let Some(m) = &d.monitor {
        let mut action = m;
        loop {
            match &action.action {
                Some(A::Run(r)) => return vec![Check::Command(r.clone())],
                Some(A::Timeout(t)) if t.action.is_some() => action = t.action.as_ref().unwrap(),
                Some(A::EmitProgress(e)) if e.action.is_some() => {
                    action = e.action.as_ref().unwrap()
                }
                _ => break,
            }
        }
    }
    match d.ports.first() {
        Some(&p) => vec![Check::Tcp {
            port: p as u16,
            timeout: DEFAULT_TIMEOUT,
        }],
        None => vec![],
    }
}

/// Runs one check against the container at `ip`. `exec` runs a command check in the
/// container (the executor's shim in `--exec` mode).
pub async fn run<F, Fut>(check: &Check, ip: Ipv4Addr, exec: F) -> Result<(), String>
where
    F: FnOnce(models::RunAction) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    match check {
        Check::Tcp { port, timeout } => {
            let addr = SocketAddr::from((ip, *port));
            match tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("port {port}: {e}")),
                Err(_) => Err(format!("port {port}: no answer within {timeout:?}")),
            }
        }
        Check::Http {
            port,
            path,
            timeout,
        } => {
            let url = format!("http://{ip}:{port}{path}");
            let client = reqwest::Client::builder()
                .timeout(*timeout)
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("GET {path} on port {port}: {}", r.status())),
                Err(e) => {
                    // reqwest's message alone says little ("error sending request"): add
                    // the innermost cause (refused, reset, timed out).
                    let mut cause: &dyn std::error::Error = &e;
                    while let Some(inner) = cause.source() {
                        cause = inner;
                    }
                    Err(format!("GET {path} on port {port}: {cause}"))
                }
            }
        }
        Check::Command(r) => exec(r.clone()).await,
    }
}

/// All checks pass.
pub async fn healthy<F, Fut>(checks: &[Check], ip: Ipv4Addr, exec: F) -> Result<(), String>
where
    F: Fn(models::RunAction) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for c in checks {
        run(c, ip, &exec).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> models::DesiredLrp {
        models::DesiredLrp {
            process_guid: "p".into(),
            ports: vec![8080, 9090],
            ..Default::default()
        }
    }

    #[test]
    fn the_default_is_a_port_check_on_the_first_port() {
        assert_eq!(
            checks_for(&desired()),
            vec![Check::Tcp {
                port: 8080,
                timeout: DEFAULT_TIMEOUT
            }]
        );
        let mut d = desired();
        d.ports.clear();
        assert!(checks_for(&d).is_empty());
    }

    #[test]
    fn definitions_and_monitor_actions_win() {
        let mut d = desired();
        d.monitor = Some(models::Action {
            action: Some(A::Timeout(Box::new(models::TimeoutAction {
                action: Some(Box::new(lattice_specs::testing::run("/bin/check"))),
                timeout: 1_000_000_000,
                ..Default::default()
            }))),
        });
        assert!(matches!(&checks_for(&d)[..], [Check::Command(r)] if r.path == "/bin/check"));
        d.check_definition = Some(models::CheckDefinition {
            checks: vec![models::Check {
                check: Some(C::Http(models::HttpCheck {
                    port: 9090,
                    request_timeout_ms: 0,
                    path: "".into(),
                })),
            }],
            log_source: String::new(),
        });
        assert_eq!(
            checks_for(&d),
            vec![Check::Http {
                port: 9090,
                path: "/".into(),
                timeout: DEFAULT_TIMEOUT
            }]
        );
        d.check_definition = Some(Default::default());
        assert_eq!(
            checks_for(&d),
            vec![],
            "an empty definition turns checks off"
        );
    }

    #[tokio::test]
    async fn checks_pass_and_fail_for_real() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let no_exec = |_r: models::RunAction| async { Err::<(), _>("no".to_string()) };
        let tcp = Check::Tcp {
            port,
            timeout: DEFAULT_TIMEOUT,
        };
        run(&tcp, Ipv4Addr::LOCALHOST, no_exec).await.unwrap();
        drop(listener);
        let err = run(&tcp, Ipv4Addr::LOCALHOST, no_exec).await.unwrap_err();
        assert!(err.contains(&port.to_string()), "{err}");
        let cmd = Check::Command(Default::default());
        assert!(run(&cmd, Ipv4Addr::LOCALHOST, no_exec).await.is_err());
    }
}
