//! The brain's BBS client: the generated gRPC client plus the brain's
//! fencing token on every request once it leads, so a brain that lost its
//! lock cannot write anything (the BBS answers "LockLost").

use std::future::Future;

use futures::{stream, StreamExt};
use lattice_specs::bbs_api::bbs_client::BbsClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const FENCE_KEY: &str = "lattice-fence";
pub const ERROR_NAME_KEY: &str = "lattice-error";

#[derive(Clone)]
pub struct Bbs {
    client: BbsClient<Channel>,
    fence: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// The BBS error name carried by a status (e.g. "LockLost").
pub fn error_name(s: &Status) -> Option<&str> {
    s.metadata()
        .get(ERROR_NAME_KEY)
        .and_then(|v| v.to_str().ok())
}

pub fn is_lock_lost(s: &Status) -> bool {
    error_name(s) == Some("LockLost")
}

impl Bbs {
    /// A client for the BBS at `addr` (host:port); connects lazily and reconnects.
    pub fn connect_lazy(addr: &str) -> anyhow::Result<Bbs> {
        Ok(Bbs {
            client: lattice_specs::bbs_client(addr)?,
            fence: None,
        })
    }

    /// The same client, writing under the fencing token `lock@revision`.
    pub fn fenced(&self, lock: &str, revision: i64) -> Bbs {
        let token = format!("{lock}@{revision}")
            .parse()
            .expect("lock names are ASCII");
        Bbs {
            client: self.client.clone(),
            fence: Some(token),
        }
    }

    /// Wrap a message as a request carrying the fence, if any.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(f) = &self.fence {
            r.metadata_mut().insert(FENCE_KEY, f.clone());
        }
        r
    }

    /// The generated client, for calls wrapped with `req`.
    pub fn client(&self) -> BbsClient<Channel> {
        self.client.clone()
    }
}

/// Make many BBS writes, 64 at a time. A write refused because the state moved
/// on since the decision (NotFound, FailedPrecondition) is not an error; a lost
/// lock is, and so is any other failure (the first one is returned).
pub async fn apply_all<F>(calls: impl IntoIterator<Item = F>) -> Result<(), Status>
where
    F: Future<Output = Result<(), Status>>,
{
    let results: Vec<Result<(), Status>> = stream::iter(calls).buffer_unordered(64).collect().await;
    for r in results {
        match r {
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) && !is_lock_lost(&s) => {}
            other => other?,
        }
    }
    Ok(())
}
