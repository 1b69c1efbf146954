//! The TOML config file: one table per component, each key a flag of that component
//! (`memory_mb = 4096` under `[cell]` is `--memory-mb=4096`). Precedence: flags on the
//! command line, then the file, then `LATTICE_*` environment variables, then defaults.
//!
//! ```toml
//! [up]
//! domain = "apps.example"
//! [cell]
//! memory_mb = 4096
//! placement_tag = ["ssd", "eu"]
//! ```

use std::ffi::OsString;

use anyhow::Context;

/// The components a config file may configure.
pub const SECTIONS: [&str; 5] = ["up", "bbs", "brain", "cell", "router"];

/// The flags a section of the config file stands for.
pub fn section_args(config: &toml::Table, section: &str) -> anyhow::Result<Vec<OsString>> {
    let Some(table) = config.get(section) else {
        return Ok(vec![]);
    };
    let table = table
        .as_table()
        .with_context(|| format!("[{section}] must be a table of flags"))?;
    let mut args = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        let values = match value {
            toml::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => args.push(flag.clone().into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => args.push(format!("{flag}={s}").into()),
                toml::Value::Integer(i) => args.push(format!("{flag}={i}").into()),
                toml::Value::Float(f) => args.push(format!("{flag}={f}").into()),
                other => anyhow::bail!(
                    "[{section}] {key}: {} values are not flags; use a string, number, boolean or a list of them",
                    other.type_str()
                ),
            }
        }
    }
    Ok(args)
}

/// Reads `path` as a config file, checking every section is one we know.
pub fn load(path: &std::path::Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    for (k, v) in &table {
        anyhow::ensure!(
            SECTIONS.contains(&k.as_str()) && v.is_table(),
            "{}: unknown section [{k}]: sections are {}",
            path.display(),
            SECTIONS.map(|s| format!("[{s}]")).join(", ")
        );
    }
    Ok(table)
}

/// Takes `--config FILE` (or `--config=FILE`, or `LATTICE_CONFIG`) out of `args` and
/// puts the file's flags for the subcommand right after the subcommand's name, where
/// flags given on the command line (later) override them.
pub fn expand(mut args: Vec<OsString>) -> anyhow::Result<(Vec<OsString>, Option<toml::Table>)> {
    let mut path = std::env::var_os("LATTICE_CONFIG");
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().to_string();
        if a == "--config" {
            anyhow::ensure!(
                i + 1 < args.len(),
                "--config needs a file: --config lattice.toml"
            );
            path = Some(args.remove(i + 1));
            args.remove(i);
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.into());
            args.remove(i);
        } else {
            i += 1;
        }
    }
    let Some(path) = path else {
        return Ok((args, None));
    };
    let config = load(std::path::Path::new(&path))?;
    if let Some(pos) = args.iter().position(|a| SECTIONS.iter().any(|s| a == *s)) {
        let section = args[pos].to_string_lossy().to_string();
        let extra = section_args(&config, &section)
            .with_context(|| format!("in {}", std::path::Path::new(&path).display()))?;
        args.splice(pos + 1..pos + 1, extra);
    }
    Ok((args, Some(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn sections_become_flags() {
        let t: toml::Table = r#"
            [cell]
            memory_mb = 4096
            evacuate = true
            privileged_thing = false
            placement_tag = ["ssd", "eu"]
            zone = "z2"
        "#
        .parse()
        .unwrap();
        assert_eq!(
            section_args(&t, "cell").unwrap(),
            os(&[
                "--evacuate",
                "--memory-mb=4096",
                "--placement-tag=ssd",
                "--placement-tag=eu",
                "--zone=z2"
            ])
        );
        assert!(section_args(&t, "router").unwrap().is_empty());
        let bad: toml::Table = "[cell]\nx = { a = 1 }".parse().unwrap();
        assert!(section_args(&bad, "cell")
            .unwrap_err()
            .to_string()
            .contains("x: table values are not flags"));
    }

    #[test]
    fn config_flags_go_after_the_subcommand_before_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("l.toml");
        std::fs::write(&f, "[router]\ndomain = \"from.file\"\n").unwrap();
        let (args, cfg) = expand(os(&[
            "lattice",
            "--config",
            f.to_str().unwrap(),
            "router",
            "--domain",
            "from.flag",
        ]))
        .unwrap();
        assert!(cfg.is_some());
        assert_eq!(
            args,
            os(&[
                "lattice",
                "router",
                "--domain=from.file",
                "--domain",
                "from.flag"
            ])
        );
        std::fs::write(&f, "[nope]\na = 1\n").unwrap();
        let e = expand(os(&["lattice", "--config", f.to_str().unwrap(), "bbs"])).unwrap_err();
        assert!(e.to_string().contains("unknown section [nope]"), "{e}");
    }
}
