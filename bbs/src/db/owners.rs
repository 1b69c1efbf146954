//! Who owns what the public API made: one record per app, task, volume and backup at
//! `/lattice/v1/owner/<kind>/<name>`. A developer token acts only on what it owns (the
//! API's `authz` decides); an object without a record (made over gRPC, or before owners
//! were recorded) belongs to the admins.
//!
//! Records follow their objects in the very transaction that changes them
//! ([`follow`], applied by `txn` to every write): creating an object through a
//! [`Db::created_by`] view records its owner, deleting an object (by whoever: the API,
//! the converger, a cell) deletes its record.

use std::collections::HashMap;

use super::{Db, Result, BACKUP, DESIRED, TASK, VOLUME};
use crate::store::{Compare, Op, Txn};

pub const OWNER: &str = "/lattice/v1/owner/";

/// The kinds of objects that have owners. A backup schedule belongs to its volume's
/// owner, so it has no record of its own; a task schedule has one (its runs are its
/// owner's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnedKind {
    App,
    Task,
    Volume,
    Backup,
    Schedule,
}

impl OwnedKind {
    /// The kind as keys and messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnedKind::App => "app",
            OwnedKind::Task => "task",
            OwnedKind::Volume => "volume",
            OwnedKind::Backup => "backup",
            OwnedKind::Schedule => "schedule",
        }
    }
}

/// The owner of one object (protobuf, like every other record).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Owner {
    /// The developer token that made it; empty when an admin did.
    #[prost(string, tag = "1")]
    pub token: String,
    /// Unix nanoseconds.
    #[prost(int64, tag = "2")]
    pub created_at: i64,
}

impl Owner {
    /// The admins' (what every object without a record belongs to).
    pub fn admins() -> Owner {
        Owner::default()
    }

    /// Developer token `name`'s.
    pub fn token(name: &str) -> Owner {
        Owner {
            token: name.into(),
            created_at: lattice_specs::now_nanos(),
        }
    }

    pub fn is_admins(&self) -> bool {
        self.token.is_empty()
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_admins() {
            f.write_str("the admins")
        } else {
            f.write_str(&self.token)
        }
    }
}

pub fn owner_key(kind: OwnedKind, name: &str) -> String {
    format!("{OWNER}{}/{name}", kind.as_str())
}

/// The owned object stored at `key`, if any.
fn owned_at(key: &str) -> Option<(OwnedKind, &str)> {
    [
        (DESIRED, OwnedKind::App),
        (TASK, OwnedKind::Task),
        (VOLUME, OwnedKind::Volume),
        (BACKUP, OwnedKind::Backup),
        (super::SCHEDULES, OwnedKind::Schedule),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| key.strip_prefix(prefix).map(|name| (kind, name)))
}

/// Adds to `txn` what keeps owner records with their objects: every owned object it
/// deletes loses its record; every one it creates (a put guarded by the key's absence)
/// gets `creator`'s, when there is a creator.
pub(super) fn follow(txn: &mut Txn, creator: Option<&Owner>) {
    let mut extra = Vec::new();
    for op in &txn.ops {
        match op {
            Op::Delete { key } => {
                if let Some((kind, name)) = owned_at(key) {
                    extra.push(Op::delete(owner_key(kind, name)));
                }
            }
            Op::Put { key, .. } => {
                let (Some(owner), Some((kind, name))) = (creator, owned_at(key)) else {
                    continue;
                };
                if txn.compares.contains(&Compare::absent(key.as_str())) {
                    let record = prost::Message::encode_to_vec(owner);
                    extra.push(Op::put(owner_key(kind, name), record));
                }
            }
        }
    }
    txn.ops.extend(extra);
}

impl Db {
    /// A view of this database whose creations belong to `owner` (the public API makes
    /// objects through one for its caller).
    pub fn created_by(&self, owner: Owner) -> Db {
        Db {
            creator: Some(std::sync::Arc::new(owner)),
            ..self.clone()
        }
    }

    /// Who is recorded as owning `name` (None: nobody, so the admins if it exists).
    pub async fn owner(&self, kind: OwnedKind, name: &str) -> Result<Option<Owner>> {
        Ok(self
            .get::<Owner>(&owner_key(kind, name))
            .await?
            .map(|(o, _)| o))
    }

    /// Every recorded owner of `kind`'s objects, by name.
    pub async fn owners(&self, kind: OwnedKind) -> Result<HashMap<String, Owner>> {
        let prefix = owner_key(kind, "");
        let kvs = self.store.list(&prefix).await?;
        kvs.iter()
            .map(|kv| {
                let name = kv.key[prefix.len()..].to_string();
                Ok((name, super::txn::decode::<Owner>(kv)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[test]
    fn records_follow_the_creation_and_deletion_of_owned_objects() {
        let dev = Owner::token("dev-a");
        let mut txn = Txn::new()
            .when(Compare::absent("/lattice/v1/desired/web"))
            .then(Op::put("/lattice/v1/desired/web", vec![1]))
            .then(Op::put("/lattice/v1/actual/web/0", vec![2]))
            .then(Op::delete("/lattice/v1/task/t1"))
            .then(Op::delete("/lattice/v1/actual/web/1"));
        follow(&mut txn, Some(&dev));
        let extra = &txn.ops[4..];
        assert_eq!(
            extra,
            [
                Op::put(
                    "/lattice/v1/owner/app/web",
                    prost::Message::encode_to_vec(&dev)
                ),
                Op::delete("/lattice/v1/owner/task/t1"),
            ]
        );
        // An update (no absence guard) keeps the owner it has; no creator, no record.
        for creator in [Some(&dev), None] {
            let mut update = Txn::new()
                .when(Compare::ModRevision("/lattice/v1/volume/pg".into(), 7))
                .then(Op::put("/lattice/v1/volume/pg", vec![1]));
            follow(&mut update, creator);
            assert_eq!(update.ops.len(), 1);
        }
        let mut made = Txn::new()
            .when(Compare::absent("/lattice/v1/backup/b1"))
            .then(Op::put("/lattice/v1/backup/b1", vec![1]));
        follow(&mut made, None);
        assert_eq!(made.ops.len(), 1, "made over gRPC: the admins'");
    }

    #[tokio::test]
    async fn objects_made_through_a_view_belong_to_its_owner_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(std::sync::Arc::new(
            EmbeddedStore::open(dir.path().join("s.db")).unwrap(),
        ));
        let task = |_: &str| lattice_specs::testing::task_definition("/bin/true");
        db.created_by(Owner::token("dev-a"))
            .desire_task("t1", "apps", task("t1"))
            .await
            .unwrap();
        db.desire_task("t2", "apps", task("t2")).await.unwrap();
        let owner = db.owner(OwnedKind::Task, "t1").await.unwrap();
        assert_eq!(owner.unwrap().token, "dev-a");
        assert_eq!(db.owner(OwnedKind::Task, "t2").await.unwrap(), None);
        assert_eq!(db.owners(OwnedKind::Task).await.unwrap().len(), 1);
        db.cancel_task("t1").await.unwrap();
        db.resolving_task("t1").await.unwrap();
        db.delete_task("t1").await.unwrap();
        assert!(db.owners(OwnedKind::Task).await.unwrap().is_empty());
    }
}
