//! `GrantLease`, `KeepAliveLease`, `RevokeLease`: the leases cells' presence (and
//! anything else that must vanish with its holder) hang on. A lease a peer
//! grants records it as its holder: only it keeps the lease alive or revokes it.

use std::time::Duration;

use lattice_specs::authz::{Call, Caller};
use lattice_specs::bbs_api::{Empty, GrantLeaseRequest, LeaseRequest, LeaseResponse};
use lattice_specs::validation::{FieldError, ValidationErrors};
use tonic::{Request, Response, Status};

use super::authz::{allow, caller_of};
use super::{call, BbsGrpc};
use crate::db::DbError;
use crate::store::StoreError;

impl BbsGrpc {
    pub(super) async fn grant(
        &self,
        r: Request<GrantLeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        call("GrantLease", async {
            let who = caller_of(&r);
            allow(&who, Call::GrantLease, None)?;
            let db = self.db_for(&r)?;
            let ttl = r.into_inner().ttl_seconds;
            if ttl <= 0 {
                return Err(DbError::Invalid(ValidationErrors(vec![FieldError {
                    field: "ttl_seconds".into(),
                    message: "must be > 0".into(),
                }])));
            }
            let ttl_d = Duration::from_secs(ttl as u64);
            let id = match &who {
                Caller::Peer(holder) => db.grant_lease_held_by(ttl_d, holder).await?,
                _ => db.grant_lease(ttl_d).await?,
            };
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
            let db = self.db_for(&r)?;
            let id = r.get_ref().lease_id;
            self.may_use_lease(&caller_of(&r), Call::KeepAliveLease, id)
                .await?;
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
            let db = self.db_for(&r)?;
            let id = r.get_ref().lease_id;
            self.may_use_lease(&caller_of(&r), Call::RevokeLease, id)
                .await?;
            db.revoke_lease(id).await.map(|_| Empty {})
        })
        .await
    }
}
