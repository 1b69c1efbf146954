//! The contract every `Store` backend must pass. Each function is one test;
//! `store_contract_tests!` instantiates them all for a backend.

use std::sync::Arc;
use std::time::Duration;

use super::{Change, Compare, Op, Store, StoreError, Txn, MAX_TXN_OPS};

pub async fn put_get_list_and_revisions(s: Arc<dyn Store>) {
    let r0 = s.revision().await.unwrap();
    let r1 = s
        .txn(Txn::new().then(Op::put("/t/a", b"1".to_vec())))
        .await
        .unwrap();
    assert!(r1.succeeded && r1.revision > r0);
    let r2 = s
        .txn(
            Txn::new()
                .then(Op::put("/t/b", b"2".to_vec()))
                .then(Op::put("/t/c", b"3".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(r2.revision, r1.revision + 1, "one revision per transaction");
    s.txn(Txn::new().then(Op::put("/u/x", b"other".to_vec())))
        .await
        .unwrap();
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.mod_revision, a.create_revision),
        (&b"1"[..], r1.revision, r1.revision)
    );
    let keys: Vec<String> = s
        .list("/t/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/t/a", "/t/b", "/t/c"]);
    let r3 = s
        .txn(Txn::new().then(Op::put("/t/a", b"1b".to_vec())))
        .await
        .unwrap();
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.mod_revision, a.create_revision),
        (r3.revision, r1.revision)
    );
    s.txn(Txn::new().then(Op::delete("/t/a"))).await.unwrap();
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    assert!(s.revision().await.unwrap() > r3.revision);
}

/// A list larger than any one read page comes back whole and in key order.
pub async fn large_lists_are_complete_and_ordered(s: Arc<dyn Store>) {
    let n = 12_345;
    let value = vec![7u8; 300];
    for chunk in (0..n).collect::<Vec<_>>().chunks(MAX_TXN_OPS) {
        let ops = chunk
            .iter()
            .map(|i| Op::put(format!("/big/{i:06}"), value.clone()))
            .collect();
        s.txn(Txn {
            compares: vec![],
            ops,
        })
        .await
        .unwrap();
    }
    s.txn(Txn::new().then(Op::put("/big0", b"outside".to_vec())))
        .await
        .unwrap();
    let all = s.list("/big/").await.unwrap();
    assert_eq!(all.len(), n);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "in key order");
    assert_eq!(all[0].key, "/big/000000");
    assert_eq!(all[n - 1].key, format!("/big/{:06}", n - 1));
}

pub async fn compare_and_swap_is_all_or_nothing(s: Arc<dyn Store>) {
    let created = s
        .txn(
            Txn::new()
                .when(Compare::absent("/cas/k"))
                .then(Op::put("/cas/k", b"v1".to_vec())),
        )
        .await
        .unwrap();
    assert!(created.succeeded);
    let again = s
        .txn(
            Txn::new()
                .when(Compare::absent("/cas/k"))
                .then(Op::put("/cas/k", b"v2".to_vec())),
        )
        .await
        .unwrap();
    assert!(
        !again.succeeded,
        "create-if-absent must fail when the key exists"
    );
    // A stale revision fails and applies none of the ops.
    let stale = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision("/cas/k".into(), created.revision - 1))
                .then(Op::put("/cas/k", b"v3".to_vec()))
                .then(Op::put("/cas/other", b"x".to_vec())),
        )
        .await
        .unwrap();
    assert!(!stale.succeeded);
    assert_eq!(s.get("/cas/k").await.unwrap().unwrap().value, b"v1");
    assert_eq!(
        s.get("/cas/other").await.unwrap(),
        None,
        "a failed txn writes nothing"
    );
    let ok = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision("/cas/k".into(), created.revision))
                .then(Op::put("/cas/k", b"v4".to_vec())),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    let err = s
        .txn(Txn {
            compares: vec![],
            ops: (0..=MAX_TXN_OPS)
                .map(|i| Op::put(format!("/cas/many/{i}"), vec![]))
                .collect(),
        })
        .await;
    assert!(matches!(err, Err(StoreError::TooManyOps(_))), "{err:?}");
    assert!(s.list("/cas/many/").await.unwrap().is_empty());
}

/// Many writers do read-modify-write increments with CAS and retries: no
/// update may be lost and no two writers may win on the same revision.
pub async fn concurrent_writers_never_both_win(s: Arc<dyn Store>) {
    s.txn(Txn::new().then(Op::put("/race/n", b"0".to_vec())))
        .await
        .unwrap();
    let writers = 8;
    let per_writer = 10;
    let mut handles = vec![];
    for _ in 0..writers {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut wins = 0;
            while wins < per_writer {
                let kv = s.get("/race/n").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                let r = s
                    .txn(
                        Txn::new()
                            .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                            .then(Op::put("/race/n", (n + 1).to_string().into_bytes())),
                    )
                    .await
                    .unwrap();
                if r.succeeded {
                    wins += 1;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let n = s.get("/race/n").await.unwrap().unwrap().value;
    assert_eq!(
        std::str::from_utf8(&n).unwrap(),
        (writers * per_writer).to_string()
    );
}

pub async fn leases_expire_renew_and_revoke(s: Arc<dyn Store>) {
    let short = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let kept = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let revoked = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    s.txn(Txn::new().then(Op::Put {
        key: "/lease/short".into(),
        value: b"s".to_vec(),
        lease: short,
    }))
    .await
    .unwrap();
    s.txn(Txn::new().then(Op::Put {
        key: "/lease/kept".into(),
        value: b"k".to_vec(),
        lease: kept,
    }))
    .await
    .unwrap();
    s.txn(Txn::new().then(Op::Put {
        key: "/lease/revoked".into(),
        value: b"r".to_vec(),
        lease: revoked,
    }))
    .await
    .unwrap();
    assert_eq!(s.get("/lease/kept").await.unwrap().unwrap().lease, kept);
    // Keep one alive for 3 s; the other expires (etcd may round TTLs up to ~2 s).
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(s.keep_alive(kept).await.unwrap() >= 1);
    }
    assert_eq!(
        s.get("/lease/short").await.unwrap(),
        None,
        "key of an expired lease is gone"
    );
    assert!(
        s.get("/lease/kept").await.unwrap().is_some(),
        "a renewed lease keeps its key"
    );
    let gone = s.keep_alive(short).await;
    assert!(
        matches!(gone, Err(StoreError::LeaseNotFound(_))),
        "{gone:?}"
    );
    s.revoke_lease(revoked).await.unwrap();
    assert_eq!(
        s.get("/lease/revoked").await.unwrap(),
        None,
        "revoking deletes the lease's keys"
    );
    let bad = s
        .txn(Txn::new().then(Op::Put {
            key: "/lease/x".into(),
            value: vec![],
            lease: short,
        }))
        .await;
    assert!(
        matches!(
            bad,
            Err(StoreError::LeaseNotFound(_)) | Err(StoreError::Internal(_))
        ),
        "{bad:?}"
    );
    assert_eq!(s.get("/lease/x").await.unwrap(), None);
}

pub async fn watch_sees_puts_updates_deletes_and_expiries(s: Arc<dyn Store>) {
    let mut w = s.watch("/w/").await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    s.txn(Txn::new().then(Op::put("/w/a", b"1".to_vec())))
        .await
        .unwrap();
    s.txn(Txn::new().then(Op::put("/elsewhere", b"x".to_vec())))
        .await
        .unwrap();
    s.txn(Txn::new().then(Op::put("/w/a", b"2".to_vec())))
        .await
        .unwrap();
    s.txn(Txn::new().then(Op::delete("/w/a"))).await.unwrap();
    s.txn(Txn::new().then(Op::Put {
        key: "/w/leased".into(),
        value: b"l".to_vec(),
        lease,
    }))
    .await
    .unwrap();
    let mut got: Vec<Change> = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 5 {
        let c = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("watch events within 10 s")
            .unwrap()
            .unwrap();
        got.push(c);
    }
    type Shape<'a> = (&'a str, Option<&'a [u8]>, Option<&'a [u8]>);
    let shape: Vec<Shape> = got
        .iter()
        .map(|c| (c.key.as_str(), c.value.as_deref(), c.prev_value.as_deref()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("/w/a", Some(&b"1"[..]), None),
            ("/w/a", Some(&b"2"[..]), Some(&b"1"[..])),
            ("/w/a", None, Some(&b"2"[..])),
            ("/w/leased", Some(&b"l"[..]), None),
            ("/w/leased", None, Some(&b"l"[..])),
        ]
    );
    assert!(
        got.windows(2).all(|p| p[0].revision < p[1].revision),
        "revisions increase"
    );
}

/// Instantiate the whole contract for a backend: `$make` is an async
/// expression giving `(Arc<dyn Store>, guard)`; the guard lives as long as the test.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@one $make, put_get_list_and_revisions);
        $crate::store_contract_tests!(@one $make, compare_and_swap_is_all_or_nothing);
        $crate::store_contract_tests!(@one $make, large_lists_are_complete_and_ordered);
        $crate::store_contract_tests!(@one $make, concurrent_writers_never_both_win);
        $crate::store_contract_tests!(@one $make, leases_expire_renew_and_revoke);
        $crate::store_contract_tests!(@one $make, watch_sees_puts_updates_deletes_and_expiries);
    };
    (@one $make:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = $make;
            $crate::store::contract::$name(store).await;
        }
    };
}
