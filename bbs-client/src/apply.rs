//! [`apply_all`]: many BBS writes at once, where state that moved on is no error.

use std::future::Future;

use futures::{stream, StreamExt};

use crate::error::BbsError;

/// How many writes [`apply_all`] keeps in flight.
pub const WRITES_IN_FLIGHT: usize = 64;

/// Make many BBS writes, [`WRITES_IN_FLIGHT`] at a time. A write refused because
/// the state moved on since the decision (NotFound, FailedPrecondition) is not an
/// error; a lost lock is, and so is any other failure (the first one is returned).
pub async fn apply_all<F>(calls: impl IntoIterator<Item = F>) -> Result<(), BbsError>
where
    F: Future<Output = Result<(), BbsError>>,
{
    let results: Vec<Result<(), BbsError>> = stream::iter(calls)
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        match r {
            Err(e) if e.is_moved_on() => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::errors::ErrorName;
    use tonic::Code;

    fn err(code: Code, name: Option<ErrorName>) -> Result<(), BbsError> {
        Err(BbsError {
            name,
            code,
            message: String::new(),
        })
    }

    #[tokio::test]
    async fn state_that_moved_on_is_not_an_error() {
        let calls = vec![
            futures::future::ready(Ok(())),
            futures::future::ready(err(Code::NotFound, Some(ErrorName::ActualLRPIndexNotFound))),
            futures::future::ready(err(Code::FailedPrecondition, None)),
        ];
        assert_eq!(apply_all(calls).await, Ok(()));
    }

    #[tokio::test]
    async fn a_lost_lock_or_another_failure_is() {
        let lost = vec![futures::future::ready(err(
            Code::FailedPrecondition,
            Some(ErrorName::LockLost),
        ))];
        assert!(apply_all(lost).await.unwrap_err().is_lock_lost());
        let down = vec![futures::future::ready(err(Code::Unavailable, None))];
        assert_eq!(apply_all(down).await.unwrap_err().code, Code::Unavailable);
    }
}
