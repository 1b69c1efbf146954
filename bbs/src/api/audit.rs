//! The audit trail of the public API: one line per change (who, with which role, the
//! HTTP verb and the object's path) in the BBS's own log buffer under the components'
//! debug log guid (what `ltc debug-logs` shows, source `AUDIT`), counted in
//! `bbs_api_changes_total{role,verb}`.

use axum::http::Method;
use lattice_specs::logs::{LogBuffer, LogMessage, DEBUG_LOG_GUID};

use super::auth::Caller;

/// The source audit lines carry.
pub const SOURCE: &str = "AUDIT";

/// Whether a request changes something worth a line: not a read, and not the log
/// lines routers post (their own trail is the log buffer itself).
pub fn is_change(verb: &Method, route: Option<&str>) -> bool {
    !super::authz::is_read(verb) && route != Some("/v1/logs")
}

/// The audit line of a change.
pub fn line(caller: &Caller, verb: &Method, object: &str) -> String {
    format!(
        "token={} role={} verb={verb} object={object}",
        caller.name,
        caller.label()
    )
}

/// Records a change that succeeded.
pub fn record(logs: &LogBuffer, caller: &Caller, verb: &Method, object: &str) {
    let text = line(caller, verb, object);
    crate::metrics::API_CHANGES
        .with_label_values(&[caller.label(), verb.as_str()])
        .inc();
    // At debug: the log layer that copies info lines into the same buffer would
    // repeat it.
    tracing::debug!(target: "audit", "{text}");
    logs.push(LogMessage::new(DEBUG_LOG_GUID, SOURCE, text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::receptor::ApiRole;

    #[test]
    fn a_line_names_who_did_what_to_which_object() {
        let c = Caller {
            name: "ci".into(),
            role: Some(ApiRole::Developer),
        };
        assert_eq!(
            line(&c, &Method::PUT, "/v1/desired_lrps/web"),
            "token=ci role=developer verb=PUT object=/v1/desired_lrps/web"
        );
        assert!(is_change(&Method::DELETE, Some("/v1/tasks/{task_guid}")));
        assert!(!is_change(&Method::GET, Some("/v1/tasks")));
        assert!(!is_change(&Method::POST, Some("/v1/logs")));
        let logs = LogBuffer::default();
        let before = crate::metrics::API_CHANGES
            .with_label_values(&["task", "POST"])
            .get();
        let task = Caller {
            name: "task:backup-x".into(),
            role: None,
        };
        record(&logs, &task, &Method::POST, "/v1/blobs/b.tgz");
        let lines = logs.recent(DEBUG_LOG_GUID);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].source, SOURCE);
        assert!(lines[0]
            .message
            .contains("token=task:backup-x role=task verb=POST"));
        assert_eq!(
            crate::metrics::API_CHANGES
                .with_label_values(&["task", "POST"])
                .get(),
            before + 1
        );
    }
}
