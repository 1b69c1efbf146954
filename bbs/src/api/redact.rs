//! What a viewer does not see: [`redact`] hides, in any JSON the API answers with
//! (LRPs, tasks, backups, events), every environment variable's value (in `env`
//! lists at any depth: the definition's and each run action's) and the credentials
//! of every URL (`scheme://USER:PASSWORD@host…`, wherever it appears in a string:
//! Download/Upload actions, callback URLs, failure reasons), and the SSH keys of
//! Diego's lifecycle as the original `ltc` writes them: every `private_key` (the
//! `diego-ssh` route's, which opens the instance's sshd) and a run action's
//! `-hostKey=PEM` argument (its sshd's host key).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use lattice_specs::redact::url_credentials;
/// What stands where a secret was.
pub use lattice_specs::redact::HIDDEN;

/// Hides environment values and URL credentials in `v`, in place.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "env" {
                    hide_env_values(val);
                }
                if k == "private_key" && val.is_string() {
                    *val = Value::String(HIDDEN.into());
                }
                if k == "args" {
                    hide_host_key_args(val);
                }
                redact(val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(clean) = url_credentials(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// `resp` redacted, when it is JSON (other answers pass as they are).
pub async fn response(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return super::ApiError::unknown("reading the answer to redact it failed").into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        // Not JSON after all: nothing of it is shown to a viewer.
        return super::ApiError::unknown("the answer could not be redacted for a viewer")
            .into_response();
    };
    redact(&mut v);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

/// The value of a `-hostKey=…` argument hidden, and the argument after a bare
/// `-hostKey` (Go's flags take both forms, with one or two dashes).
fn hide_host_key_args(args: &mut Value) {
    let is_flag = |f: &str| f.starts_with('-') && f.trim_start_matches('-') == "hostKey";
    if let Value::Array(args) = args {
        let mut next_is_key = false;
        for a in args {
            let Some(s) = a.as_str() else {
                next_is_key = false;
                continue;
            };
            if next_is_key {
                *a = Value::String(HIDDEN.into());
                next_is_key = false;
            } else if is_flag(s) {
                next_is_key = true;
            } else if let Some((flag, _)) = s.split_once('=').filter(|(f, _)| is_flag(f)) {
                *a = Value::String(format!("{flag}={HIDDEN}"));
            }
        }
    }
}

fn hide_env_values(env: &mut Value) {
    if let Value::Array(vars) = env {
        for var in vars {
            if let Some(value) = var.as_object_mut().and_then(|o| o.get_mut("value")) {
                *value = Value::String(HIDDEN.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_values_and_url_credentials_are_hidden_at_any_depth() {
        let mut v = json!({
            "env": [{"name": "DB_PASSWORD", "value": "hunter2"}],
            "action": {"serial": {"actions": [
                {"run": {"path": "/bin/sh", "env": [{"name": "TOKEN", "value": "t0k"}]}},
                {"upload": {"from": "/data", "to": "http://lattice-task:s3cret@10.0.0.1:8888/v1/blobs/b.tgz"}}
            ]}},
            "failure_reason": "POST http://u:p@h/x failed; see http://docs.example/y",
            "instances": 2
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["hunter2", "t0k", "s3cret", "u:p"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(v["env"][0]["name"], "DB_PASSWORD", "names stay");
        assert_eq!(v["env"][0]["value"], HIDDEN);
        assert_eq!(
            v["action"]["serial"]["actions"][1]["upload"]["to"],
            "http://[hidden]@10.0.0.1:8888/v1/blobs/b.tgz"
        );
        assert_eq!(
            v["failure_reason"],
            "POST http://[hidden]@h/x failed; see http://docs.example/y"
        );
        assert_eq!(v["instances"], 2);
    }

    #[test]
    fn the_lifecycles_ssh_keys_are_hidden() {
        let mut v = json!({
            "action": {"parallel": {"actions": [
                {"run": {"path": "/tmp/diego-sshd", "args": [
                    "-address=0.0.0.0:2222",
                    "-authorizedKey=ssh-rsa AAAA",
                    "-hostKey=-----BEGIN RSA PRIVATE KEY-----\nMIIsecret\n-----END RSA PRIVATE KEY-----"
                ]}}
            ]}},
            "routes": {"diego-ssh": {"container_port": 2222, "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIother"}}
        });
        redact(&mut v);
        let text = v.to_string();
        assert!(!text.contains("MII"), "{text}");
        let args = &v["action"]["parallel"]["actions"][0]["run"]["args"];
        assert_eq!(args[0], "-address=0.0.0.0:2222");
        assert_eq!(args[1], "-authorizedKey=ssh-rsa AAAA", "a public key stays");
        assert_eq!(args[2], "-hostKey=[hidden]");
        let mut two = json!({"args": ["--hostKey", "-----BEGIN MIIsecret", "-address=x"]});
        redact(&mut two);
        assert_eq!(two["args"], json!(["--hostKey", "[hidden]", "-address=x"]));
        assert_eq!(v["routes"]["diego-ssh"]["private_key"], HIDDEN);
        assert_eq!(v["routes"]["diego-ssh"]["container_port"], 2222);
    }
}
