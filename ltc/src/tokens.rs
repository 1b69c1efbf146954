//! `ltc token create|list|revoke` (an admin manages the API's tokens) and `ltc login`
//! (this ltc uses a token from now on).

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::Subcommand;
use lattice_specs::receptor::{ApiRole, TokenResponse};

use crate::api::Api;
use crate::{show, target};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a token and print it (the only time it is shown: the API keeps its hash).
    Create {
        /// Who or what holds it (shown in audit lines): ci-deploy, alice@laptop…
        name: String,
        /// admin, developer (apps, tasks, volumes, backups; no cluster settings) or
        /// viewer (reads, secrets hidden).
        #[arg(long, value_parser = parse_role)]
        role: ApiRole,
    },
    /// The tokens: name, role and age (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: its holder is refused from now on.
    Revoke { name: String },
}

fn parse_role(s: &str) -> Result<ApiRole, String> {
    s.parse()
}

/// The `ltc token list` table.
pub fn table(tokens: &[TokenResponse], now: i64) -> String {
    if tokens.is_empty() {
        return "No tokens yet: `ltc token create NAME --role ROLE` makes one.\n".into();
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| vec![t.name.clone(), t.role.clone(), show::age(t.created_at, now)])
        .collect();
    show::table(&["NAME", "ROLE", "AGE"], &rows)
}

pub async fn run(api: &Api, cmd: TokenCmd, now: i64) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let t = api.create_token(&name, role.as_str()).await?;
            println!("Token {} ({}):\n\n  {}\n", t.name, t.role, t.token);
            println!("Shown this once: give it to its holder, who runs `ltc login --token TOKEN`.");
        }
        TokenCmd::List { json } => {
            let all = api.tokens().await?;
            if json {
                show::json(&all)?;
            } else {
                print!("{}", table(&all, now));
            }
        }
        TokenCmd::Revoke { name } => {
            api.revoke_token(&name).await?;
            println!("Revoked token {name}.");
        }
    }
    Ok(())
}

/// The token given, else read from `file`, else from standard input.
fn read_token(token: Option<String>, file: Option<std::path::PathBuf>) -> anyhow::Result<String> {
    let token = match (token, file) {
        (Some(t), _) => t,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .with_context(|| format!("reading the token from {}", f.display()))?,
        (None, None) => {
            if std::io::stdin().is_terminal() {
                eprint!("API token: ");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line
        }
    };
    let token = token.trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "no token given: `ltc login --token TOKEN` (an admin makes one with `ltc token create NAME --role ROLE`)"
    );
    Ok(token)
}

/// `ltc login`: checks the token against the target and saves it with it.
pub async fn login(token: Option<String>, file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let mut t = target::load()?;
    t.token = Some(read_token(token, file)?);
    let api = Api::new(t.clone())?;
    api.version().await.context("checking the token")?;
    let path = target::save(&t)?;
    println!(
        "Logged in to {} with the token. Saved in {}.",
        t.api,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_list_without_secrets() {
        let now = 100 * 1_000_000_000;
        let t = TokenResponse {
            name: "ci".into(),
            role: "developer".into(),
            created_at: 40 * 1_000_000_000,
            token: String::new(),
        };
        let out = table(&[t], now);
        assert!(out.starts_with("NAME"), "{out}");
        assert!(out.contains("ci    developer  1m0s"), "{out}");
        assert!(table(&[], now).contains("ltc token create"));
        assert!(parse_role("owner")
            .unwrap_err()
            .contains("admin, developer or viewer"));
    }

    #[test]
    fn a_token_is_read_trimmed_from_the_flag_or_a_file() {
        assert_eq!(read_token(Some(" lat_x \n".into()), None).unwrap(), "lat_x");
        let dir = std::env::temp_dir().join(format!("ltc-token-{}", std::process::id()));
        std::fs::write(&dir, "lat_y\n").unwrap();
        assert_eq!(read_token(None, Some(dir.clone())).unwrap(), "lat_y");
        std::fs::remove_file(&dir).unwrap();
        assert!(read_token(Some("  ".into()), None).is_err());
    }
}
