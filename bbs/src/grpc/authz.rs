//! Authorization of the gRPC calls: the caller read from the request's
//! extensions (the peer identity the TLS transport took from the client
//! certificate; none over plaintext loopback) and the
//! [`lattice_specs::authz::authorize`] decision. A refusal is logged, counted
//! (`bbs_authz_refused_total{role,call}`) and returned as
//! [`DbError::Forbidden`] (gRPC `PermissionDenied`, error name `Forbidden`).

use lattice_specs::authz::{authorize, authorize_lease, Call, Caller, Refusal};
use lattice_specs::identity::Role;
use tonic::Request;

use super::BbsGrpc;
use crate::db::DbError;
use crate::metrics::AUTHZ_REFUSED;

/// Who sent `r`.
pub(super) fn caller_of<T>(r: &Request<T>) -> Caller {
    Caller::from_extensions(r.extensions())
}

/// Whether `caller` may make `call` about the cell `cell`.
pub(super) fn allow(caller: &Caller, call: Call, cell: Option<&str>) -> Result<(), DbError> {
    authorize(caller, call, cell).map_err(|r| refused(caller, call, r))
}

/// A refusal logged and counted.
fn refused(caller: &Caller, call: Call, refusal: Refusal) -> DbError {
    AUTHZ_REFUSED
        .with_label_values(&[caller.label(), call.name()])
        .inc();
    tracing::warn!(%refusal, "internal call refused");
    DbError::Forbidden(refusal)
}

/// Whether the sender of `r` may make `call`, which concerns no one cell.
pub(super) fn may<T>(r: &Request<T>, call: Call) -> Result<(), DbError> {
    allow(&caller_of(r), call, None)
}

impl BbsGrpc {
    /// `FailTask`: a brain fails any task, a cell only its own (the task's cell
    /// id is read for a cell only).
    pub(super) async fn may_fail_task(&self, caller: &Caller, guid: &str) -> Result<(), DbError> {
        let cell = match caller {
            Caller::Peer(id) if id.role == Role::Cell => Some(self.db.task(guid).await?.cell_id),
            _ => None,
        };
        allow(caller, Call::FailTask, cell.as_deref())
    }

    /// `KeepAliveLease`, `RevokeLease` (`call`): only on a lease the caller
    /// holds (the holder is read for a peer only).
    pub(super) async fn may_use_lease(
        &self,
        caller: &Caller,
        call: Call,
        lease: i64,
    ) -> Result<(), DbError> {
        let holder = match caller {
            Caller::Peer(_) => self.db.lease_holder(lease).await?,
            _ => None,
        };
        authorize_lease(caller, call, holder.as_ref()).map_err(|r| refused(caller, call, r))
    }
}
