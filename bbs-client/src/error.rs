//! [`BbsError`]: why the BBS refused or failed a call, typed.

use lattice_specs::errors::{ErrorName, ERROR_NAME_KEY};
use tonic::Code;

/// A BBS call's result.
pub type Result<T> = std::result::Result<T, BbsError>;

/// A failed BBS call: the BBS's error name (when it gave one this build knows),
/// the gRPC code and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct BbsError {
    pub name: Option<ErrorName>,
    pub code: Code,
    pub message: String,
}

impl BbsError {
    /// The caller's lock (the brain's leadership) changed hands: it must stop writing.
    pub fn is_lock_lost(&self) -> bool {
        self.name == Some(ErrorName::LockLost)
    }

    /// What was asked for does not exist (any `NotFound` code).
    pub fn is_not_found(&self) -> bool {
        self.code == Code::NotFound
    }

    /// Refused because the state moved on since the caller decided (the record
    /// is gone or in another state), not because the caller may no longer write.
    pub fn is_moved_on(&self) -> bool {
        matches!(self.code, Code::NotFound | Code::FailedPrecondition) && !self.is_lock_lost()
    }
}

impl From<tonic::Status> for BbsError {
    fn from(s: tonic::Status) -> BbsError {
        let name = s
            .metadata()
            .get(ERROR_NAME_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorName::parse);
        BbsError {
            name,
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, name: &str) -> tonic::Status {
        let mut s = tonic::Status::new(code, "refused");
        s.metadata_mut()
            .insert(ERROR_NAME_KEY, name.parse().unwrap());
        s
    }

    #[test]
    fn the_error_name_is_read_from_the_status_metadata() {
        let e = BbsError::from(status(
            Code::FailedPrecondition,
            ErrorName::LockLost.as_str(),
        ));
        assert_eq!(e.name, Some(ErrorName::LockLost));
        assert_eq!(e.code, Code::FailedPrecondition);
        assert_eq!(e.message, "refused");
        assert!(e.is_lock_lost());
        assert!(!e.is_moved_on(), "a lost lock is never 'moved on'");
    }

    #[test]
    fn an_unknown_or_missing_name_is_none() {
        assert_eq!(
            BbsError::from(status(Code::Internal, "SomethingNew")).name,
            None
        );
        assert_eq!(
            BbsError::from(tonic::Status::unavailable("down")).name,
            None
        );
    }

    #[test]
    fn moved_on_is_not_found_or_failed_precondition() {
        let gone = BbsError::from(status(
            Code::NotFound,
            ErrorName::ActualLRPIndexNotFound.as_str(),
        ));
        assert!(gone.is_moved_on() && gone.is_not_found());
        let refused = BbsError::from(status(
            Code::FailedPrecondition,
            ErrorName::ActualLRPCannotBeClaimed.as_str(),
        ));
        assert!(refused.is_moved_on() && !refused.is_not_found());
        assert!(!BbsError::from(tonic::Status::unavailable("down")).is_moved_on());
    }
}
