//! Reading a gRPC request: required fields, instance keys, and the fencing
//! token a lock holder sends in the request's metadata.

use lattice_specs::bbs_api::ActualLrpRef;
use lattice_specs::errors::FENCE_KEY;
use lattice_specs::models::ActualLrpInstanceKey;
use lattice_specs::validation::{FieldError, ValidationErrors};
use tonic::metadata::MetadataMap;

use crate::db::DbError;

pub(super) fn missing(field: &str) -> DbError {
    DbError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message: "is required".into(),
    }]))
}

pub(super) fn key_of(k: Option<ActualLrpRef>) -> Result<(String, i32), DbError> {
    let k = k.ok_or_else(|| missing("key"))?;
    if k.process_guid.is_empty() {
        return Err(missing("key.process_guid"));
    }
    Ok((k.process_guid, k.index))
}

pub(super) fn ik_of(ik: Option<ActualLrpInstanceKey>) -> Result<ActualLrpInstanceKey, DbError> {
    let ik = ik.ok_or_else(|| missing("instance_key"))?;
    if ik.instance_guid.is_empty() || ik.cell_id.is_empty() {
        return Err(missing(
            "instance_key.instance_guid and instance_key.cell_id",
        ));
    }
    Ok(ik)
}

/// The fencing token in `metadata`, if the caller sent one: the lock's name
/// and the revision it holds it at.
pub(super) fn fence_of(metadata: &MetadataMap) -> Result<Option<(String, i64)>, DbError> {
    let Some(v) = metadata.get(FENCE_KEY) else {
        return Ok(None);
    };
    match v.to_str().ok().and_then(parse_fence) {
        Some(fence) => Ok(Some(fence)),
        None => Err(DbError::Invalid(ValidationErrors(vec![FieldError {
            field: FENCE_KEY.into(),
            message: "must be NAME@REVISION".into(),
        }]))),
    }
}

/// `NAME@REVISION` with a non-empty name and an integer revision.
fn parse_fence(v: &str) -> Option<(String, i64)> {
    let (name, rev) = v.rsplit_once('@')?;
    let rev = rev.parse::<i64>().ok()?;
    (!name.is_empty()).then(|| (name.to_string(), rev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fencing_token_is_name_at_revision() {
        assert_eq!(parse_fence("brain@42"), Some(("brain".into(), 42)));
        assert_eq!(
            parse_fence("a@b@7"),
            Some(("a@b".into(), 7)),
            "the last @ splits"
        );
        for bad in ["brain", "@42", "brain@", "brain@x", ""] {
            assert_eq!(parse_fence(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn no_token_is_no_fence_and_a_bad_one_is_refused() {
        let mut m = MetadataMap::new();
        assert_eq!(fence_of(&m), Ok(None));
        m.insert(FENCE_KEY, "brain@3".parse().unwrap());
        assert_eq!(fence_of(&m), Ok(Some(("brain".into(), 3))));
        m.insert(FENCE_KEY, "brain".parse().unwrap());
        let err = fence_of(&m).unwrap_err();
        assert!(matches!(err, DbError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("NAME@REVISION"), "{err}");
    }

    #[test]
    fn instance_keys_need_both_guid_and_cell() {
        use lattice_specs::testing::instance_key as ik;
        assert_eq!(ik_of(Some(ik("i", "c"))), Ok(ik("i", "c")));
        assert!(ik_of(None).is_err());
        assert!(ik_of(Some(ik("", "c"))).is_err());
        assert!(ik_of(Some(ik("i", ""))).is_err());
    }
}
