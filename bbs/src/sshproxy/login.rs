//! Who logs in to the ssh proxy and into what, as pure decisions: the user names the
//! instance as Diego's proxy took it (`diego:PROCESS_GUID/INDEX`, or
//! `diego:PROCESS_GUID` for index 0), the password is the API's own credential
//! (`USER:PASSWORD` of its Basic auth, as the original `ltc` sends it; `:` when the API
//! has none; or an API token), turned into the `Authorization` the API would have
//! been sent.

use base64::Engine;

/// The instance a login names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub process_guid: String,
    pub index: i32,
}

/// Why a user name names no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadUser {
    #[error("user {0:?}: log in as diego:PROCESS_GUID/INDEX (e.g. ssh -p 2222 diego:web/0@HOST)")]
    NotDiego(String),
    #[error("user {user:?}: the index {index:?} is not an instance index (0, 1, …)")]
    BadIndex { user: String, index: String },
}

/// The instance `user` names: `diego:GUID/INDEX` (the guid may hold `/`: the last one
/// splits, as Diego's `diego:(.+)/(\d+)` does) or `diego:GUID` (index 0).
pub fn parse_user(user: &str) -> Result<Login, BadUser> {
    let rest = user
        .strip_prefix("diego:")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| BadUser::NotDiego(user.to_string()))?;
    let (guid, index) = match rest.rsplit_once('/') {
        Some((guid, index)) if !guid.is_empty() => (guid, index),
        Some(_) => return Err(BadUser::NotDiego(user.to_string())),
        None => (rest, "0"),
    };
    let index = index
        .parse::<i32>()
        .ok()
        .filter(|i| *i >= 0 && index.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| BadUser::BadIndex {
            user: user.to_string(),
            index: index.to_string(),
        })?;
    Ok(Login {
        process_guid: guid.to_string(),
        index,
    })
}

/// The `Authorization` header the API would have been sent by the owner of
/// `password`: None for `:` (the original `ltc` of a target without credentials:
/// the API's local caller, only when it has none and only over loopback — the API's
/// own rule decides); `Basic` for `USER:PASSWORD`; `Bearer` for anything else (an API
/// token: their secrets hold no `:`).
pub fn authorization(password: &str) -> Option<String> {
    if password == ":" {
        return None;
    }
    if password.contains(':') {
        let b64 = base64::engine::general_purpose::STANDARD.encode(password.as_bytes());
        return Some(format!("Basic {b64}"));
    }
    Some(format!("Bearer {password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(guid: &str, index: i32) -> Login {
        Login {
            process_guid: guid.into(),
            index,
        }
    }

    #[test]
    fn the_user_names_an_instance_as_diego_did() {
        assert_eq!(parse_user("diego:web/0"), Ok(login("web", 0)));
        assert_eq!(parse_user("diego:web/12"), Ok(login("web", 12)));
        assert_eq!(parse_user("diego:web"), Ok(login("web", 0)));
        assert_eq!(parse_user("diego:a/b/3"), Ok(login("a/b", 3)));
        for bad in ["root", "web/0", "diego:", "diego:/0", ""] {
            assert!(
                matches!(parse_user(bad), Err(BadUser::NotDiego(_))),
                "{bad}"
            );
        }
        for bad in ["diego:web/x", "diego:web/-1", "diego:web/+1", "diego:web/"] {
            assert!(
                matches!(parse_user(bad), Err(BadUser::BadIndex { .. })),
                "{bad}"
            );
        }
        let e = parse_user("root").unwrap_err().to_string();
        assert!(e.contains("diego:PROCESS_GUID/INDEX"), "{e}");
    }

    #[test]
    fn the_password_is_the_apis_credential() {
        assert_eq!(authorization(":"), None);
        assert_eq!(
            authorization("admin:s3cret").as_deref(),
            Some("Basic YWRtaW46czNjcmV0")
        );
        assert_eq!(
            authorization("ltc_abc-DEF").as_deref(),
            Some("Bearer ltc_abc-DEF")
        );
        // An empty password is a token nobody has: the API refuses it.
        assert_eq!(authorization("").as_deref(), Some("Bearer "));
    }
}
