//! `healthcheck`, Diego's (cmd/healthcheck): is the app listening on the container's
//! address? For every IPv4 address of the container's interfaces that is not
//! loopback: with `-uri`, an HTTP GET of `http://IP:PORT URI` passes when it answers
//! 200; without, a TCP connection to `IP:PORT` passes. The first pass prints
//! `healthcheck passed` (exit 0); none prints `healthcheck failed` (exit 1); bad
//! flags exit 2. The decision ([`check`]) is pure over a [`Probe`]; [`NetProbe`] is
//! the real one (std sockets only, so the static binary stays small).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::flags::{self, FlagError, Kind};

/// The flags, as Diego's healthcheck defines them.
pub const FLAGS: &[(&str, Kind)] = &[
    ("network", Kind::Value),
    ("uri", Kind::Value),
    ("port", Kind::Value),
    ("timeout", Kind::Value),
];

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `tcp` (Go's dial network; `tcp4` too).
    pub network: String,
    /// Empty: a TCP connection is enough.
    pub uri: String,
    /// A string, as Diego's: a port that is not a number fails every probe.
    pub port: String,
    /// Zero: no timeout (Go's).
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            network: "tcp".into(),
            uri: String::new(),
            port: "8080".into(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Reads the arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Config, FlagError> {
    let p = flags::parse(FLAGS, args)?;
    let mut cfg = Config::default();
    for (name, value) in &p.flags {
        match name.as_str() {
            "network" => cfg.network = value.clone(),
            "uri" => cfg.uri = value.clone(),
            "port" => cfg.port = value.clone(),
            "timeout" => {
                cfg.timeout = flags::parse_duration(value).ok_or_else(|| FlagError::BadValue {
                    flag: name.clone(),
                    value: value.clone(),
                    reason: "parse error".into(),
                })?
            }
            _ => unreachable!("only defined flags are returned"),
        }
    }
    Ok(cfg)
}

/// The usage text (Go's `flag.PrintDefaults` shape).
pub fn usage() -> &'static str {
    "Usage of healthcheck:\n  -network string\n    \tnetwork type to dial with (e.g. unix, tcp) (default \"tcp\")\n  -port string\n    \tport to healthcheck (default \"8080\")\n  -timeout duration\n    \tdial timeout (default 1s)\n  -uri string\n    \turi to healthcheck\n"
}

/// How one address is probed.
pub trait Probe {
    /// Whether a TCP connection to `addr` opens within `timeout` (zero: none).
    fn tcp(&self, addr: SocketAddr, timeout: Duration) -> bool;
    /// Whether `GET uri` at `addr` answers 200 within `timeout` (zero: none).
    fn http(&self, addr: SocketAddr, uri: &str, timeout: Duration) -> bool;
}

/// The addresses probed: the IPv4 ones that are not loopback, in order.
pub fn targets(addrs: &[IpAddr]) -> Vec<Ipv4Addr> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(*v4),
            _ => None,
        })
        .collect()
}

/// The decision: whether any address passes.
pub fn check(cfg: &Config, addrs: &[IpAddr], probe: &dyn Probe) -> bool {
    if !matches!(cfg.network.as_str(), "tcp" | "tcp4") {
        return false;
    }
    let Ok(port) = cfg.port.parse::<u16>() else {
        return false;
    };
    targets(addrs).into_iter().any(|ip| {
        let addr = SocketAddr::from((ip, port));
        if cfg.uri.is_empty() {
            probe.tcp(addr, cfg.timeout)
        } else {
            // Go joins the URL as `http://IP:PORT` + uri: anything but a path makes
            // a URL it refuses.
            cfg.uri.starts_with('/') && probe.http(addr, &cfg.uri, cfg.timeout)
        }
    })
}

/// The addresses of every interface of this network namespace (getifaddrs).
pub fn interface_addrs() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(sin6.sin6_addr.s6_addr.into()));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The real probes, over std's blocking sockets.
pub struct NetProbe;

/// What is left of `timeout` from `start` (None: no timeout; Some(zero): spent).
fn left(start: Instant, timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then(|| timeout.saturating_sub(start.elapsed()))
}

fn connect(addr: SocketAddr, start: Instant, timeout: Duration) -> Option<TcpStream> {
    match left(start, timeout) {
        None => TcpStream::connect(addr).ok(),
        Some(d) if d.is_zero() => None,
        Some(d) => TcpStream::connect_timeout(&addr, d).ok(),
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
pub fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.trim_end_matches(['\r', '\n']);
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

impl Probe for NetProbe {
    fn tcp(&self, addr: SocketAddr, timeout: Duration) -> bool {
        connect(addr, Instant::now(), timeout).is_some()
    }

    fn http(&self, addr: SocketAddr, uri: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        let Some(mut conn) = connect(addr, start, timeout) else {
            return false;
        };
        let deadline = |c: &TcpStream| -> bool {
            match left(start, timeout) {
                None => true,
                Some(d) if d.is_zero() => false,
                Some(d) => {
                    c.set_read_timeout(Some(d)).is_ok() && c.set_write_timeout(Some(d)).is_ok()
                }
            }
        };
        if !deadline(&conn) {
            return false;
        }
        let request = format!(
            "GET {uri} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nConnection: close\r\n\r\n"
        );
        if conn.write_all(request.as_bytes()).is_err() {
            return false;
        }
        // The status line is all that matters; at most 1 KB of it is read.
        let mut line = Vec::with_capacity(128);
        let mut buf = [0u8; 256];
        while !line.contains(&b'\n') && line.len() < 1024 {
            if !deadline(&conn) {
                return false;
            }
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => line.extend_from_slice(&buf[..n]),
            }
        }
        let end = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
        status_code(&line[..end]) == Some(200)
    }
}

/// The program: prints the verdict (or the flag error and usage) and returns the
/// exit status.
pub fn main_with(args: &[String]) -> i32 {
    let cfg = match parse_args(args) {
        Ok(c) => c,
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
    let addrs = match interface_addrs() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("failed to list the interfaces: {e}");
            Vec::new()
        }
    };
    if check(&cfg, &addrs, &NetProbe) {
        println!("healthcheck passed");
        0
    } else {
        println!("healthcheck failed");
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records what it was asked; passes the addresses it is told.
    #[derive(Default)]
    struct Fake {
        pass: Vec<SocketAddr>,
        asked: RefCell<Vec<(SocketAddr, Option<String>, Duration)>>,
    }

    impl Probe for Fake {
        fn tcp(&self, addr: SocketAddr, timeout: Duration) -> bool {
            self.asked.borrow_mut().push((addr, None, timeout));
            self.pass.contains(&addr)
        }
        fn http(&self, addr: SocketAddr, uri: &str, timeout: Duration) -> bool {
            self.asked
                .borrow_mut()
                .push((addr, Some(uri.into()), timeout));
            self.pass.contains(&addr)
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn addrs() -> Vec<IpAddr> {
        ["127.0.0.1", "::1", "10.0.0.5", "fe80::1", "192.168.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn flags_as_ltc_writes_them() {
        let c = parse_args(&args(&["-timeout", "1s", "-port", "8080"])).unwrap();
        assert_eq!(c, Config::default());
        let c = parse_args(&args(&["-timeout=5s", "--port=9090", "-uri", "/health"])).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!((c.port.as_str(), c.uri.as_str()), ("9090", "/health"));
        assert!(matches!(
            parse_args(&args(&["-timeout", "soon"])),
            Err(FlagError::BadValue { .. })
        ));
        assert!(matches!(
            parse_args(&args(&["-bogus"])),
            Err(FlagError::Undefined(_))
        ));
    }

    #[test]
    fn every_non_loopback_ipv4_address_is_tried_until_one_passes() {
        assert_eq!(
            targets(&addrs()),
            [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(192, 168, 9, 9)]
        );
        let fake = Fake {
            pass: vec!["192.168.9.9:8080".parse().unwrap()],
            ..Default::default()
        };
        assert!(check(&Config::default(), &addrs(), &fake));
        let asked = fake.asked.borrow();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0].0, "10.0.0.5:8080".parse().unwrap());
        assert_eq!(asked[0].1, None, "no -uri: TCP");
        assert_eq!(asked[0].2, Duration::from_secs(1));
    }

    #[test]
    fn uri_makes_it_http_and_nothing_passing_fails() {
        let cfg = Config {
            uri: "/health".into(),
            port: "9000".into(),
            ..Default::default()
        };
        let fake = Fake::default();
        assert!(!check(&cfg, &addrs(), &fake));
        let asked = fake.asked.borrow();
        assert!(asked.iter().all(|a| a.1.as_deref() == Some("/health")));
        assert_eq!(asked.len(), 2);
    }

    #[test]
    fn what_can_never_pass() {
        let fake = Fake {
            pass: vec!["10.0.0.5:8080".parse().unwrap()],
            ..Default::default()
        };
        let only_loopback: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        assert!(
            !check(&Config::default(), &only_loopback, &fake),
            "an app on loopback only"
        );
        let bad_port = Config {
            port: "http".into(),
            ..Default::default()
        };
        assert!(!check(&bad_port, &addrs(), &fake));
        let not_a_path = Config {
            uri: "health".into(),
            ..Default::default()
        };
        assert!(!check(&not_a_path, &addrs(), &fake));
        let unix = Config {
            network: "unix".into(),
            ..Default::default()
        };
        assert!(!check(&unix, &addrs(), &fake));
        assert!(
            fake.asked.borrow().is_empty(),
            "none of these probes anything"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 500 Internal Server Error"),
            Some(500)
        );
        assert_eq!(status_code(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-x"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 x"), None);
    }
}
