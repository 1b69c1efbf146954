//! Ownership at the public API (the I/O around `authz`'s pure [`owner_authz`]): who
//! owns the object a request acts on ([`ensure_may_act`], which the `auth` middleware
//! calls for every route `authz::object_of` names and handlers call for the objects a
//! body names), the database view whose creations belong to the caller ([`db_for`]:
//! the owner is recorded in the creating transaction), and hiding
//! the secrets of objects a developer does not own in what it reads
//! ([`redact_unowned`], [`hide_event`]).

use std::collections::HashMap;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::VolumeMount;
use lattice_specs::receptor::{ApiRole, EventPayload};
use serde_json::Value;

use super::authz::{owner_authz, Decision, Object, Owners};
use super::{redact, ApiError, ApiResult, ApiState, Caller};
use crate::db::{Db, DbError, OwnedKind, Owner};

/// The owner of what `caller` makes: its token's when a developer, else the admins'.
pub fn owner_of_new(caller: &Caller) -> Owner {
    match caller.role {
        Some(ApiRole::Developer) => Owner::token(&caller.name),
        _ => Owner::admins(),
    }
}

/// The owners of `kind`'s objects by name, as answers show them (a developer token's
/// name; the admins' are not listed).
pub async fn owner_names(s: &ApiState, kind: OwnedKind) -> ApiResult<HashMap<String, String>> {
    let all =
        s.db.owners(kind)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(all
        .into_iter()
        .filter(|(_, o)| !o.is_admins())
        .map(|(name, o)| (name, o.token))
        .collect())
}

/// The owner of one object as answers show it (empty: the admins').
pub async fn owner_name(s: &ApiState, kind: OwnedKind, name: &str) -> ApiResult<String> {
    let o =
        s.db.owner(kind, name)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(o.map(|o| o.token).unwrap_or_default())
}

/// `db` as `caller` creates through: what it makes is the caller's.
pub fn db_for(caller: &Caller, db: &Db) -> Db {
    db.created_by(owner_of_new(caller))
}

/// Whether `name` of `kind` exists (an object without an owner record may).
async fn exists(db: &Db, kind: OwnedKind, name: &str) -> Result<bool, DbError> {
    let found = match kind {
        OwnedKind::App => db.desired_lrp(name).await.map(drop),
        OwnedKind::Task => db.task(name).await.map(drop),
        OwnedKind::Volume => db.volume(name).await.map(drop),
        OwnedKind::Backup => db.backup(name).await.map(drop),
        OwnedKind::Schedule => db.schedule(name).await.map(drop),
    };
    match found {
        Ok(()) => Ok(true),
        Err(DbError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The recorded owner of `name`, the admins when it exists without a record, None
/// when there is no such object.
async fn owner(db: &Db, kind: OwnedKind, name: &str) -> Result<Option<Owner>, DbError> {
    if let Some(o) = db.owner(kind, name).await? {
        return Ok(Some(o));
    }
    Ok(exists(db, kind, name).await?.then(Owner::admins))
}

/// Who may act on `object`; None when it does not exist (its handler says so).
async fn owners(db: &Db, object: &Object) -> Result<Option<Owners>, DbError> {
    let (kind, name) = object.owned();
    let Some(main) = owner(db, kind, name).await? else {
        return Ok(None);
    };
    let volume_owner = match object {
        Object::Backup(id) => match db.backup(id).await {
            Ok(b) => owner(db, OwnedKind::Volume, &b.volume).await?,
            Err(DbError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        // A backup schedule is its volume's owner's too.
        Object::Schedule(name) => match db.schedule(name).await {
            Ok(s) if !s.volume.is_empty() => owner(db, OwnedKind::Volume, &s.volume).await?,
            Ok(_) | Err(DbError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(Some(Owners {
        owner: main,
        volume_owner,
    }))
}

/// Refuses (403 naming the owner) unless `caller` may `verb` `object`: admins and
/// tasks' scoped credentials always may; a developer when it owns the object. An
/// object that does not exist passes (its handler answers 404). Routes that act on an
/// existing object are checked by the `auth` middleware already (every route under
/// `/v1/desired_lrps/{process_guid}` included); handlers call this for the objects
/// their bodies name.
pub async fn ensure_may_act(
    s: &ApiState,
    caller: &Caller,
    verb: &str,
    object: &Object,
) -> ApiResult<()> {
    let Some(role) = caller.role.filter(|r| *r != ApiRole::Admin) else {
        return Ok(());
    };
    let Some(owners) = owners(&s.db, object)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?
    else {
        return Ok(());
    };
    match owner_authz(&caller.name, role, verb, object, &owners) {
        Decision::Allow => Ok(()),
        Decision::Deny(why) => {
            crate::metrics::API_NOT_OWNER
                .with_label_values(&[object.owned().0.as_str()])
                .inc();
            tracing::info!(token = %caller.name, %object, "refused: not the owner");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorName::Forbidden,
                why,
            ))
        }
    }
}

/// [`ensure_may_act`] for every volume `mounts` names (mounting one uses its data).
pub async fn ensure_may_mount(
    s: &ApiState,
    caller: &Caller,
    mounts: &[VolumeMount],
) -> ApiResult<()> {
    for m in mounts.iter().filter(|m| m.scratch_bytes == 0) {
        ensure_may_act(s, caller, "mount", &Object::Volume(m.volume.clone())).await?;
    }
    Ok(())
}

/// Which objects a read route answers with, and the field naming each: apps under
/// `/v1/desired_lrps` (their definitions carry environments), tasks under `/v1/tasks`.
fn read_kind(route: &str) -> Option<(OwnedKind, &'static str)> {
    if route.starts_with("/v1/desired_lrps") {
        Some((OwnedKind::App, "process_guid"))
    } else if route.starts_with("/v1/tasks") {
        Some((OwnedKind::Task, "task_guid"))
    } else {
        None
    }
}

/// Hides, in `v`, the secrets of every object `mine` does not say is the caller's:
/// the whole answer when `whole` names its object (e.g. an app's generations), else
/// each item of a list (or the one object) by its `field`.
fn hide_unowned(v: &mut Value, field: &str, whole: Option<&str>, mine: &dyn Fn(&str) -> bool) {
    let name_of = |item: &Value| item.get(field).and_then(Value::as_str).map(str::to_string);
    if let Some(name) = whole {
        if !mine(name) {
            redact::redact(v);
        }
        return;
    }
    let items: Vec<&mut Value> = match v {
        Value::Array(items) => items.iter_mut().collect(),
        one => vec![one],
    };
    for item in items {
        if !name_of(item).is_some_and(|n| mine(&n)) {
            redact::redact(item);
        }
    }
}

/// A developer's answer to a read, with the secrets of apps and tasks it does not own
/// hidden as for a viewer. `params` are the route's path parameters.
pub async fn redact_unowned(
    s: &ApiState,
    caller: &Caller,
    route: &str,
    params: &HashMap<String, String>,
    resp: Response,
) -> Response {
    let Some((kind, field)) = read_kind(route) else {
        return resp;
    };
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || !resp.status().is_success() {
        return resp;
    }
    let owners = match s.db.owners(kind).await {
        Ok(o) => o,
        Err(e) => return ApiError::from_db(e, ErrorName::InvalidRequest).into_response(),
    };
    let mine = |name: &str| {
        owners
            .get(name)
            .is_some_and(|o| !o.is_admins() && o.token == caller.name)
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::unknown("reading the answer to redact it failed").into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return ApiError::unknown("the answer could not be redacted").into_response();
    };
    let whole = params.get(field).map(String::as_str);
    hide_unowned(&mut v, field, whole, &mine);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

/// The app or task an event shows the definition of (other events carry no secrets).
fn event_object(e: &EventPayload) -> Option<(OwnedKind, &str)> {
    match e {
        EventPayload::DesiredLrp { desired_lrp } => {
            Some((OwnedKind::App, &desired_lrp.request.process_guid))
        }
        EventPayload::DesiredLrpChanged {
            desired_lrp_after, ..
        } => Some((OwnedKind::App, &desired_lrp_after.request.process_guid)),
        EventPayload::Task { task } => Some((OwnedKind::Task, &task.request.task_guid)),
        EventPayload::TaskChanged { task_after, .. } => {
            Some((OwnedKind::Task, &task_after.request.task_guid))
        }
        _ => None,
    }
}

/// Whether `caller` (a developer) sees event `e` redacted: it shows an app or task
/// the caller does not own.
pub async fn hide_event(db: &Db, caller: &Caller, e: &EventPayload) -> bool {
    let Some((kind, name)) = event_object(e) else {
        return false;
    };
    match db.owner(kind, name).await {
        Ok(Some(o)) => o.is_admins() || o.token != caller.name,
        Ok(None) | Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_the_caller_owns_keeps_its_secrets() {
        let mine = |n: &str| n == "mine";
        let app = |guid: &str| json!({"process_guid": guid, "env": [{"name": "K", "value": "v"}]});
        let mut list = json!([app("mine"), app("theirs"), {"env": [{"name": "K", "value": "v"}]}]);
        hide_unowned(&mut list, "process_guid", None, &mine);
        assert_eq!(list[0]["env"][0]["value"], "v");
        assert_eq!(list[1]["env"][0]["value"], redact::HIDDEN);
        assert_eq!(
            list[2]["env"][0]["value"],
            redact::HIDDEN,
            "no name: hidden"
        );
        let mut one = app("theirs");
        hide_unowned(&mut one, "process_guid", None, &mine);
        assert_eq!(one["env"][0]["value"], redact::HIDDEN);
        // An answer about one object (its generations): judged by that object.
        let mut history = json!([{"generation": 1, "env": [{"name": "K", "value": "v"}]}]);
        hide_unowned(&mut history, "process_guid", Some("mine"), &mine);
        assert_eq!(history[0]["env"][0]["value"], "v");
        hide_unowned(&mut history, "process_guid", Some("theirs"), &mine);
        assert_eq!(history[0]["env"][0]["value"], redact::HIDDEN);
    }

    #[test]
    fn apps_and_tasks_are_the_reads_with_secrets() {
        assert_eq!(
            read_kind("/v1/desired_lrps/{process_guid}/generations"),
            Some((OwnedKind::App, "process_guid"))
        );
        assert_eq!(read_kind("/v1/tasks"), Some((OwnedKind::Task, "task_guid")));
        assert_eq!(read_kind("/v1/actual_lrps"), None);
    }

    #[test]
    fn admins_and_developers_make_objects_of_their_own() {
        let caller = |name: &str, role| Caller {
            name: name.into(),
            role: Some(role),
        };
        assert_eq!(
            owner_of_new(&caller("dev-a", ApiRole::Developer)).token,
            "dev-a"
        );
        assert!(owner_of_new(&caller("ada", ApiRole::Admin)).is_admins());
        assert!(owner_of_new(&caller("local", ApiRole::Admin)).is_admins());
    }
}
