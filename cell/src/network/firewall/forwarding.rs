//! IPv4 forwarding for the cells' bridges. Each bridge forwards (its own
//! `net.ipv4.conf.BRIDGE.forwarding`); answers coming back from the host's other
//! interfaces need the global `net.ipv4.ip_forward`, which the first lattice table
//! turns on and the last one's removal restores to what it was (kept in
//! [`saved_path`] meanwhile, one file per network namespace, since each has its own
//! `ip_forward`: a cell killed midway leaves it for the next one to restore).
//! Every change happens under [`LOCK`], so cells on one host (or tests in one
//! process) never restore it under each other.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Where the values `ip_forward` had before the first lattice table are kept, as
/// `SAVED.<network namespace inode>`.
pub const SAVED: &str = "/run/lattice/ip_forward";

/// Where the calling thread's network namespace keeps its saved `ip_forward`.
pub fn saved_path() -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/thread-self/ns/net")
        .context("finding this thread's network namespace")?;
    Ok(format!("{SAVED}.{}", ns.ino()))
}
/// Held while lattice tables and `ip_forward` change.
pub const LOCK: &str = "/run/lattice/firewall.lock";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Runs `work` holding [`LOCK`] (an exclusive `flock`, released when the file closes).
pub(super) fn locked<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let _held = crate::hostlock::lock(Path::new(LOCK), nix::fcntl::FlockArg::LockExclusive)
        .with_context(|| format!("locking {LOCK}"))?;
    work()
}

/// Turns forwarding on for `bridge` and globally, saving the global value first
/// unless a value is saved already. Call it under [`locked`].
pub(super) fn enable(bridge: &str) -> anyhow::Result<()> {
    let found = read(IP_FORWARD)?;
    let saved = saved_path()?;
    if !Path::new(&saved).exists() {
        let tmp = format!("{saved}.tmp");
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(found.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &saved))
            .with_context(|| format!("saving ip_forward in {saved}"))?;
    }
    if found != "1" {
        write(IP_FORWARD, "1")?;
        tracing::info!("net.ipv4.ip_forward turned on for the containers' outbound traffic");
    }
    write(&format!("/proc/sys/net/ipv4/conf/{bridge}/forwarding"), "1")
}

/// Restores the saved `ip_forward` when no lattice table is left (`tables_left`, as
/// [`lattice_tables`] counts them). Call it under [`locked`].
pub(super) fn restore_if_last(tables_left: usize) -> anyhow::Result<()> {
    let path = saved_path()?;
    let saved = std::fs::read_to_string(&path).ok();
    if let Some(value) = restore_to(saved.as_deref(), tables_left) {
        write(IP_FORWARD, &value)?;
        std::fs::remove_file(&path).with_context(|| format!("removing {path}"))?;
        tracing::info!(value, "net.ipv4.ip_forward restored");
    }
    Ok(())
}

/// The value to restore `ip_forward` to: the saved one, once no table needs it.
pub fn restore_to(saved: Option<&str>, tables_left: usize) -> Option<String> {
    let value = saved?.trim();
    (tables_left == 0 && matches!(value, "0" | "1")).then(|| value.to_string())
}

/// The lattice tables in `nft list tables` output.
pub fn lattice_tables(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|t| t.starts_with("lattice_"))
        .collect()
}

fn read(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_string())
}

fn write(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_value_comes_back_with_the_last_table_only() {
        assert_eq!(restore_to(Some("0\n"), 0), Some("0".into()));
        assert_eq!(restore_to(Some("1"), 0), Some("1".into()));
        assert_eq!(
            restore_to(Some("0"), 1),
            None,
            "another cell still forwards"
        );
        assert_eq!(restore_to(None, 0), None, "nothing was changed");
        assert_eq!(restore_to(Some("garbage"), 0), None);
        let listing =
            "table inet lattice_lt0\ntable ip nat\ntable inet lattice_ltest3\ntable inet filter\n";
        assert_eq!(lattice_tables(listing), ["lattice_lt0", "lattice_ltest3"]);
    }
}
