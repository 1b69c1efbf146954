//! Who may do what through the public API, as pure decisions:
//! - [`api_authz`]: from a caller's role, the request's method and its route (axum's
//!   matched path, e.g. `/v1/desired_lrps/{process_guid}`) to Allow or a Deny naming
//!   the role and what it may not do; a session inside running work (`ltc ssh`: the
//!   exec and port-forward routes, GETs that upgrade to a WebSocket) counts as a change;
//! - [`owner_authz`]: whether a developer token may act on one app, task, volume,
//!   backup or backup schedule ([`Object`], found from the route by [`object_of`]): only
//!   on what it owns (`db::owners`); a backup also belongs to its volume's owner, a
//!   backup schedule to its volume's. Admins act on everything.
//!
//! The middleware that applies them is `auth`'s; `owners` looks the owners up.

use std::collections::HashMap;

use axum::http::Method;
use lattice_specs::receptor::ApiRole;

use crate::db::{OwnedKind, Owner};

/// The decision about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Why not, as the 403's message says it.
    Deny(String),
}

/// Methods that change nothing.
pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::OPTIONS
}

/// What only an admin may do (cluster settings, tokens, destroying backups), as the
/// refusal says it; None: a developer may.
fn admin_only(method: &Method, route: &str) -> Option<&'static str> {
    let read = is_read(method);
    match route {
        r if r.starts_with("/v1/tokens") => Some("manage API tokens"),
        "/v1/domains/{domain}" if !read => Some("change cluster settings (domains)"),
        "/v1/backups/{id}" | "/v1/blobs/{name}" if method == Method::DELETE => {
            Some("delete backups or blobs")
        }
        r if r.starts_with("/v1/repos/") => Some("open backup repositories (restic)"),
        "/v1/backup_key" => Some("read the cluster's backup key"),
        "/v1/logs" if !read => {
            Some("post log lines (routers and components do, with an admin credential)")
        }
        _ => None,
    }
}

/// What a viewer may not read: the archives themselves (a volume's data, secrets
/// included).
fn hidden_from_viewers(route: &str) -> bool {
    route == "/v1/blobs/{name}"
}

/// The routes that open a session inside an instance or a running Task (exec and
/// port forward): GETs, since they upgrade to a WebSocket, that act like changes.
pub fn is_session(route: &str) -> bool {
    use lattice_specs::exec::{API_LRP_EXEC, API_LRP_FORWARD, API_TASK_EXEC, API_TASK_FORWARD};
    [
        API_LRP_EXEC,
        API_LRP_FORWARD,
        API_TASK_EXEC,
        API_TASK_FORWARD,
    ]
    .contains(&route)
}

/// May a caller with `role` make this request? `route` is None when no route matched
/// (the API's 404 answers it).
pub fn api_authz(role: ApiRole, method: &Method, route: Option<&str>) -> Decision {
    let Some(route) = route else {
        return Decision::Allow;
    };
    let deny = |what: &str, needs: &str| {
        Decision::Deny(format!(
            "a {role} token may not {what} ({method} {route}): that needs {needs} token"
        ))
    };
    if let Some(what) = admin_only(method, route) {
        return match role {
            ApiRole::Admin => Decision::Allow,
            _ => deny(what, "an admin"),
        };
    }
    match role {
        ApiRole::Admin | ApiRole::Developer => Decision::Allow,
        ApiRole::Viewer if is_session(route) => deny(
            "open a session inside running work (ssh, port forward)",
            "a developer or an admin",
        ),
        ApiRole::Viewer if !is_read(method) => deny("change anything", "a developer or an admin"),
        ApiRole::Viewer if hidden_from_viewers(route) => {
            deny("read backup archives", "a developer or an admin")
        }
        ApiRole::Viewer => Decision::Allow,
    }
}

/// One object a request acts on, whose owner decides whether a developer may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    App(String),
    Task(String),
    Volume(String),
    Backup(String),
    /// A volume's backup schedule: its volume's owner's.
    BackupSchedule(String),
    /// A schedule by name (a backup schedule also belongs to its volume's owner).
    Schedule(String),
}

impl Object {
    /// The record that says who owns it (a backup schedule's is its volume's).
    pub fn owned(&self) -> (OwnedKind, &str) {
        match self {
            Object::App(n) => (OwnedKind::App, n),
            Object::Task(n) => (OwnedKind::Task, n),
            Object::Volume(n) | Object::BackupSchedule(n) => (OwnedKind::Volume, n),
            Object::Backup(n) => (OwnedKind::Backup, n),
            Object::Schedule(n) => (OwnedKind::Schedule, n),
        }
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::BackupSchedule(v) => write!(f, "the backup schedule of volume {v}"),
            other => {
                let (kind, name) = other.owned();
                write!(f, "{} {name}", kind.as_str())
            }
        }
    }
}

/// The object a request acts on, from its route and path parameters: every change to
/// an app (its instances, its generations…), a task, a volume, a backup or a schedule,
/// any session inside an app's instance or a task ([`is_session`]), and any use of a
/// backup's archive (`/v1/blobs/backup-ID.tgz`, read or written).
/// None: the request acts on no one's object (creations are checked by their handlers,
/// reads are redacted instead).
pub fn object_of(method: &Method, route: &str, params: &HashMap<String, String>) -> Option<Object> {
    let param = |k: &str| params.get(k).cloned();
    let under = |prefix: &str| route == prefix || route.starts_with(&format!("{prefix}/"));
    if route == "/v1/blobs/{name}" {
        let name = param("name")?;
        let id = name.strip_prefix("backup-")?.strip_suffix(".tgz")?;
        return Some(Object::Backup(id.to_string()));
    }
    if is_read(method) && !is_session(route) {
        return None;
    }
    if under("/v1/desired_lrps/{process_guid}")
        || under("/v1/actual_lrps/{process_guid}/index/{index}")
    {
        return param("process_guid").map(Object::App);
    }
    if under("/v1/tasks/{task_guid}") {
        return param("task_guid").map(Object::Task);
    }
    if route == "/v1/volumes/{name}" {
        return param("name").map(Object::Volume);
    }
    if route == "/v1/backup_schedules/{volume}" {
        return param("volume").map(Object::BackupSchedule);
    }
    if under("/v1/schedules/{name}") {
        return param("name").map(Object::Schedule);
    }
    if under("/v1/backups/{id}") {
        return param("id").map(Object::Backup);
    }
    None
}

/// What a request does to its object, as a refusal says it.
pub fn verb_of(method: &Method, route: &str) -> &'static str {
    let last = route.rsplit('/').next().unwrap_or_default();
    match (method.as_str(), last) {
        (_, "exec") if is_session(route) => "open a session in",
        (_, "forward") if is_session(route) => "forward a port into",
        ("GET" | "HEAD", _) => "read",
        ("DELETE", "{index}") => "stop an instance of",
        ("DELETE", _) => "delete",
        (_, "{name}") if route.starts_with("/v1/blobs") => "write",
        ("PUT", "{name}") => "grow",
        ("PUT", "{volume}") => "set",
        ("PUT", _) => "change",
        (_, "cancel") => "cancel",
        (_, "restore") => "restore",
        (_, "verify") => "verify",
        (_, "rollback") => "roll back",
        (_, "promote") => "promote",
        (_, "pause") => "pause",
        (_, "resume") => "resume",
        (_, "generations") => "update",
        _ => "change",
    }
}

/// Who may act on one object: its owner and, for a backup, its volume's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub owner: Owner,
    pub volume_owner: Option<Owner>,
}

/// May token `caller` (with `role`) `verb` `object`, owned by `owners`? Admins may act
/// on everything; a developer only on what its token owns; a viewer on nothing (as
/// [`api_authz`] already said).
pub fn owner_authz(
    caller: &str,
    role: ApiRole,
    verb: &str,
    object: &Object,
    owners: &Owners,
) -> Decision {
    let mine = |o: &Owner| !o.is_admins() && o.token == caller;
    match role {
        ApiRole::Admin => Decision::Allow,
        ApiRole::Developer
            if mine(&owners.owner) || owners.volume_owner.as_ref().is_some_and(mine) =>
        {
            Decision::Allow
        }
        _ => {
            let owner = &owners.owner;
            let ask = if owner.is_admins() {
                "an admin".to_string()
            } else {
                format!("{owner} or an admin")
            };
            Decision::Deny(format!(
                "token {caller} may not {verb} {object}: it belongs to {owner} (ask {ask})"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApiRole::*;

    fn allowed(role: ApiRole, method: Method, route: &str) -> bool {
        api_authz(role, &method, Some(route)) == Decision::Allow
    }

    #[test]
    fn the_decision_table() {
        let get = Method::GET;
        let (post, put, delete) = (Method::POST, Method::PUT, Method::DELETE);
        // (method, route, admin, developer, viewer)
        let table: &[(&Method, &str, bool, bool, bool)] = &[
            (&get, "/v1/desired_lrps", true, true, true),
            (&post, "/v1/desired_lrps", true, true, false),
            (&put, "/v1/desired_lrps/{process_guid}", true, true, false),
            (
                &delete,
                "/v1/desired_lrps/{process_guid}",
                true,
                true,
                false,
            ),
            (
                &delete,
                "/v1/actual_lrps/{process_guid}/index/{index}",
                true,
                true,
                false,
            ),
            (
                &post,
                "/v1/desired_lrps/{process_guid}/generations",
                true,
                true,
                false,
            ),
            (
                &get,
                "/v1/desired_lrps/{process_guid}/generations",
                true,
                true,
                true,
            ),
            (
                &post,
                "/v1/desired_lrps/{process_guid}/rollback",
                true,
                true,
                false,
            ),
            (
                &post,
                "/v1/desired_lrps/{process_guid}/promote",
                true,
                true,
                false,
            ),
            (&post, "/v1/tasks", true, true, false),
            (&get, "/v1/tasks/{task_guid}", true, true, true),
            (&get, "/v1/events", true, true, true),
            (&get, "/v1/domains", true, true, true),
            (&put, "/v1/domains/{domain}", true, false, false),
            (&post, "/v1/volumes", true, true, false),
            (&post, "/v1/backups", true, true, false),
            (&post, "/v1/backups/{id}/restore", true, true, false),
            (&put, "/v1/backup_schedules/{volume}", true, true, false),
            (&get, "/v1/schedules", true, true, true),
            (&post, "/v1/schedules", true, true, false),
            (&post, "/v1/schedules/{name}/pause", true, true, false),
            (&delete, "/v1/schedules/{name}", true, true, false),
            (&get, "/v1/backups/{id}", true, true, true),
            (&delete, "/v1/backups/{id}", true, false, false),
            (&get, "/v1/blobs", true, true, true),
            (&get, "/v1/blobs/{name}", true, true, false),
            (&put, "/v1/blobs/{name}", true, true, false),
            (&delete, "/v1/blobs/{name}", true, false, false),
            (&get, "/v1/tokens", true, false, false),
            (&post, "/v1/tokens", true, false, false),
            (&delete, "/v1/tokens/{name}", true, false, false),
            (&post, "/v1/logs", true, false, false),
            (&get, "/v1/logs/{log_guid}", true, true, true),
            (&get, lattice_specs::exec::API_LRP_EXEC, true, true, false),
            (
                &get,
                lattice_specs::exec::API_LRP_FORWARD,
                true,
                true,
                false,
            ),
            (&get, lattice_specs::exec::API_TASK_EXEC, true, true, false),
            (
                &get,
                lattice_specs::exec::API_TASK_FORWARD,
                true,
                true,
                false,
            ),
        ];
        for (m, route, admin, dev, viewer) in table {
            let got = (
                allowed(Admin, (*m).clone(), route),
                allowed(Developer, (*m).clone(), route),
                allowed(Viewer, (*m).clone(), route),
            );
            assert_eq!(got, (*admin, *dev, *viewer), "{m} {route}");
        }
        assert_eq!(api_authz(Viewer, &Method::POST, None), Decision::Allow);
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_change_to_an_owned_object_names_it() {
        let web = params(&[("process_guid", "web"), ("index", "0")]);
        let app = Some(Object::App("web".into()));
        for (m, route) in [
            (Method::PUT, "/v1/desired_lrps/{process_guid}"),
            (Method::DELETE, "/v1/desired_lrps/{process_guid}"),
            (Method::POST, "/v1/desired_lrps/{process_guid}/generations"),
            (Method::POST, "/v1/desired_lrps/{process_guid}/rollback"),
            (Method::POST, "/v1/desired_lrps/{process_guid}/promote"),
            (
                Method::DELETE,
                "/v1/actual_lrps/{process_guid}/index/{index}",
            ),
        ] {
            assert_eq!(object_of(&m, route, &web), app, "{m} {route}");
        }
        assert_eq!(
            object_of(&Method::GET, "/v1/desired_lrps/{process_guid}", &web),
            None,
            "reads are redacted, not refused"
        );
        assert_eq!(
            object_of(&Method::POST, "/v1/desired_lrps", &params(&[])),
            None
        );
        // A session inside an instance is the app's, though it is a GET.
        for route in [
            lattice_specs::exec::API_LRP_EXEC,
            lattice_specs::exec::API_LRP_FORWARD,
        ] {
            assert_eq!(object_of(&Method::GET, route, &web), app, "{route}");
        }
        let t = params(&[("task_guid", "t1")]);
        assert_eq!(
            object_of(&Method::POST, "/v1/tasks/{task_guid}/cancel", &t),
            Some(Object::Task("t1".into()))
        );
        for route in [
            lattice_specs::exec::API_TASK_EXEC,
            lattice_specs::exec::API_TASK_FORWARD,
        ] {
            assert_eq!(
                object_of(&Method::GET, route, &t),
                Some(Object::Task("t1".into())),
                "{route}"
            );
        }
        let v = params(&[("name", "pg"), ("volume", "pg")]);
        assert_eq!(
            object_of(&Method::PUT, "/v1/volumes/{name}", &v),
            Some(Object::Volume("pg".into()))
        );
        assert_eq!(
            object_of(&Method::DELETE, "/v1/backup_schedules/{volume}", &v),
            Some(Object::BackupSchedule("pg".into()))
        );
        for route in ["/v1/schedules/{name}", "/v1/schedules/{name}/pause"] {
            let m = if route.ends_with("pause") {
                Method::POST
            } else {
                Method::DELETE
            };
            assert_eq!(
                object_of(&m, route, &v),
                Some(Object::Schedule("pg".into()))
            );
        }
        assert_eq!(object_of(&Method::GET, "/v1/schedules/{name}", &v), None);
        let b = params(&[("id", "b1")]);
        assert_eq!(
            object_of(&Method::POST, "/v1/backups/{id}/restore", &b),
            Some(Object::Backup("b1".into()))
        );
        assert_eq!(
            object_of(&Method::POST, "/v1/backups/import", &params(&[])),
            None
        );
        // A backup's archive, read or written, is the backup's; other blobs nobody's.
        for m in [Method::GET, Method::PUT] {
            let archive = params(&[("name", "backup-b1.tgz")]);
            assert_eq!(
                object_of(&m, "/v1/blobs/{name}", &archive),
                Some(Object::Backup("b1".into()))
            );
            let file = params(&[("name", "app.tgz")]);
            assert_eq!(object_of(&m, "/v1/blobs/{name}", &file), None);
        }
    }

    #[test]
    fn verbs_read_well_in_a_refusal() {
        let cases = [
            (Method::DELETE, "/v1/desired_lrps/{process_guid}", "delete"),
            (Method::PUT, "/v1/desired_lrps/{process_guid}", "change"),
            (
                Method::POST,
                "/v1/desired_lrps/{process_guid}/generations",
                "update",
            ),
            (
                Method::POST,
                "/v1/desired_lrps/{process_guid}/rollback",
                "roll back",
            ),
            (
                Method::DELETE,
                "/v1/actual_lrps/{process_guid}/index/{index}",
                "stop an instance of",
            ),
            (Method::POST, "/v1/tasks/{task_guid}/cancel", "cancel"),
            (Method::PUT, "/v1/volumes/{name}", "grow"),
            (Method::PUT, "/v1/backup_schedules/{volume}", "set"),
            (Method::PUT, "/v1/blobs/{name}", "write"),
            (Method::GET, "/v1/blobs/{name}", "read"),
            (Method::POST, "/v1/backups/{id}/verify", "verify"),
            (
                Method::GET,
                lattice_specs::exec::API_LRP_EXEC,
                "open a session in",
            ),
            (
                Method::GET,
                lattice_specs::exec::API_TASK_FORWARD,
                "forward a port into",
            ),
        ];
        for (m, route, want) in cases {
            assert_eq!(verb_of(&m, route), want, "{m} {route}");
        }
    }

    #[test]
    fn a_developer_acts_only_on_what_it_owns() {
        let owned_by = |token: &str| Owners {
            owner: if token.is_empty() {
                Owner::admins()
            } else {
                Owner::token(token)
            },
            volume_owner: None,
        };
        let web = Object::App("web".into());
        let decide = |who, role, owners: &Owners| owner_authz(who, role, "delete", &web, owners);
        assert_eq!(
            decide("dev-a", Developer, &owned_by("dev-a")),
            Decision::Allow
        );
        assert_eq!(decide("ada", Admin, &owned_by("dev-a")), Decision::Allow);
        assert_eq!(
            decide("dev-b", Developer, &owned_by("dev-a")),
            Decision::Deny(
                "token dev-b may not delete app web: it belongs to dev-a (ask dev-a or an admin)"
                    .into()
            )
        );
        let Decision::Deny(why) = decide("admin", Developer, &owned_by("")) else {
            panic!("a developer token named admin acted on the admins' app")
        };
        assert!(
            why.contains("it belongs to the admins (ask an admin)"),
            "{why}"
        );
        assert!(matches!(
            decide("dev-a", Viewer, &owned_by("dev-a")),
            Decision::Deny(_)
        ));
        // A backup is also its volume's owner's.
        let backup = Object::Backup("b1".into());
        let of_volume = Owners {
            owner: Owner::admins(),
            volume_owner: Some(Owner::token("dev-a")),
        };
        assert_eq!(
            owner_authz("dev-a", Developer, "restore", &backup, &of_volume),
            Decision::Allow
        );
        let Decision::Deny(why) = owner_authz(
            "dev-b",
            Developer,
            "set",
            &Object::BackupSchedule("pg".into()),
            &owned_by("dev-a"),
        ) else {
            panic!("dev-b set dev-a's schedule")
        };
        assert!(
            why.starts_with("token dev-b may not set the backup schedule of volume pg"),
            "{why}"
        );
    }

    #[test]
    fn a_refusal_names_the_role_the_request_and_what_it_needs() {
        let Decision::Deny(why) = api_authz(
            Viewer,
            &Method::PUT,
            Some("/v1/desired_lrps/{process_guid}"),
        ) else {
            panic!("a viewer scaled")
        };
        assert!(
            why.contains("a viewer token may not change anything"),
            "{why}"
        );
        assert!(why.contains("PUT /v1/desired_lrps/{process_guid}"), "{why}");
        assert!(why.contains("a developer or an admin"), "{why}");
        let Decision::Deny(why) = api_authz(Developer, &Method::PUT, Some("/v1/domains/{domain}"))
        else {
            panic!("a developer changed a domain")
        };
        assert!(
            why.contains("developer token may not change cluster settings"),
            "{why}"
        );
        assert!(why.contains("needs an admin token"), "{why}");
        let Decision::Deny(why) = api_authz(
            Viewer,
            &Method::GET,
            Some(lattice_specs::exec::API_LRP_EXEC),
        ) else {
            panic!("a viewer opened a shell")
        };
        assert!(
            why.starts_with("a viewer token may not open a session inside running work"),
            "{why}"
        );
    }
}
