//! Join tokens: how a new machine proves it may join the cluster (k3s-style), and
//! the decisions about them. Pure: no randomness, no clock, no I/O.
//!
//! A token is `LJ1.<CA>.<ID>.<SECRET>` ([`JoinToken`]):
//! - `LJ1` names this format (lattice join, version 1);
//! - `<CA>` is the SHA-256 of the cluster CA certificate (DER), 64 hex digits: the
//!   joiner trusts the BBS only if it presents a certificate of that CA, so a token
//!   sent to the wrong server (or a man in the middle) is never used;
//! - `<ID>` names the token (16 hex digits) so the BBS finds its record;
//! - `<SECRET>` is 256 random bits (64 hex digits). The BBS keeps only its SHA-256
//!   ([`secret_sha256`]) with the role, the name the joiner may take, the expiry and
//!   whether it was used ([`JoinTokenRecord`]).
//!
//! [`decide`] says whether a token may be used now by a joiner asking for a role and
//! a name; [`renew_at`] when a certificate should be renewed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::errors::ErrorName;
use crate::identity::{Identity, IdentityError, Role};
pub use crate::models::JoinTokenRecord;

/// The first field of every token of this format.
pub const TOKEN_PREFIX: &str = "LJ1";
/// Hex digits of a token's id.
pub const ID_HEX_LEN: usize = 16;
/// Hex digits of a token's secret (256 bits).
pub const SECRET_HEX_LEN: usize = 64;
/// How long a token lives unless told otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest a token may live.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The SHA-256 of a CA certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaFingerprint(pub [u8; 32]);

impl CaFingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of_der(der: &[u8]) -> CaFingerprint {
        CaFingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFingerprint({self})")
    }
}

impl FromStr for CaFingerprint {
    type Err = TokenFormatError;
    fn from_str(s: &str) -> Result<CaFingerprint, TokenFormatError> {
        let bytes = from_hex(s)
            .filter(|b| b.len() == 32)
            .ok_or(TokenFormatError::Fingerprint)?;
        let mut fp = [0u8; 32];
        fp.copy_from_slice(&bytes);
        Ok(CaFingerprint(fp))
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The SHA-256 of a token's secret: all the BBS keeps of it.
pub fn secret_sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A join token as the operator copies it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca: CaFingerprint,
    pub id: String,
    pub secret: String,
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}.{}", self.ca, self.id, self.secret)
    }
}

/// Never prints the secret.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken(ca {}, id {})", self.ca, self.id)
    }
}

/// Why a string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("the join token must look like {TOKEN_PREFIX}.<CA sha256>.<id>.<secret>: copy it whole from `lattice token create`")]
    Shape,
    #[error("the join token's CA fingerprint must be 64 hex digits: copy the token whole from `lattice token create`")]
    Fingerprint,
    #[error("the join token's id must be {ID_HEX_LEN} hex digits: copy the token whole from `lattice token create`")]
    Id,
    #[error("the join token's secret must be {SECRET_HEX_LEN} hex digits: copy the token whole from `lattice token create`")]
    Secret,
}

fn is_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FromStr for JoinToken {
    type Err = TokenFormatError;
    fn from_str(s: &str) -> Result<JoinToken, TokenFormatError> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [prefix, ca, id, secret] = parts[..] else {
            return Err(TokenFormatError::Shape);
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenFormatError::Shape);
        }
        let ca = ca.to_ascii_lowercase().parse()?;
        if !is_hex_of_len(id, ID_HEX_LEN) {
            return Err(TokenFormatError::Id);
        }
        if !is_hex_of_len(secret, SECRET_HEX_LEN) {
            return Err(TokenFormatError::Secret);
        }
        Ok(JoinToken {
            ca,
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// What an operator asked for when creating a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub role: Role,
    /// The only name a joiner may take (None: it chooses).
    pub name: Option<String>,
    pub ttl: Duration,
}

/// Why a token cannot be created as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRequestError {
    #[error("role: a join token is for a cell, brain or router; the BBS's certificate comes from `lattice ca issue`")]
    BbsRole,
    #[error("name: {0}")]
    Name(IdentityError),
    #[error("ttl: must be between 1 second and {} days", MAX_TTL.as_secs() / 86400)]
    Ttl,
}

/// The record of a new token `id` with `secret`, created at `now` (Unix nanoseconds),
/// or why `req` cannot be one.
pub fn new_record(
    req: &TokenRequest,
    id: &str,
    secret: &str,
    now: i64,
) -> Result<JoinTokenRecord, TokenRequestError> {
    if req.role == Role::Bbs {
        return Err(TokenRequestError::BbsRole);
    }
    if let Some(name) = &req.name {
        Identity::new(req.role, name).map_err(TokenRequestError::Name)?;
    }
    if req.ttl.is_zero() || req.ttl > MAX_TTL {
        return Err(TokenRequestError::Ttl);
    }
    Ok(JoinTokenRecord {
        id: id.to_string(),
        secret_sha256: secret_sha256(secret),
        role: req.role.to_string(),
        name: req.name.clone().unwrap_or_default(),
        created_at: now,
        expires_at: now.saturating_add(req.ttl.as_nanos() as i64),
        used_at: 0,
        used_by: String::new(),
    })
}

/// Why a join was refused. Nothing is issued and the token is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("this BBS knows no such join token (wrong cluster, or it was never created): ask the operator for a new one (`lattice token create`)")]
    Unknown,
    #[error("the join token was already used at {at} by {by}: a token joins one machine; create another with `lattice token create`")]
    Used { at: String, by: String },
    #[error("the join token expired at {at}: create another with `lattice token create --ttl …`")]
    Expired { at: String },
    #[error("the join token is for a {token}, not a {asked}: use it with `lattice {token} --join`, or create a token with --role {asked}")]
    WrongRole { token: String, asked: Role },
    #[error("the join token lets a {role} join only as {allowed:?}, not {asked:?}: start it with that name")]
    WrongName {
        role: Role,
        allowed: String,
        asked: String,
    },
    #[error("name: {0}")]
    BadName(IdentityError),
}

impl JoinRefusal {
    /// `Unauthorized` when the token is not one (unknown, wrong secret), `Forbidden`
    /// when it is but may not be used so, `InvalidRequest` for a bad name.
    pub fn name(&self) -> ErrorName {
        match self {
            JoinRefusal::Unknown => ErrorName::Unauthorized,
            JoinRefusal::BadName(_) => ErrorName::InvalidRequest,
            _ => ErrorName::Forbidden,
        }
    }
}

fn time_of(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// May the holder of `secret` use `record` (None: no record has its id) at `now`
/// to join as `role` named `name`? The identity its certificate will name, or why not.
pub fn decide(
    record: Option<&JoinTokenRecord>,
    secret: &str,
    role: Role,
    name: &str,
    now: i64,
) -> Result<Identity, JoinRefusal> {
    let record = record
        .filter(|r| r.secret_sha256 == secret_sha256(secret))
        .ok_or(JoinRefusal::Unknown)?;
    if record.used_at != 0 {
        return Err(JoinRefusal::Used {
            at: time_of(record.used_at),
            by: record.used_by.clone(),
        });
    }
    if now >= record.expires_at {
        return Err(JoinRefusal::Expired {
            at: time_of(record.expires_at),
        });
    }
    if record.role != role.as_str() {
        return Err(JoinRefusal::WrongRole {
            token: record.role.clone(),
            asked: role,
        });
    }
    if !record.name.is_empty() && record.name != name {
        return Err(JoinRefusal::WrongName {
            role,
            allowed: record.name.clone(),
            asked: name.to_string(),
        });
    }
    Identity::new(role, name).map_err(JoinRefusal::BadName)
}

/// `record` once used at `now` by `identity`.
pub fn mark_used(mut record: JoinTokenRecord, identity: &Identity, now: i64) -> JoinTokenRecord {
    record.used_at = now;
    record.used_by = identity.to_string();
    record
}

/// When a certificate valid from `not_before` to `not_after` (any one unit) should be
/// renewed: once two thirds of its lifetime have passed.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(life / 3 * 2)
}

/// A duration like `90s`, `30m`, `1h` or `7d` (a bare number is seconds).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: give e.g. 90s, 30m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn token() -> JoinToken {
        JoinToken {
            ca: CaFingerprint::of_der(b"a CA certificate"),
            id: "0123456789abcdef".into(),
            secret: "ab".repeat(32),
        }
    }

    fn record(role: Role, name: Option<&str>) -> JoinTokenRecord {
        let req = TokenRequest {
            role,
            name: name.map(String::from),
            ttl: Duration::from_secs(3600),
        };
        new_record(&req, &token().id, &token().secret, NOW).unwrap()
    }

    #[test]
    fn a_token_round_trips_through_its_text() {
        let t = token();
        let text = t.to_string();
        assert!(text.starts_with("LJ1."), "{text}");
        assert_eq!(text.len(), 3 + 1 + 64 + 1 + 16 + 1 + 64);
        assert_eq!(text.parse::<JoinToken>(), Ok(t.clone()));
        assert_eq!(
            format!("  {}\n", text.to_uppercase()).parse::<JoinToken>(),
            Ok(t.clone()),
            "whitespace and upper-case hex are accepted"
        );
        assert!(
            !format!("{t:?}").contains(&t.secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let t = token();
        let cases = [
            (String::new(), TokenFormatError::Shape),
            ("K10abc::node:secret".into(), TokenFormatError::Shape),
            (
                format!("LJ2.{}.{}.{}", t.ca, t.id, t.secret),
                TokenFormatError::Shape,
            ),
            (format!("LJ1.{}.{}", t.ca, t.id), TokenFormatError::Shape),
            (
                format!("LJ1.abc.{}.{}", t.id, t.secret),
                TokenFormatError::Fingerprint,
            ),
            (
                format!("LJ1.{}.xyz.{}", t.ca, t.secret),
                TokenFormatError::Id,
            ),
            (
                format!("LJ1.{}.{}.{}", t.ca, t.id, &t.secret[1..]),
                TokenFormatError::Secret,
            ),
        ];
        for (text, want) in cases {
            let e = text.parse::<JoinToken>().unwrap_err();
            assert_eq!(e, want, "{text:?}");
            assert!(e.to_string().contains("lattice token create"), "{e}");
        }
    }

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_der() {
        let fp = CaFingerprint::of_der(b"abc");
        assert_eq!(
            fp.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fp.to_string().parse::<CaFingerprint>(), Ok(fp));
    }

    #[test]
    fn a_record_keeps_the_secret_only_hashed() {
        let r = record(Role::Cell, Some("cell-a"));
        assert_eq!(r.secret_sha256, secret_sha256(&token().secret));
        assert_ne!(r.secret_sha256, token().secret.as_bytes());
        assert_eq!(r.expires_at, NOW + 3600 * 1_000_000_000);
        assert_eq!((r.role.as_str(), r.name.as_str()), ("cell", "cell-a"));
    }

    #[test]
    fn tokens_cannot_be_made_for_the_bbs_bad_names_or_odd_ttls() {
        let mk = |role, name: Option<&str>, secs| {
            new_record(
                &TokenRequest {
                    role,
                    name: name.map(String::from),
                    ttl: Duration::from_secs(secs),
                },
                "i",
                "s",
                NOW,
            )
        };
        assert_eq!(mk(Role::Bbs, None, 60), Err(TokenRequestError::BbsRole));
        assert!(matches!(
            mk(Role::Cell, Some("Cell_A"), 60),
            Err(TokenRequestError::Name(_))
        ));
        assert_eq!(mk(Role::Cell, None, 0), Err(TokenRequestError::Ttl));
        assert_eq!(
            mk(Role::Cell, None, MAX_TTL.as_secs() + 1),
            Err(TokenRequestError::Ttl)
        );
        assert!(mk(Role::Router, None, 60).is_ok());
    }

    #[test]
    fn a_fresh_token_admits_its_role_and_name() {
        let s = &token().secret;
        let any = record(Role::Cell, None);
        assert_eq!(
            decide(Some(&any), s, Role::Cell, "cell-b", NOW + 1),
            Ok(Identity::new(Role::Cell, "cell-b").unwrap())
        );
        let pinned = record(Role::Brain, Some("brain-1"));
        assert_eq!(
            decide(Some(&pinned), s, Role::Brain, "brain-1", NOW),
            Ok(Identity::new(Role::Brain, "brain-1").unwrap())
        );
    }

    #[test]
    fn unknown_used_expired_wrong_role_or_name_are_refused() {
        let s = &token().secret;
        let r = record(Role::Cell, Some("cell-a"));
        let id = Identity::new(Role::Cell, "cell-a").unwrap();
        let check = |rec: Option<&JoinTokenRecord>, secret: &str, role, name, now| {
            decide(rec, secret, role, name, now).unwrap_err()
        };
        assert_eq!(
            check(None, s, Role::Cell, "cell-a", NOW),
            JoinRefusal::Unknown
        );
        let wrong_secret = "cd".repeat(32);
        assert_eq!(
            check(Some(&r), &wrong_secret, Role::Cell, "cell-a", NOW),
            JoinRefusal::Unknown
        );
        let used = mark_used(r.clone(), &id, NOW + 5);
        let e = check(Some(&used), s, Role::Cell, "cell-a", NOW + 6);
        assert!(
            matches!(&e, JoinRefusal::Used { by, .. } if by == "cell cell-a"),
            "{e:?}"
        );
        assert!(e.to_string().contains("already used"), "{e}");
        let e = check(Some(&r), s, Role::Cell, "cell-a", r.expires_at);
        assert!(matches!(e, JoinRefusal::Expired { .. }), "{e:?}");
        assert!(e.to_string().contains("expired"), "{e}");
        let e = check(Some(&r), s, Role::Brain, "cell-a", NOW);
        assert!(e.to_string().contains("for a cell, not a brain"), "{e}");
        let e = check(Some(&r), s, Role::Cell, "cell-b", NOW);
        assert!(matches!(e, JoinRefusal::WrongName { .. }), "{e:?}");
        let open = record(Role::Cell, None);
        let e = check(Some(&open), s, Role::Cell, "Not_A_Name", NOW);
        assert!(matches!(e, JoinRefusal::BadName(_)), "{e:?}");
        assert_eq!(JoinRefusal::Unknown.name(), ErrorName::Unauthorized);
        assert_eq!(
            JoinRefusal::Expired { at: String::new() }.name(),
            ErrorName::Forbidden
        );
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(0, 90), 60);
        assert_eq!(renew_at(100, 400), 300);
        assert_eq!(
            renew_at(100, 50),
            100,
            "an inverted validity renews at once"
        );
    }

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in ["", "h", "1w", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
