//! Pure decisions of the REST server: which restic file a request names and where it
//! lies in a store (restic's local layout), and what a credential's scope allows
//! ([`allows`]).

use axum::http::Method;
use lattice_specs::repo::RepoScope;

/// A repository's file types (restic's REST protocol's `{type}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data,
    Keys,
    Locks,
    Snapshots,
    Index,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "data" => Kind::Data,
            "keys" => Kind::Keys,
            "locks" => Kind::Locks,
            "snapshots" => Kind::Snapshots,
            "index" => Kind::Index,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Keys => "keys",
            Kind::Locks => "locks",
            Kind::Snapshots => "snapshots",
            Kind::Index => "index",
        }
    }

    pub const ALL: [Kind; 5] = [
        Kind::Data,
        Kind::Keys,
        Kind::Locks,
        Kind::Snapshots,
        Kind::Index,
    ];
}

/// One file of a repository: its `config`, or a file of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File<'a> {
    Config,
    Named(Kind, &'a str),
}

/// A repository's name (a volume's): letters, digits, `-`, `_`, `.`, not starting
/// with `.`, at most 128.
pub fn check_repo(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "repository {name:?}: a volume's name (letters, digits, '-', '_', '.', not starting with '.')"
        ))
    }
}

/// A file's name: a restic id, 64 lowercase hex digits.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "file name {name:?}: restic names files by 64 lowercase hex digits"
        ))
    }
}

/// Where `file` of repository `repo` lies in a store: `REPO/config`, `REPO/TYPE/NAME`,
/// data in `REPO/data/XX/NAME` (XX: the name's first two digits), as restic's local
/// backend lays it out.
pub fn key(repo: &str, file: File) -> String {
    match file {
        File::Config => format!("{repo}/config"),
        File::Named(Kind::Data, name) => format!("{repo}/data/{}/{name}", &name[..2]),
        File::Named(kind, name) => format!("{repo}/{}/{name}", kind.as_str()),
    }
}

/// The prefix under which a repository's files of `kind` lie.
pub fn prefix(repo: &str, kind: Kind) -> String {
    format!("{repo}/{}/", kind.as_str())
}

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Read,
    Create,
    Delete,
}

impl Verb {
    pub fn of(method: &Method) -> Option<Verb> {
        match *method {
            Method::GET | Method::HEAD => Some(Verb::Read),
            Method::POST => Some(Verb::Create),
            Method::DELETE => Some(Verb::Delete),
            _ => None,
        }
    }
}

/// May a credential of `scope` do `verb` to a file of `kind` (None: the config or
/// the repository itself)? Append reads anything, creates (what does not exist yet:
/// nothing is ever overwritten, whatever the scope) and deletes only locks (its own,
/// refreshed, or stale ones, as rest-server's `--append-only` allows); Prune does
/// everything.
pub fn allows(scope: RepoScope, verb: Verb, kind: Option<Kind>) -> Result<(), String> {
    match (scope, verb, kind) {
        (RepoScope::Prune, _, _) => Ok(()),
        (RepoScope::Append, Verb::Read | Verb::Create, _) => Ok(()),
        (RepoScope::Append, Verb::Delete, Some(Kind::Locks)) => Ok(()),
        (RepoScope::Append, Verb::Delete, k) => Err(format!(
            "this credential may add to the repository but not delete from it ({}): only a forget task's may",
            k.map(Kind::as_str).unwrap_or("config")
        )),
    }
}

/// May a user (through the public API) submit work in `domain` whose actions are
/// `actions` (each with its field's name)? Not in the backup domain, and with no
/// repository action at any depth: those are the cluster's own backup tasks, whose
/// credentials reach its repositories. The refusal names the field.
pub fn check_user_work(
    domain: &str,
    actions: &[(&str, Option<&lattice_specs::models::Action>)],
) -> Result<(), String> {
    if domain == lattice_specs::backup::DOMAIN {
        return Err(format!(
            "domain: {domain} is the cluster's own backup domain (backups are made with `ltc backup create`): use another domain"
        ));
    }
    for (field, action) in actions {
        let mut found = Vec::new();
        super::grant::repository_actions(*action, &mut found);
        if !found.is_empty() {
            return Err(format!(
                "{field}: a repository action is for the cluster's own backup tasks: back volumes up with `ltc backup create`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f8a1c0d9e2b4a6f8c0e1d2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788766554433";

    #[test]
    fn append_adds_and_reads_but_deletes_only_locks_and_prune_does_all() {
        use RepoScope::*;
        for kind in [
            None,
            Some(Kind::Data),
            Some(Kind::Snapshots),
            Some(Kind::Locks),
        ] {
            assert_eq!(allows(Append, Verb::Read, kind), Ok(()));
            assert_eq!(allows(Append, Verb::Create, kind), Ok(()));
            assert_eq!(allows(Prune, Verb::Delete, kind), Ok(()));
        }
        assert_eq!(allows(Append, Verb::Delete, Some(Kind::Locks)), Ok(()));
        for kind in [
            None,
            Some(Kind::Data),
            Some(Kind::Snapshots),
            Some(Kind::Index),
            Some(Kind::Keys),
        ] {
            let why = allows(Append, Verb::Delete, kind).unwrap_err();
            assert!(why.contains("not delete"), "{why}");
        }
        assert_eq!(Verb::of(&Method::PUT), None);
        assert_eq!(Verb::of(&Method::HEAD), Some(Verb::Read));
    }

    #[test]
    fn users_submit_no_backup_domain_work_and_no_repository_action() {
        use lattice_specs::models::{action, RepositoryAction};
        use lattice_specs::testing::serial;
        let run = lattice_specs::models::Action {
            action: Some(action::Action::Run(Default::default())),
        };
        let repo = lattice_specs::models::Action {
            action: Some(action::Action::Repository(RepositoryAction::default())),
        };
        assert_eq!(check_user_work("apps", &[("action", Some(&run))]), Ok(()));
        assert_eq!(check_user_work("apps", &[("setup", None)]), Ok(()));
        let why =
            check_user_work(lattice_specs::backup::DOMAIN, &[("action", Some(&run))]).unwrap_err();
        assert!(why.starts_with("domain: "), "{why}");
        let nested = serial(vec![run.clone(), serial(vec![repo])]);
        let why = check_user_work(
            "apps",
            &[("action", Some(&run)), ("monitor", Some(&nested))],
        )
        .unwrap_err();
        assert!(why.starts_with("monitor: a repository action"), "{why}");
    }

    #[test]
    fn files_lie_as_restic_lays_out_a_local_repository() {
        assert_eq!(key("pg", File::Config), "pg/config");
        assert_eq!(
            key("pg", File::Named(Kind::Data, ID)),
            format!("pg/data/3f/{ID}")
        );
        assert_eq!(
            key("pg", File::Named(Kind::Keys, ID)),
            format!("pg/keys/{ID}")
        );
        assert_eq!(prefix("pg", Kind::Index), "pg/index/");
        assert!(check_name(ID).is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name(&ID.to_uppercase()).is_err());
        assert!(check_repo("pg-data_1").is_ok());
        for bad in ["", ".x", "a/b", "a b"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert_eq!(Kind::parse("password"), None);
    }
}
