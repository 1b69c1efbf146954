//! `GrantLease`, `KeepAliveLease`, `RevokeLease`: the leases cells' presence (and
//! anything else that must vanish with its holder) hang on.

use std::time::Duration;

use lattice_specs::authz::Call;
use lattice_specs::bbs_api::{Empty, GrantLeaseRequest, LeaseRequest, LeaseResponse};
use lattice_specs::validation::{FieldError, ValidationErrors};
use tonic::{Request, Response, Status};

use super::authz::may;
use super::{call, BbsGrpc};
use crate::db::DbError;
use crate::store::StoreError;

impl BbsGrpc {
    pub(super) async fn grant(
        &self,
        r: Request<GrantLeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        call("GrantLease", async {
            may(&r, Call::GrantLease)?;
            let db = self.db_for(&r)?;
            let ttl = r.into_inner().ttl_seconds;
            if ttl <= 0 {
                return Err(DbError::Invalid(ValidationErrors(vec![FieldError {
                    field: "ttl_seconds".into(),
                    message: "must be > 0".into(),
                }])));
            }
            let id = db.grant_lease(Duration::from_secs(ttl as u64)).await?;
            Ok(LeaseResponse {
                lease_id: id,
                ttl_seconds: ttl,
            })
        })
        .await
    }

    pub(super) async fn keep_alive(
        &self,
        r: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        call("KeepAliveLease", async {
            may(&r, Call::KeepAliveLease)?;
            let db = self.db_for(&r)?;
            let id = r.into_inner().lease_id;
            match db.keep_alive(id).await {
                Ok(ttl) => Ok(LeaseResponse {
                    lease_id: id,
                    ttl_seconds: ttl,
                }),
                Err(DbError::Store(StoreError::LeaseNotFound(_))) => Ok(LeaseResponse {
                    lease_id: id,
                    ttl_seconds: 0,
                }),
                Err(e) => Err(e),
            }
        })
        .await
    }

    pub(super) async fn revoke(&self, r: Request<LeaseRequest>) -> Result<Response<Empty>, Status> {
        call("RevokeLease", async {
            may(&r, Call::RevokeLease)?;
            let db = self.db_for(&r)?;
            db.revoke_lease(r.into_inner().lease_id)
                .await
                .map(|_| Empty {})
        })
        .await
    }
}
