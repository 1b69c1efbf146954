//! What a backup task's own credential may do to a repository: [`task_scope`], the
//! scope of the op of the task's RepositoryAction whose repository URL carries exactly
//! that credential and names exactly that repository, while the task is pending or
//! running. The URLs with a fresh credential are [`credential_repo_url`]'s.

use lattice_specs::models::{action, task, Action, Task};
use lattice_specs::repo::{RepoOp, RepoScope};

use crate::backup_tasks::TASK_CREDENTIAL_USER;

/// restic's prefix of a REST repository URL.
pub const REST_SCHEME: &str = "rest:";

/// `rest:BASE/v1/repos/REPO/` with a fresh credential of task `task_guid` in its
/// user information (`base` is the API's URL as cells reach it).
pub fn credential_repo_url(base: &str, repo: &str, task_guid: &str) -> String {
    let url = format!(
        "{}{}",
        base.trim_end_matches('/'),
        lattice_specs::repo::rest_path(repo)
    );
    format!(
        "{REST_SCHEME}{}",
        crate::backup_tasks::credential_url(&url, task_guid)
    )
}

/// Every RepositoryAction's (op, repository URL) in `a`, at any depth.
pub(crate) fn repository_actions<'a>(a: Option<&'a Action>, out: &mut Vec<(&'a str, &'a str)>) {
    use action::Action as A;
    let Some(a) = a.and_then(|a| a.action.as_ref()) else {
        return;
    };
    match a {
        A::Repository(r) => out.push((&r.op, &r.repository)),
        A::Download(_) | A::Upload(_) | A::Run(_) => {}
        A::Timeout(t) => repository_actions(t.action.as_deref(), out),
        A::EmitProgress(e) => repository_actions(e.action.as_deref(), out),
        A::Try(t) => repository_actions(t.action.as_deref(), out),
        A::Parallel(p) => p
            .actions
            .iter()
            .for_each(|a| repository_actions(Some(a), out)),
        A::Serial(s) => s
            .actions
            .iter()
            .for_each(|a| repository_actions(Some(a), out)),
        A::Codependent(c) => c
            .actions
            .iter()
            .for_each(|a| repository_actions(Some(a), out)),
    }
}

/// The scope the holder of `password` (a [`TASK_CREDENTIAL_USER`] credential) has on
/// repository `repo` through task `t`: only a live backup-domain task, one of whose
/// RepositoryActions uses exactly that credential on exactly that repository (the
/// widest of its ops' scopes when it has several). None: no access.
pub fn task_scope(t: &Task, repo: &str, password: &str) -> Option<RepoScope> {
    let live = matches!(t.state(), task::State::Pending | task::State::Running);
    if !live || t.domain != lattice_specs::backup::DOMAIN {
        return None;
    }
    let mut found = Vec::new();
    repository_actions(
        t.definition.as_ref().and_then(|d| d.action.as_ref()),
        &mut found,
    );
    let path = lattice_specs::repo::rest_path(repo);
    // Compared by hash: how long the comparison takes says nothing about the secret.
    let given = crate::db::secret_hash(password);
    found
        .iter()
        .filter(|(_, url)| {
            let Some(url) = url.strip_prefix(REST_SCHEME) else {
                return false;
            };
            reqwest::Url::parse(url).is_ok_and(|u| {
                u.username() == TASK_CREDENTIAL_USER
                    && u.path() == path
                    && u.password()
                        .is_some_and(|p| crate::db::secret_hash(p) == given)
            })
        })
        .filter_map(|(op, _)| RepoOp::parse(op).map(RepoOp::scope))
        .max_by_key(|s| matches!(s, RepoScope::Prune))
}

#[cfg(test)]
mod tests {
    use lattice_specs::backup::DOMAIN;
    use lattice_specs::models::{RepositoryAction, TaskDefinition};

    use super::*;

    fn task_with(op: &str, url: &str, state: task::State) -> Task {
        Task {
            task_guid: "backup-pg-1".into(),
            domain: DOMAIN.into(),
            state: state as i32,
            definition: Some(TaskDefinition {
                action: Some(lattice_specs::testing::serial(vec![Action {
                    action: Some(action::Action::Repository(RepositoryAction {
                        op: op.into(),
                        repository: url.into(),
                        path: "/data".into(),
                        ..Default::default()
                    })),
                }])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn password_of(url: &str) -> String {
        let u = reqwest::Url::parse(url.strip_prefix(REST_SCHEME).unwrap()).unwrap();
        u.password().unwrap().to_string()
    }

    #[test]
    fn a_task_credential_gets_its_ops_scope_on_its_own_repository_while_it_runs() {
        let url = credential_repo_url("https://10.0.0.1:8888/", "pg", "backup-pg-1");
        assert!(url.starts_with("rest:https://lattice-task:"), "{url}");
        assert!(url.ends_with("@10.0.0.1:8888/v1/repos/pg/"), "{url}");
        let pass = password_of(&url);
        assert_eq!(
            crate::backup_tasks::credential_task(&pass),
            Some("backup-pg-1")
        );
        let mut t = task_with("backup", &url, task::State::Running);
        assert_eq!(task_scope(&t, "pg", &pass), Some(RepoScope::Append));
        assert_eq!(task_scope(&t, "other", &pass), None, "another repository");
        assert_eq!(task_scope(&t, "pg", &format!("{pass}x")), None);
        let forget = task_with("forget", &url, task::State::Pending);
        assert_eq!(task_scope(&forget, "pg", &pass), Some(RepoScope::Prune));
        t.state = task::State::Completed as i32;
        assert_eq!(task_scope(&t, "pg", &pass), None, "expires with the task");
        let mut user = task_with("forget", &url, task::State::Running);
        user.domain = "apps".into();
        assert_eq!(task_scope(&user, "pg", &pass), None, "only backup tasks");
        let other = credential_repo_url("https://10.0.0.1:8888", "pg", "backup-pg-1");
        let t = task_with("backup", &other, task::State::Running);
        assert_eq!(
            task_scope(&t, "pg", &pass),
            None,
            "every URL has its own secret"
        );
    }
}
