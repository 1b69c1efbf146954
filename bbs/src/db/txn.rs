//! The one compare-and-swap seam every entity writes through: the fenced
//! transaction (which also keeps owner records with their objects), create-if-absent, chunked deletes, typed reads and the
//! read-modify-write loop (`modify`) that retries when another writer got there first.

use prost::Message;

use super::{Db, DbError, Result, LOCK};
use crate::store::{Compare, KeyValue, LeaseId, Op, Txn, TxnResult, MAX_TXN_OPS};

/// How many times a compare-and-swap is retried when another writer got there first.
pub(super) const CAS_ATTEMPTS: usize = 32;

pub(super) fn decode<T: Message + Default>(kv: &KeyValue) -> Result<T> {
    T::decode(kv.value.as_slice()).map_err(|e| DbError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// The retry budget of one compare-and-swap: every loop that re-reads and
/// tries again when another writer got there first draws from one, so they
/// all give up alike ([`CAS_ATTEMPTS`] tries, then `Contended`).
pub(super) struct Attempts<'a> {
    key: &'a str,
    left: usize,
}

impl<'a> Attempts<'a> {
    /// A fresh budget for writes to `key` (named in the `Contended` error).
    pub(super) fn on(key: &'a str) -> Attempts<'a> {
        Attempts {
            key,
            left: CAS_ATTEMPTS,
        }
    }

    /// Take one attempt, or fail with `Contended` once they are all spent.
    pub(super) fn next(&mut self) -> Result<()> {
        if self.left == 0 {
            return Err(DbError::Contended(self.key.to_string()));
        }
        self.left -= 1;
        Ok(())
    }
}

/// What a read-modify-write closure decided.
pub(super) enum Write<T> {
    Put(T),
    Delete,
    Nothing,
}

impl Db {
    /// Every write goes through here, so the fence guards them all and owner records
    /// follow their objects (`owners::follow`).
    pub(super) async fn txn(&self, mut txn: Txn) -> Result<TxnResult> {
        super::owners::follow(&mut txn, self.creator.as_deref());
        let Some((lock, revision)) = &self.fence else {
            return Ok(self.store.txn(txn).await?);
        };
        txn.compares
            .push(Compare::ModRevision(lock.clone(), *revision));
        let r = self.store.txn(txn).await?;
        if !r.succeeded
            && self
                .store
                .get(lock)
                .await?
                .is_none_or(|kv| kv.mod_revision != *revision)
        {
            let lock = lock.strip_prefix(LOCK).unwrap_or(lock).to_string();
            return Err(DbError::Fenced {
                lock,
                revision: *revision,
            });
        }
        Ok(r)
    }

    pub(super) async fn get<T: Message + Default>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Create `key` unless it exists: the revision it was created at, or None.
    pub(super) async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<Option<i64>> {
        let put = Op::Put {
            key: key.into(),
            value,
            lease,
        };
        let r = self
            .txn(Txn::new().when(Compare::absent(key)).then(put))
            .await?;
        Ok(r.succeeded.then_some(r.revision))
    }

    /// Delete `keys`, up to the store's transaction size at a time.
    pub(super) async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let ops = chunk.iter().map(Op::delete).collect();
            self.txn(Txn {
                compares: vec![],
                ops,
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn list<T: Message + Default>(&self, prefix: &str) -> Result<Vec<T>> {
        self.store.list(prefix).await?.iter().map(decode).collect()
    }

    /// Read-modify-write `key` with compare-and-swap, retrying when another
    /// writer changed it in between. `f` sees the current value (None if
    /// absent) and decides; its error aborts with nothing written.
    pub(super) async fn modify<T, R>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<T>) -> Result<(Write<T>, R)>,
    ) -> Result<R>
    where
        T: Message + Default,
    {
        let mut attempts = Attempts::on(key);
        loop {
            attempts.next()?;
            let (current, rev) = match self.store.get(key).await? {
                Some(kv) => (Some(decode::<T>(&kv)?), kv.mod_revision),
                None => (None, 0),
            };
            let (write, out) = f(current)?;
            let op = match write {
                Write::Nothing => return Ok(out),
                Write::Put(v) => Op::put(key, v.encode_to_vec()),
                Write::Delete => Op::delete(key),
            };
            let txn = Txn::new()
                .when(Compare::ModRevision(key.into(), rev))
                .then(op);
            if self.txn(txn).await?.succeeded {
                return Ok(out);
            }
        }
    }
}
