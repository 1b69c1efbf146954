//! BBS write throughput: desire + claim + start of N LRP instances.
//!
//! Four runs in one process, on one freshly started etcd:
//! 1. raw etcd: the same store operations done directly with etcd-client
//!    (a put for the desired LRP, create-if-absent batches for the instances,
//!    then get + compare-and-swap for every claim and every start);
//! 2. the BBS (gRPC on loopback) on that etcd;
//! 3. the BBS on the embedded store (the single-VM mode);
//! 4. the same over mutual TLS (issue 22: every internal connection is mTLS).
//!
//! Usage: cargo run --release -p lattice-bench --bin bbs-throughput -- [--instances N] [--concurrency C]

use lattice_bench::arg;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::store::etcd::EtcdStore;
use lattice_bbs::store::Store;
use lattice_bbs::testing::EtcdServer;
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::{
    ActualLrpRef, ClaimActualLrpRequest, DesireLrpRequest, StartActualLrpRequest,
};
use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::*;
use prost::Message;

fn desired(guid: &str, n: i32) -> DesiredLrp {
    DesiredLrp {
        domain: "bench".into(),
        cpu_weight: 10,
        memory_mb: 64,
        ..lattice_specs::testing::desired_lrp(guid, n)
    }
}

fn ik(i: i32) -> ActualLrpInstanceKey {
    lattice_specs::testing::instance_key(&format!("instance-{i}"), &format!("cell-{}", i % 100))
}

fn net(i: i32) -> ActualLrpNetInfo {
    ActualLrpNetInfo {
        address: "10.0.0.1".into(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: 60000 + (i % 5000) as u32,
        }],
        ..Default::default()
    }
}

/// Run `f(index)` for every index in 0..n with `c` concurrent workers.
async fn fan_out<F, Fut>(n: i32, c: usize, f: F)
where
    F: Fn(i32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicI32::new(0));
    let workers: Vec<_> = (0..c)
        .map(|_| {
            let (next, f) = (next.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    f(i).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

async fn raw_etcd(endpoint: &str, n: i32, c: usize) -> Duration {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let prefix = "/raw/v1";
    let t0 = Instant::now();
    let mut kv = client.kv_client();
    kv.put(
        format!("{prefix}/desired/app"),
        desired("app", n).encode_to_vec(),
        None,
    )
    .await
    .unwrap();
    let now = lattice_specs::now_nanos();
    let idx: Vec<i32> = (0..n).collect();
    for chunk in idx.chunks(64) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|i| format!("{prefix}/actual/app/{i}"))
            .collect();
        let cmp: Vec<Compare> = keys
            .iter()
            .map(|k| Compare::mod_revision(k.as_str(), CompareOp::Equal, 0))
            .collect();
        let ops: Vec<TxnOp> = chunk
            .iter()
            .zip(&keys)
            .map(|(i, k)| {
                TxnOp::put(
                    k.as_str(),
                    lattice_specs::actual_lrp::new_unclaimed("app", *i, "bench", now)
                        .encode_to_vec(),
                    None,
                )
            })
            .collect();
        assert!(kv
            .txn(Txn::new().when(cmp).and_then(ops))
            .await
            .unwrap()
            .succeeded());
    }
    for phase in [State::Claimed, State::Running] {
        let client = client.clone();
        fan_out(n, c, move |i| {
            let mut kv = client.kv_client();
            async move {
                let key = format!("{prefix}/actual/app/{i}");
                let got = kv.get(key.as_str(), None).await.unwrap();
                let cur = &got.kvs()[0];
                let mut l = ActualLrp::decode(cur.value()).unwrap();
                l.set_state(phase);
                l.instance_key = Some(ik(i));
                if phase == State::Running {
                    l.net_info = Some(net(i));
                }
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        cur.mod_revision(),
                    )])
                    .and_then([TxnOp::put(key.as_str(), l.encode_to_vec(), None)]);
                assert!(kv.txn(txn).await.unwrap().succeeded());
            }
        })
        .await;
    }
    t0.elapsed()
}

/// The BBS's certificate and a client's (as the BBS's identity, allowed every call)
/// from a CA made for the run.
fn mtls() -> (lattice_tls::NodeTls, lattice_tls::client::ClientTls) {
    let ca = lattice_tls::ca::Ca::generate().unwrap();
    let k = ca
        .issue_new_key(&lattice_tls::bbs_identity(), &[], Duration::from_secs(3600))
        .unwrap();
    let node = lattice_tls::NodeTls::from_pem(
        k.cert.cert_pem.as_bytes(),
        k.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap();
    let client = lattice_tls::client::ClientTls::new(&node, lattice_tls::bbs_identity()).unwrap();
    (node, client)
}

async fn through_bbs(store: Arc<dyn Store>, n: i32, c: usize, tls: bool) -> Duration {
    let (node, client_tls) = mtls();
    let bbs = server::start_with_store(
        store,
        BbsConfig {
            tls: tls.then_some(node),
            ..BbsConfig::loopback(StoreUrl::File("unused".into()), Duration::from_secs(10))
        },
    )
    .await
    .unwrap();
    // A few HTTP/2 connections, as several components would have.
    let mut clients = vec![];
    for _ in 0..4 {
        let ch = lattice_tls::client::lazy_channel(
            &bbs.grpc_addr.to_string(),
            tls.then_some(&client_tls),
            |e| e.tcp_nodelay(true),
        )
        .unwrap();
        clients.push(BbsClient::new(ch));
    }
    let t0 = Instant::now();
    clients[0]
        .clone()
        .desire_lrp(DesireLrpRequest {
            desired_lrp: Some(desired("app", n)),
        })
        .await
        .unwrap();
    let key = |i: i32| {
        Some(ActualLrpRef {
            process_guid: "app".into(),
            index: i,
        })
    };
    let cl = clients.clone();
    fan_out(n, c, move |i| {
        let mut client = cl[i as usize % cl.len()].clone();
        async move {
            client
                .claim_actual_lrp(ClaimActualLrpRequest {
                    generation: 0,
                    key: key(i),
                    instance_key: Some(ik(i)),
                })
                .await
                .unwrap();
        }
    })
    .await;
    let cl = clients.clone();
    fan_out(n, c, move |i| {
        let mut client = cl[i as usize % cl.len()].clone();
        async move {
            client
                .start_actual_lrp(StartActualLrpRequest {
                    key: key(i),
                    instance_key: Some(ik(i)),
                    net_info: Some(net(i)),
                })
                .await
                .unwrap();
        }
    })
    .await;
    let took = t0.elapsed();
    bbs.shutdown().await;
    took
}

#[tokio::main]
async fn main() {
    let n = arg("--instances", 10_000) as i32;
    let c = arg("--concurrency", 64);
    println!(
        "BBS write throughput: desire + claim + start of {n} instances, {c} concurrent clients"
    );
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();

    let raw = raw_etcd(&endpoint, n, c).await;
    let etcd_store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&endpoint), Duration::from_secs(10))
            .await
            .unwrap(),
    );
    let bbs_etcd = through_bbs(etcd_store, n, c, false).await;
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path().join("bbs.db")).unwrap());
    let bbs_embedded = through_bbs(embedded, n, c, false).await;
    let embedded: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path().join("bbs-tls.db")).unwrap());
    let bbs_embedded_tls = through_bbs(embedded, n, c, true).await;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{:<34} {:>10} {:>14}", "run", "seconds", "instances/s");
    for (name, d) in [
        ("raw etcd-client (peer)", raw),
        ("BBS on etcd", bbs_etcd),
        ("BBS on embedded store", bbs_embedded),
        ("BBS on embedded store, mTLS", bbs_embedded_tls),
    ] {
        println!("{:<34} {:>10.2} {:>14.0}", name, d.as_secs_f64(), rate(d));
    }
    let r1 = rate(bbs_etcd) / rate(raw);
    let r2 = rate(bbs_embedded) / rate(bbs_etcd);
    println!("ratio BBS-on-etcd / raw etcd:      {r1:.2}  (target >= 0.5)");
    println!("ratio BBS-embedded / BBS-on-etcd:  {r2:.2}  (target >= 5)");
    let r3 = rate(bbs_embedded_tls) / rate(bbs_embedded);
    println!("ratio mTLS / plaintext (embedded): {r3:.2}  (target >= 0.9)");
}
