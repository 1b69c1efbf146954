//! `diego-sshd`, Diego's SSH daemon inside the container (diego-ssh cmd/sshd), ours
//! over `russh`: `-address` (default `127.0.0.1:2222`), `-hostKey` (a PEM private
//! key: the PKCS#1 RSA key the original `ltc` makes, or PKCS#8, SEC1 EC or OpenSSH
//! keys), `-authorizedKey` (one authorized_keys line: the only key let in, by public
//! key), `-allowUnauthenticatedClients`, `-inheritDaemonEnv`; `-debugAddr` and
//! `-logLevel` are accepted and ignored. Channels: `session` (env, signal, pty-req,
//! window-change, exec, shell, subsystem `sftp` ([`sftp`]); the rest refused) and
//! `direct-tcpip`.
//!
//! The rooms: this module reads the flags and keys; [`command`] decides what a
//! session runs and with which environment, and how an exit is reported (pure);
//! [`session`] runs a session channel's process (pipes or a pty, [`pty`]);
//! [`server`] is the russh handler (authentication, channels, forwards).

pub mod command;
pub mod pty;
pub mod server;
pub mod session;
pub mod sftp;

use russh::keys::{PrivateKey, PublicKey};

use crate::flags::{self, FlagError, Kind};

/// The flags, as Diego's sshd defines them.
pub const FLAGS: &[(&str, Kind)] = &[
    ("address", Kind::Value),
    ("hostKey", Kind::Value),
    ("authorizedKey", Kind::Value),
    ("allowUnauthenticatedClients", Kind::Bool),
    ("inheritDaemonEnv", Kind::Bool),
    ("debugAddr", Kind::Value),
    ("logLevel", Kind::Value),
];

/// The flags as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub address: String,
    pub host_key: String,
    pub authorized_key: String,
    pub allow_unauthenticated: bool,
    pub inherit_daemon_env: bool,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            address: "127.0.0.1:2222".into(),
            host_key: String::new(),
            authorized_key: String::new(),
            allow_unauthenticated: false,
            inherit_daemon_env: false,
        }
    }
}

/// Reads the arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Args, FlagError> {
    let p = flags::parse(FLAGS, args)?;
    let mut a = Args::default();
    for (name, value) in &p.flags {
        match name.as_str() {
            "address" => a.address = value.clone(),
            "hostKey" => a.host_key = value.clone(),
            "authorizedKey" => a.authorized_key = value.clone(),
            "allowUnauthenticatedClients" => a.allow_unauthenticated = value == "true",
            "inheritDaemonEnv" => a.inherit_daemon_env = value == "true",
            _ => {} // -debugAddr, -logLevel: accepted, not used
        }
    }
    Ok(a)
}

/// Why the daemon cannot start (Diego logs `configure-failed` and exits 1).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "an authorized key is required (-authorizedKey) unless -allowUnauthenticatedClients is set"
    )]
    NoAuthorizedKey,
    #[error("failed to parse the host key: {0}")]
    HostKey(String),
    #[error("failed to parse the authorized key: {0}")]
    AuthorizedKey(String),
    #[error("failed to generate a host key: {0}")]
    Generate(String),
}

/// What the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub address: String,
    pub host_key: PrivateKey,
    /// None: anyone is let in (`-allowUnauthenticatedClients`, no key).
    pub authorized_key: Option<PublicKey>,
    pub allow_unauthenticated: bool,
    pub inherit_daemon_env: bool,
}

/// The public key of one authorized_keys line (`TYPE BASE64 [COMMENT]`, options
/// before it are not supported, as Diego's `ssh.ParseAuthorizedKey` use had none).
pub fn parse_authorized_key(line: &str) -> Result<PublicKey, ConfigError> {
    let mut words = line.split_whitespace();
    let (Some(_kind), Some(b64)) = (words.next(), words.next()) else {
        return Err(ConfigError::AuthorizedKey(
            "expected TYPE BASE64 [COMMENT]".into(),
        ));
    };
    russh::keys::parse_public_key_base64(b64).map_err(|e| ConfigError::AuthorizedKey(e.to_string()))
}

/// The host key's PEM text (an empty one: a new Ed25519 key, where Diego made a
/// 1024-bit RSA one).
pub fn parse_host_key(pem: &str) -> Result<PrivateKey, ConfigError> {
    if pem.trim().is_empty() {
        return PrivateKey::random(
            &mut russh::keys::key::safe_rng(),
            russh::keys::Algorithm::Ed25519,
        )
        .map_err(|e| ConfigError::Generate(e.to_string()));
    }
    russh::keys::decode_secret_key(pem, None).map_err(|e| ConfigError::HostKey(e.to_string()))
}

impl Config {
    /// Checks the flags and reads the keys.
    pub fn from_args(a: &Args) -> Result<Config, ConfigError> {
        let authorized_key = match a.authorized_key.trim() {
            "" if a.allow_unauthenticated => None,
            "" => return Err(ConfigError::NoAuthorizedKey),
            line => Some(parse_authorized_key(line)?),
        };
        Ok(Config {
            address: a.address.clone(),
            host_key: parse_host_key(&a.host_key)?,
            authorized_key,
            allow_unauthenticated: a.allow_unauthenticated,
            inherit_daemon_env: a.inherit_daemon_env,
        })
    }
}

/// Usage text.
pub fn usage() -> &'static str {
    "Usage of diego-sshd:\n  -address string\n    \tlisten address for ssh connections (default \"127.0.0.1:2222\")\n  -allowUnauthenticatedClients\n    \tallow access to unauthenticated clients\n  -authorizedKey string\n    \tpublic key in authorized_keys format\n  -hostKey string\n    \tPEM encoded RSA host key\n  -inheritDaemonEnv\n    \tinherit daemon's environment\n"
}

/// A lager-shaped JSON log line on stdout (Diego's sshd logs that way).
pub fn log(message: &str, data: &[(&str, &str)]) {
    let mut fields = String::new();
    for (i, (k, v)) in data.iter().enumerate() {
        if i > 0 {
            fields.push(',');
        }
        fields.push_str(&format!("{}:{}", json_str(k), json_str(v)));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    println!(
        "{{\"timestamp\":\"{}.{:09}\",\"source\":\"sshd\",\"message\":{},\"log_level\":1,\"data\":{{{fields}}}}}",
        now.as_secs(),
        now.subsec_nanos(),
        json_str(&format!("sshd.{message}"))
    );
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The program: returns the exit status.
pub fn main_with(args: &[String]) -> i32 {
    let parsed = match parse_args(args) {
        Ok(a) => a,
        Err(FlagError::Help) => {
            eprint!("{}", usage());
            return 0;
        }
        Err(e) => {
            eprintln!("{e}");
            eprint!("{}", usage());
            return 2;
        }
    };
    let cfg = match Config::from_args(&parsed) {
        Ok(c) => c,
        Err(e) => {
            log("configure-failed", &[("error", &e.to_string())]);
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log("runtime-failed", &[("error", &e.to_string())]);
            return 1;
        }
    };
    match rt.block_on(server::serve(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            log("serve-failed", &[("error", &e.to_string())]);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    // A throwaway 1024-bit PKCS#1 RSA key (as `ltc` passes, smaller).
    pub(crate) const RSA_PEM: &str = include_str!("../../tests/keys/rsa_pkcs1.pem");
    pub(crate) const RSA_PUB: &str = include_str!("../../tests/keys/rsa_pkcs1.pub");

    #[test]
    fn flags_as_ltc_writes_them() {
        let a = parse_args(&args(&[
            "-address=0.0.0.0:2222",
            &format!("-authorizedKey={}", RSA_PUB.trim()),
            &format!("-hostKey={RSA_PEM}"),
            "-debugAddr",
            "x",
            "-logLevel=debug",
        ]))
        .unwrap();
        assert_eq!(a.address, "0.0.0.0:2222");
        assert!(a.host_key.contains("BEGIN RSA PRIVATE KEY"));
        assert!(!a.allow_unauthenticated && !a.inherit_daemon_env);
        let c = Config::from_args(&a).unwrap();
        assert_eq!(
            c.host_key.public_key().key_data(),
            c.authorized_key.as_ref().unwrap().key_data(),
            "the test key pair is one pair"
        );
        assert_eq!(
            parse_args(&args(&[
                "-inheritDaemonEnv",
                "-allowUnauthenticatedClients"
            ]))
            .unwrap(),
            Args {
                inherit_daemon_env: true,
                allow_unauthenticated: true,
                ..Default::default()
            }
        );
        assert!(matches!(
            parse_args(&args(&["-port=1"])),
            Err(FlagError::Undefined(_))
        ));
    }

    #[test]
    fn configuration_refusals() {
        let none = Args::default();
        assert!(matches!(
            Config::from_args(&none),
            Err(ConfigError::NoAuthorizedKey)
        ));
        let open = Args {
            allow_unauthenticated: true,
            ..Default::default()
        };
        let c = Config::from_args(&open).unwrap();
        assert!(c.authorized_key.is_none());
        assert_eq!(
            c.host_key.algorithm(),
            russh::keys::Algorithm::Ed25519,
            "made up"
        );
        let bad_key = Args {
            authorized_key: "ssh-rsa notbase64!".into(),
            ..Default::default()
        };
        assert!(matches!(
            Config::from_args(&bad_key),
            Err(ConfigError::AuthorizedKey(_))
        ));
        let bad_host = Args {
            authorized_key: RSA_PUB.into(),
            host_key: "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
                .into(),
            ..Default::default()
        };
        assert!(matches!(
            Config::from_args(&bad_host),
            Err(ConfigError::HostKey(_))
        ));
    }

    #[test]
    fn log_lines_are_json() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
