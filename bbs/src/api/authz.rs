//! Who may do what through the public API: the pure decision [`api_authz`] from a
//! caller's role, the request's method and its route (axum's matched path, e.g.
//! `/v1/desired_lrps/{process_guid}`) to Allow or a Deny naming the role and what it
//! may not do. The middleware that applies it is `auth`'s.

use axum::http::Method;
use lattice_specs::receptor::ApiRole;

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
        ApiRole::Viewer if !is_read(method) => deny("change anything", "a developer or an admin"),
        ApiRole::Viewer if hidden_from_viewers(route) => {
            deny("read backup archives", "a developer or an admin")
        }
        ApiRole::Viewer => Decision::Allow,
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
    }
}
