//! `ltc backup key export`: the cluster's backup key (every repository's password),
//! and how restic opens a volume's repository with it — where the store lies, or
//! through the API with an admin's token — for when the cluster is gone.

use clap::Subcommand;
use lattice_specs::repo::BackupKeyResponse;

use crate::api::Api;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Print the key and how to open a volume's repository with restic (admins only;
    /// the read is audited). Keep it apart from the backups: without it they cannot be
    /// read.
    Export {
        /// Print only the key (for `RESTIC_PASSWORD_FILE`).
        #[arg(long)]
        quiet: bool,
    },
}

/// What `export` prints: the key, then restic's commands for each store and the API.
pub fn instructions(k: &BackupKeyResponse) -> String {
    let mut out = format!("Backup key: {}\n\n", k.key);
    out.push_str("Every volume's backups are a restic repository opened with this key, e.g. (VOLUME: the volume's name):\n");
    out.push_str(&format!(
        "  echo '{}' > key.txt; chmod 600 key.txt\n",
        k.key
    ));
    for s in &k.stores {
        out.push_str(&format!(
            "  restic -r {} --password-file key.txt snapshots      # store {}, where it lies\n",
            s.restic, s.name
        ));
    }
    out.push_str(&format!(
        "  restic -r {} --password-file key.txt snapshots      # through the API: put ADMIN:TOKEN@ after the scheme (an admin's API token)\n",
        k.rest
    ));
    out.push_str("  restic -r … --password-file key.txt restore SNAPSHOT --target DIR\n");
    out
}

pub async fn run(api: &Api, cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Export { quiet } => {
            let k = api.backup_key().await?;
            if quiet {
                println!("{}", k.key);
            } else {
                print!("{}", instructions(&k));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use lattice_specs::repo::BackupStoreInfo;

    use super::*;

    #[test]
    fn the_export_says_how_restic_opens_each_store() {
        let k = BackupKeyResponse {
            key: "ab".repeat(32),
            stores: vec![BackupStoreInfo {
                name: "default".into(),
                restic: "/var/lib/lattice/blobs/restic/VOLUME".into(),
            }],
            rest: "rest:https://10.0.0.1:8888/v1/repos/VOLUME/".into(),
        };
        let text = instructions(&k);
        assert!(text.contains(&"ab".repeat(32)), "{text}");
        assert!(
            text.contains(
                "restic -r /var/lib/lattice/blobs/restic/VOLUME --password-file key.txt snapshots"
            ),
            "{text}"
        );
        assert!(
            text.contains("rest:https://10.0.0.1:8888/v1/repos/VOLUME/"),
            "{text}"
        );
    }
}
