//! How a BBS error travels over gRPC: a status code, the message, and the
//! [`ErrorName`] under [`ERROR_NAME_KEY`] in the status's metadata.

use lattice_specs::errors::{ErrorName, ERROR_NAME_KEY};
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::db::DbError;
use crate::store::StoreError;

pub fn status_of(e: &DbError) -> Status {
    let code = match e {
        DbError::Invalid(_) => tonic::Code::InvalidArgument,
        DbError::NotFound { .. } | DbError::Store(StoreError::LeaseNotFound(_)) => {
            tonic::Code::NotFound
        }
        DbError::AlreadyExists { .. } => tonic::Code::AlreadyExists,
        DbError::Conflict {
            name: ErrorName::Unauthorized,
            ..
        } => tonic::Code::Unauthenticated,
        DbError::Conflict {
            name: ErrorName::Forbidden,
            ..
        } => tonic::Code::PermissionDenied,
        DbError::Refused(_) | DbError::Fenced { .. } | DbError::Conflict { .. } => {
            tonic::Code::FailedPrecondition
        }
        DbError::Store(StoreError::Unavailable(_)) => tonic::Code::Unavailable,
        DbError::Contended(_) => tonic::Code::Aborted,
        DbError::Forbidden(_) => tonic::Code::PermissionDenied,
        _ => tonic::Code::Internal,
    };
    let mut s = Status::new(code, e.to_string());
    s.metadata_mut().insert(
        ERROR_NAME_KEY,
        MetadataValue::from_static(e.name().as_str()),
    );
    s
}

/// The error name a BBS status carries, if this build knows it.
pub fn error_name(s: &Status) -> Option<ErrorName> {
    s.metadata()
        .get(ERROR_NAME_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorName::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> DbError {
        use lattice_specs::authz::{authorize, Call, Caller};
        use lattice_specs::identity::{Identity, Role};
        let cell_a = Caller::Peer(Identity::new(Role::Cell, "cell-a").unwrap());
        DbError::Forbidden(authorize(&cell_a, Call::AcquireLock, None).unwrap_err())
    }

    #[test]
    fn a_status_carries_its_code_and_error_name() {
        let cases = [
            (
                DbError::NotFound {
                    name: ErrorName::TaskNotFound,
                    message: "task t not found".into(),
                },
                tonic::Code::NotFound,
            ),
            (
                DbError::Conflict {
                    name: ErrorName::VolumeInUse,
                    message: "in use".into(),
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                DbError::Fenced {
                    lock: "brain".into(),
                    revision: 3,
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                DbError::Store(StoreError::Unavailable("down".into())),
                tonic::Code::Unavailable,
            ),
            (DbError::Contended("k".into()), tonic::Code::Aborted),
            (forbidden(), tonic::Code::PermissionDenied),
        ];
        for (e, code) in cases {
            let s = status_of(&e);
            assert_eq!(s.code(), code, "{e}");
            assert_eq!(s.message(), e.to_string());
            assert_eq!(error_name(&s), Some(e.name()), "{e}");
        }
    }

    #[test]
    fn a_status_without_a_known_name_has_none() {
        assert_eq!(error_name(&Status::internal("x")), None);
        let mut s = Status::internal("x");
        s.metadata_mut()
            .insert(ERROR_NAME_KEY, "not-a-known-name".parse().unwrap());
        assert_eq!(error_name(&s), None);
    }
}
