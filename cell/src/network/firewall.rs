//! The cell's host firewall: containers may not open connections to the cell's host.
//!
//! A container reaches its host through the bridge: every service listening on the
//! host's addresses (the rep, the BBS, the public API, published ports of other
//! containers) would be one connection away from any container. One nftables table per
//! bridge drops what arrives from the bridge at the host unless it answers a
//! connection the host opened (health checks, published-port forwarding). Traffic that
//! the host forwards is not this table's business.
//!
//! [`rules`] is the decision (pure, tested); [`install`] and [`remove`] run `nft`.

use std::io::Write as _;
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

/// The nft script that (re)creates the bridge's table, atomically.
pub fn rules(bridge: &str) -> String {
    let t = table_name(bridge);
    format!(
        "table inet {t}\n\
         delete table inet {t}\n\
         table inet {t} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ct state established,related accept\n\
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
pub fn install(bridge: &str) -> anyhow::Result<()> {
    nft(&rules(bridge))
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
        let r = rules("lt0");
        assert!(r.contains("hook input"));
        let accept = r.find("established,related accept").unwrap();
        let drop = r.find("counter drop").unwrap();
        assert!(accept < drop, "answers pass before the drop");
        assert_eq!(r.matches("iifname \"lt0\"").count(), 2);
        assert!(r.starts_with("table inet lattice_lt0\ndelete table inet lattice_lt0\n"));
    }
}
