//! The DNS half: the cell's DNS server fed by a real (in-process) BBS, against
//! dnsmasq answering the same name from a host record, under the same paced load;
//! and the time from an instance's start in the BBS to its name answering.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::testing::{fixtures, free_port};
use lattice_bbs_client::grpc::GrpcBbs;
use lattice_cell::dns::{Dns, DnsConfig, Upstream};
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::*;
use lattice_specs::models::ActualLrpNetInfo;

use crate::probe::{p50_p99, Kill};

const APP: &str = "bench-app";
const DOMAIN: &str = "apps.internal";

/// A DNS query for the A records of `name` (RFC 1035 §4.1, recursion desired).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether `answer` answers query `id` with NOERROR and at least one record.
fn answered(answer: &[u8], id: u16) -> bool {
    answer.len() >= 12
        && answer[..2] == id.to_be_bytes()
        && answer[3] & 0x0f == 0
        && u16::from_be_bytes([answer[6], answer[7]]) > 0
}

/// One query to `server` and its answer: the time taken, `None` for a wrong answer or
/// none within a second.
fn ask(sock: &UdpSocket, id: u16, name: &str) -> Option<Duration> {
    let q = query(id, name);
    let t0 = Instant::now();
    sock.send(&q).ok()?;
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        if buf[..2] == id.to_be_bytes() {
            return answered(&buf[..n], id).then(|| t0.elapsed());
        }
    }
}

/// Queries for `name` to `server` paced at `rate` per second for `seconds`: every
/// answer time, and how many went unanswered.
fn paced(server: SocketAddr, name: &str, rate: u64, seconds: u64) -> (Vec<Duration>, usize) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let every = Duration::from_nanos(1_000_000_000 / rate);
    let (mut times, mut lost) = (Vec::new(), 0);
    let start = Instant::now();
    for i in 0..rate * seconds {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match ask(&sock, i as u16, name) {
            Some(t) => times.push(t),
            None => lost += 1,
        }
    }
    (times, lost)
}

/// dnsmasq on loopback answering `name` with `ip` from a host record, nothing else
/// (no upstream, no /etc/hosts), no cache effects (the record is local data).
fn dnsmasq(name: &str, ip: Ipv4Addr) -> (Kill, SocketAddr) {
    let port = free_port();
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file",
            "--log-facility=/dev/null",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--host-record={name},{ip}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting dnsmasq (install it with scripts/setup-bench.sh)");
    (Kill(child), (Ipv4Addr::LOCALHOST, port).into())
}

/// Claims and starts instance `index` of [`APP`] at `address`, as a cell would.
async fn run_instance(c: &mut BbsClient<tonic::transport::Channel>, index: i32, address: Ipv4Addr) {
    let key = Some(ActualLrpRef {
        process_guid: APP.into(),
        index,
    });
    let ik = lattice_specs::testing::instance_key(&format!("{APP}-{index}"), "cell-1");
    c.claim_actual_lrp(ClaimActualLrpRequest {
        generation: 0,
        key: key.clone(),
        instance_key: Some(ik.clone()),
    })
    .await
    .expect("claim");
    let net_info = ActualLrpNetInfo {
        address: "127.0.0.1".into(),
        instance_address: address.to_string(),
        ..Default::default()
    };
    c.start_actual_lrp(StartActualLrpRequest {
        key,
        instance_key: Some(ik),
        net_info: Some(net_info),
    })
    .await
    .expect("start");
}

/// What the DNS half measured.
pub struct DnsFigures {
    pub ours: (f64, f64, usize),
    pub dnsmasq: (f64, f64, usize),
    pub queries: usize,
    /// RUNNING → resolvable, p50 and max, in ms.
    pub resolvable: (f64, f64),
    pub starts: usize,
}

pub async fn measure(rate: u64, seconds: u64, starts: usize) -> DnsFigures {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bbs.db");
    let store = Arc::new(EmbeddedStore::open(&db).unwrap());
    let bbs = server::start_with_store(
        store,
        BbsConfig::loopback(StoreUrl::File(db), Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let url = format!("http://{}", bbs.grpc_addr);
    let mut c = BbsClient::connect(url.clone()).await.unwrap();
    let desired = fixtures::desired_lrp(APP, starts as i32 + 1);
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(desired),
    })
    .await
    .unwrap();
    let first = Ipv4Addr::new(10, 250, 0, 2);
    run_instance(&mut c, 0, first).await;

    let cfg = DnsConfig {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        domain: DOMAIN.into(),
        upstream: Upstream::System,
        resync_every: Duration::from_secs(3600),
    };
    let feed = Arc::new(GrpcBbs::connect_lazy(&url).unwrap());
    let dns = Dns::start(&cfg, feed, lattice_cell::dns::queries_metric())
        .await
        .expect("starting the cell's DNS server");
    let name = format!("{APP}.{DOMAIN}");
    let ours = dns.local_addr();
    let (_dnsmasq, peer) = dnsmasq(&name, first);

    // Both answering before the clock starts.
    let settle = Instant::now() + Duration::from_secs(10);
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for server in [ours, peer] {
        sock.connect(server).unwrap();
        while ask(&sock, 1, &name).is_none() {
            assert!(Instant::now() < settle, "{server} does not answer {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let ((o, o_lost), (d, d_lost)) = {
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            // Each server in turn, twice: a drift of the machine weighs on both.
            let (mut o, mut ol, mut d, mut dl) = (vec![], 0, vec![], 0);
            for _ in 0..2 {
                let (t, l) = paced(ours, &n, rate, seconds.div_ceil(2));
                o.extend(t);
                ol += l;
                let (t, l) = paced(peer, &n, rate, seconds.div_ceil(2));
                d.extend(t);
                dl += l;
            }
            ((o, ol), (d, dl))
        })
        .await
        .unwrap()
    };
    let queries = o.len() + o_lost;
    let (op50, op99) = p50_p99(o);
    let (dp50, dp99) = p50_p99(d);

    // RUNNING → resolvable: each further instance started in the BBS, then its own
    // name (INDEX.APP) asked every 0.5 ms until it answers.
    let mut waits = Vec::with_capacity(starts);
    sock.connect(ours).unwrap();
    for i in 1..=starts {
        let t0 = Instant::now();
        run_instance(&mut c, i as i32, Ipv4Addr::new(10, 250, 0, 2 + i as u8)).await;
        let indexed = format!("{i}.{name}");
        let mut id = 0u16;
        loop {
            id = id.wrapping_add(1);
            if ask(&sock, id, &indexed).is_some() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{indexed} never resolved"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        waits.push(t0.elapsed());
    }
    let (r50, _) = p50_p99(waits.clone());
    let rmax = waits.iter().max().unwrap().as_secs_f64() * 1e6;
    dns.stop().await;
    drop(bbs);
    DnsFigures {
        ours: (op50, op99, o_lost),
        dnsmasq: (dp50, dp99, d_lost),
        queries,
        resolvable: (r50 / 1e3, rmax / 1e3),
        starts,
    }
}
