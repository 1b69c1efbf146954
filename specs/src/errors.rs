//! The one list of error names the BBS, its public API and every client share.
//!
//! A name travels as a string (the receptor's JSON `name`, the `lattice-error`
//! metadata of a gRPC status); everywhere else it is an [`ErrorName`], so no
//! code compares an error by a string literal. Names a client does not know
//! (a newer server) parse to `None` and are treated as unknown.

use std::fmt;
use std::str::FromStr;

/// The gRPC metadata key whose value is a failed call's [`ErrorName`].
pub const ERROR_NAME_KEY: &str = "lattice-error";

/// The gRPC request metadata key carrying a lock holder's fencing token,
/// `NAME@REVISION`: the BBS refuses the write (`LockLost`) once that lock moved on.
pub const FENCE_KEY: &str = "lattice-fence";

macro_rules! error_names {
    ($($(#[$doc:meta])* $variant:ident),* $(,)?) => {
        /// A BBS or public-API error, by the receptor-style name clients match on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorName {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorName {
            /// Every name, in declaration order.
            pub const ALL: &'static [ErrorName] = &[$(ErrorName::$variant,)*];

            /// The name as it travels on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorName::$variant => stringify!($variant),)*
                }
            }
        }

        impl FromStr for ErrorName {
            type Err = UnknownErrorName;
            fn from_str(s: &str) -> Result<ErrorName, UnknownErrorName> {
                match s {
                    $(stringify!($variant) => Ok(ErrorName::$variant),)*
                    _ => Err(UnknownErrorName(s.to_string())),
                }
            }
        }
    };
}

error_names! {
    // Requests
    /// The request failed validation; the message lists every field that is wrong.
    InvalidRequest,
    InvalidJSON,
    InvalidTask,
    InvalidLRP,
    InvalidStateTransition,
    NotFound,
    MethodNotAllowed,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    Unauthorized,
    Forbidden,
    // The store
    StoreUnavailable,
    ResourceConflict,
    LeaseNotFound,
    /// The caller's lock (the brain's leadership) changed hands: it must stop writing.
    LockLost,
    Unknown,
    // LRPs
    DesiredLRPAlreadyExists,
    DesiredLRPNotFound,
    ActualLRPIndexNotFound,
    ActualLRPCannotBeClaimed,
    ActualLRPCannotBeStarted,
    ActualLRPCannotBeCrashed,
    ActualLRPCannotBeFailed,
    ActualLRPCannotBeUnclaimed,
    /// `ltc ssh`: the instance or Task named is not running (so there is nothing to enter).
    InstanceNotRunning,
    /// A rolling update of the app is in progress (rolling, paused or rolling back).
    DeploymentInProgress,
    /// The app's history keeps no such generation.
    GenerationNotFound,
    /// The app has no canary deployment waiting for a promotion.
    DeploymentNotPaused,
    /// There is no other generation to roll back to.
    NothingToRollBack,
    /// A TCP route's external port is held by another app.
    TcpRouteConflict,
    // Tasks
    TaskGuidAlreadyExists,
    TaskNotFound,
    TaskNotCancelable,
    TaskNotResolvable,
    TaskNotDeletable,
    // Cells
    CellNotFound,
    /// Every subnet of the container network is leased to another cell.
    SubnetsExhausted,
    /// The cell id's subnet lease belongs to a live cell on another overlay address.
    SubnetLeaseHeld,
    // Volumes
    VolumeAlreadyExists,
    VolumeNotFound,
    VolumeNotReady,
    VolumeNotUsable,
    VolumeInUse,
    NoVolumeDriver,
    /// The volume already has its cell (or no longer waits for one).
    VolumeAlreadyPlaced,
    // Backups and blobs
    BackupAlreadyExists,
    BackupNotFound,
    BackupRunning,
    BackupNotCompleted,
    ScheduleNotFound,
    ScheduleAlreadyExists,
    BlobNotFound,
    BlobStoreUnavailable,
    ChecksumMismatch,
    /// The named backup store is not one the operator configured.
    BackupStoreNotFound,
    /// The backup store (directory or object store) did not answer or refused.
    BackupStoreUnavailable,
    /// A restic repository refused the cluster's key (wrong password).
    RepositoryKeyRejected,
    /// The volume's copy is fenced off on this cell (it moved to another one).
    VolumeFenced,
    /// A backup hook failed or timed out (the message carries its output).
    BackupHookFailed,
    // Public API tokens
    TokenAlreadyExists,
    TokenNotFound,
}

impl ErrorName {
    /// The name carried by a wire string, if this build knows it.
    pub fn parse(s: &str) -> Option<ErrorName> {
        s.parse().ok()
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorName, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A wire name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error name {0:?}")]
pub struct UnknownErrorName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_its_wire_string() {
        for n in ErrorName::ALL {
            assert_eq!(ErrorName::parse(n.as_str()), Some(*n));
            assert_eq!(n.to_string(), n.as_str());
            let json = serde_json::to_string(n).unwrap();
            assert_eq!(serde_json::from_str::<ErrorName>(&json).unwrap(), *n);
        }
    }

    /// The names on the wire, spelled out: clients of the receptor API match these
    /// strings, so renaming a variant must fail here (the rest of the code and its
    /// tests use the enum).
    #[test]
    fn the_wire_names_are_the_receptors() {
        let wire = [
            (ErrorName::InvalidRequest, "InvalidRequest"),
            (ErrorName::InvalidJSON, "InvalidJSON"),
            (ErrorName::InvalidTask, "InvalidTask"),
            (ErrorName::InvalidLRP, "InvalidLRP"),
            (ErrorName::InvalidStateTransition, "InvalidStateTransition"),
            (ErrorName::NotFound, "NotFound"),
            (ErrorName::MethodNotAllowed, "MethodNotAllowed"),
            (ErrorName::RequestEntityTooLarge, "RequestEntityTooLarge"),
            (ErrorName::UnsupportedMediaType, "UnsupportedMediaType"),
            (ErrorName::Unauthorized, "Unauthorized"),
            (ErrorName::Forbidden, "Forbidden"),
            (ErrorName::StoreUnavailable, "StoreUnavailable"),
            (ErrorName::ResourceConflict, "ResourceConflict"),
            (ErrorName::LeaseNotFound, "LeaseNotFound"),
            (ErrorName::LockLost, "LockLost"),
            (ErrorName::Unknown, "Unknown"),
            (
                ErrorName::DesiredLRPAlreadyExists,
                "DesiredLRPAlreadyExists",
            ),
            (ErrorName::DesiredLRPNotFound, "DesiredLRPNotFound"),
            (ErrorName::ActualLRPIndexNotFound, "ActualLRPIndexNotFound"),
            (
                ErrorName::ActualLRPCannotBeClaimed,
                "ActualLRPCannotBeClaimed",
            ),
            (
                ErrorName::ActualLRPCannotBeStarted,
                "ActualLRPCannotBeStarted",
            ),
            (
                ErrorName::ActualLRPCannotBeCrashed,
                "ActualLRPCannotBeCrashed",
            ),
            (
                ErrorName::ActualLRPCannotBeFailed,
                "ActualLRPCannotBeFailed",
            ),
            (
                ErrorName::ActualLRPCannotBeUnclaimed,
                "ActualLRPCannotBeUnclaimed",
            ),
            (ErrorName::InstanceNotRunning, "InstanceNotRunning"),
            (ErrorName::DeploymentInProgress, "DeploymentInProgress"),
            (ErrorName::GenerationNotFound, "GenerationNotFound"),
            (ErrorName::DeploymentNotPaused, "DeploymentNotPaused"),
            (ErrorName::NothingToRollBack, "NothingToRollBack"),
            (ErrorName::TcpRouteConflict, "TcpRouteConflict"),
            (ErrorName::TaskGuidAlreadyExists, "TaskGuidAlreadyExists"),
            (ErrorName::TaskNotFound, "TaskNotFound"),
            (ErrorName::TaskNotCancelable, "TaskNotCancelable"),
            (ErrorName::TaskNotResolvable, "TaskNotResolvable"),
            (ErrorName::TaskNotDeletable, "TaskNotDeletable"),
            (ErrorName::CellNotFound, "CellNotFound"),
            (ErrorName::SubnetsExhausted, "SubnetsExhausted"),
            (ErrorName::SubnetLeaseHeld, "SubnetLeaseHeld"),
            (ErrorName::VolumeAlreadyExists, "VolumeAlreadyExists"),
            (ErrorName::VolumeNotFound, "VolumeNotFound"),
            (ErrorName::VolumeNotReady, "VolumeNotReady"),
            (ErrorName::VolumeNotUsable, "VolumeNotUsable"),
            (ErrorName::VolumeInUse, "VolumeInUse"),
            (ErrorName::NoVolumeDriver, "NoVolumeDriver"),
            (ErrorName::VolumeAlreadyPlaced, "VolumeAlreadyPlaced"),
            (ErrorName::BackupAlreadyExists, "BackupAlreadyExists"),
            (ErrorName::BackupNotFound, "BackupNotFound"),
            (ErrorName::BackupRunning, "BackupRunning"),
            (ErrorName::BackupNotCompleted, "BackupNotCompleted"),
            (ErrorName::ScheduleNotFound, "ScheduleNotFound"),
            (ErrorName::ScheduleAlreadyExists, "ScheduleAlreadyExists"),
            (ErrorName::BlobNotFound, "BlobNotFound"),
            (ErrorName::BlobStoreUnavailable, "BlobStoreUnavailable"),
            (ErrorName::ChecksumMismatch, "ChecksumMismatch"),
            (ErrorName::BackupStoreNotFound, "BackupStoreNotFound"),
            (ErrorName::BackupStoreUnavailable, "BackupStoreUnavailable"),
            (ErrorName::RepositoryKeyRejected, "RepositoryKeyRejected"),
            (ErrorName::VolumeFenced, "VolumeFenced"),
            (ErrorName::BackupHookFailed, "BackupHookFailed"),
            (ErrorName::TokenAlreadyExists, "TokenAlreadyExists"),
            (ErrorName::TokenNotFound, "TokenNotFound"),
        ];
        assert_eq!(wire.len(), ErrorName::ALL.len());
        for (name, text) in wire {
            assert_eq!(name.as_str(), text);
        }
    }

    #[test]
    fn an_unknown_name_is_not_a_known_one() {
        assert_eq!(ErrorName::parse("SomethingNew"), None);
        assert!(serde_json::from_str::<ErrorName>("\"SomethingNew\"").is_err());
    }
}
