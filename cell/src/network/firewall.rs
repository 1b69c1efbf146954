//! The cell's host firewall: containers may not open connections to the cell's host.
//!
//! A container reaches its host through the bridge: every service listening on the
//! host's addresses (the rep, the BBS, the public API, published ports of other
//! containers) would be one connection away from any container. One nftables table per
//! bridge drops what arrives from the bridge at the host unless it answers a
//! connection the host opened (health checks, published-port forwarding) or asks the
//! cell's DNS server on the gateway address. Traffic that
//! the host forwards is not this table's business.
//!
//! [`rules`] is the decision (pure, tested); [`install`] and [`remove`] run `nft`.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The nftables table of a bridge (table names take letters, digits and `_`).
pub fn table_name(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("lattice_{safe}")
}

/// The input rule that lets containers ask the cell's DNS server (on the gateway
/// address, port 53, UDP and TCP; see [`crate::dns`]).
pub fn dns_accept(bridge: &str, gateway: Ipv4Addr) -> String {
    format!(
        "iifname \"{bridge}\" ip daddr {gateway} meta l4proto {{ tcp, udp }} th dport {} accept comment \"the cell's DNS server\"",
        crate::dns::PORT
    )
}

/// The nft script that (re)creates the bridge's table, atomically.
pub fn rules(bridge: &str, gateway: Ipv4Addr) -> String {
    let t = table_name(bridge);
    let dns = dns_accept(bridge, gateway);
    format!(
        "table inet {t}\n\
         delete table inet {t}\n\
         table inet {t} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ct state established,related accept\n\
         \t\t{dns}\n\
         \t\tiifname \"{bridge}\" counter drop comment \"containers may not reach the cell's host\"\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install Debian's nftables: scripts/setup.sh does)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Installs (or replaces) the bridge's table.
pub fn install(bridge: &str, gateway: Ipv4Addr) -> anyhow::Result<()> {
    nft(&rules(bridge, gateway))
        .with_context(|| format!("filtering containers' traffic to the host on {bridge}"))
}

/// Removes the bridge's table, if there is one.
pub fn remove(bridge: &str) {
    let t = table_name(bridge);
    let _ = nft(&format!("table inet {t}\ndelete table inet {t}\n"));
}

/// Whether the bridge's table is installed.
pub fn installed(bridge: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", &table_name(bridge)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_drops_new_connections_from_the_bridge_only() {
        assert_eq!(table_name("lt-1.x"), "lattice_lt_1_x");
        let r = rules("lt0", Ipv4Addr::new(10, 254, 0, 1));
        assert!(r.contains("hook input"));
        let accept = r.find("established,related accept").unwrap();
        let dns = r
            .find("ip daddr 10.254.0.1 meta l4proto { tcp, udp } th dport 53 accept")
            .unwrap();
        let drop = r.find("counter drop").unwrap();
        assert!(accept < drop, "answers pass before the drop");
        assert!(
            dns < drop,
            "DNS queries to the gateway pass before the drop"
        );
        assert_eq!(r.matches("iifname \"lt0\"").count(), 3);
        assert!(r.starts_with("table inet lattice_lt0\ndelete table inet lattice_lt0\n"));
    }
}
