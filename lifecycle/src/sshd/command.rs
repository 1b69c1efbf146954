//! What a session runs, pure: the shell (Diego's order), its arguments, the child's
//! environment, how its end is reported (OpenSSH's `exit-status` / `exit-signal`),
//! which signal a `signal` request means, and where a `direct-tcpip` channel goes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The shells tried, in Diego's order; then `bash` and `sh` on PATH.
pub const SHELLS: &[&str] = &["/bin/bash", "/usr/local/bin/bash", "/bin/sh"];

/// Diego's defaults for the child's PATH and LANG.
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";
pub const DEFAULT_LANG: &str = "en_US.UTF8";

/// The first shell that exists (`exists` asks the filesystem), else the first of
/// `bash`, `sh` found on `path` (a PATH value).
pub fn shell(exists: &dyn Fn(&str) -> bool, path: &str) -> Option<String> {
    if let Some(s) = SHELLS.iter().find(|s| exists(s)) {
        return Some(s.to_string());
    }
    for name in ["bash", "sh"] {
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
            if exists(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// The program and arguments: the shell alone (`shell` request) or `SHELL -c CMD`.
pub fn argv(shell: &str, command: Option<&str>) -> Vec<String> {
    match command {
        None => vec![shell.to_string()],
        Some(c) => vec![shell.to_string(), "-c".into(), c.to_string()],
    }
}

/// The child's environment: the daemon's own when inherited, PATH and LANG unless
/// set, HOME and USER as the daemon has them, the client's `env` requests (but not
/// HOME or USER), and TERM of the pty request.
pub fn environment(
    daemon: &[(String, String)],
    inherit: bool,
    requested: &[(String, String)],
    term: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if inherit {
        env.extend(daemon.iter().cloned());
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.entry("LANG".into())
        .or_insert_with(|| DEFAULT_LANG.into());
    for key in ["HOME", "USER"] {
        if let Some((_, v)) = daemon.iter().find(|(k, _)| k == key) {
            env.insert(key.into(), v.clone());
        }
    }
    for (k, v) in requested {
        if k != "HOME" && k != "USER" && !k.is_empty() && !k.contains('=') {
            env.insert(k.clone(), v.clone());
        }
    }
    if let Some(t) = term {
        env.insert("TERM".into(), t.to_string());
    }
    env.into_iter().collect()
}

/// How a process ended, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Status(u32),
    /// Killed by a signal: its name without `SIG` (OpenSSH's), and whether it dumped
    /// core.
    Signal {
        name: String,
        core_dumped: bool,
    },
}

/// The signals by SSH name (RFC 4254 §6.10) and number.
const SIGNALS: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("TERM", libc::SIGTERM),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

/// A signal's number from its SSH name (`TERM`, also `SIGTERM`).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A signal's SSH name (unknown ones as OpenSSH does: `SIG@openssh.com`... here the
/// number, which clients print as is).
pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, s)| *s == sig)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| format!("{sig}"))
}

/// A process's end as the client is told: its exit code, or the signal.
pub fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Status(c as u32),
        (None, Some(sig)) => Exit::Signal {
            name: signal_name(sig),
            core_dumped: status.core_dumped(),
        },
        (None, None) => Exit::Status(255),
    }
}

/// Where a `direct-tcpip` channel connects: an address as given, else the name in
/// the container's /etc/hosts (`hosts`), `localhost` being loopback in any case.
/// Other names are not resolved (a static binary in any image has no resolver
/// library to ask; the client can name an address).
pub fn target(host: &str, port: u32, hosts: &str) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let name = host.to_ascii_lowercase();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if ip.is_ipv4() && words.any(|w| w.eq_ignore_ascii_case(&name)) {
            return Some(SocketAddr::new(ip, port));
        }
    }
    (name == "localhost").then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn shells_in_diegos_order() {
        let have = |list: &'static [&'static str]| move |p: &str| list.contains(&p);
        assert_eq!(
            shell(&have(&["/bin/sh", "/bin/bash"]), "").unwrap(),
            "/bin/bash"
        );
        assert_eq!(shell(&have(&["/bin/sh"]), "").unwrap(), "/bin/sh");
        assert_eq!(
            shell(&have(&["/opt/x/sh", "/usr/bin/bash"]), "/opt/x:/usr/bin").unwrap(),
            "/usr/bin/bash",
            "bash first, wherever on PATH"
        );
        assert_eq!(shell(&have(&[]), "/bin"), None);
        assert_eq!(argv("/bin/sh", None), ["/bin/sh"]);
        assert_eq!(
            argv("/bin/sh", Some("echo hi")),
            ["/bin/sh", "-c", "echo hi"]
        );
    }

    #[test]
    fn the_childs_environment() {
        let daemon = kv(&[
            ("HOME", "/home/vcap"),
            ("USER", "vcap"),
            ("SECRET", "x"),
            ("PATH", "/opt"),
        ]);
        let asked = kv(&[("FOO", "bar"), ("HOME", "/evil"), ("LANG", "C")]);
        let env = environment(&daemon, false, &asked, Some("xterm"));
        assert_eq!(
            env,
            kv(&[
                ("FOO", "bar"),
                ("HOME", "/home/vcap"),
                ("LANG", "C"),
                ("PATH", DEFAULT_PATH),
                ("TERM", "xterm"),
                ("USER", "vcap"),
            ])
        );
        let inherited = environment(&daemon, true, &[], None);
        assert!(inherited.contains(&("SECRET".into(), "x".into())));
        assert!(
            inherited.contains(&("PATH".into(), "/opt".into())),
            "the daemon's PATH kept"
        );
        assert!(inherited.contains(&("LANG".into(), DEFAULT_LANG.into())));
    }

    #[test]
    fn exits_and_signals() {
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw;
        assert_eq!(exit_of(st(3 << 8)), Exit::Status(3));
        assert_eq!(
            exit_of(st(libc::SIGTERM)),
            Exit::Signal {
                name: "TERM".into(),
                core_dumped: false
            }
        );
        assert_eq!(
            exit_of(st(libc::SIGSEGV | 0x80)),
            Exit::Signal {
                name: "SEGV".into(),
                core_dumped: true
            }
        );
        assert_eq!(signal_number("INT"), Some(libc::SIGINT));
        assert_eq!(signal_number("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(signal_number("WINCH"), None);
        assert_eq!(signal_name(libc::SIGUSR2), "USR2");
    }

    #[test]
    fn forward_targets() {
        let hosts = "127.0.0.1 localhost\n::1 localhost\n10.0.0.7 web-0 web # me\n";
        let t = |h: &str| target(h, 8080, hosts);
        assert_eq!(t("10.1.2.3"), Some("10.1.2.3:8080".parse().unwrap()));
        assert_eq!(t("[::1]"), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(t("WEB"), Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(t("localhost"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            target("localhost", 1, ""),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(t("example.com"), None);
        assert_eq!(target("10.0.0.1", 70000, ""), None);
    }
}
