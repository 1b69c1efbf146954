//! The cell's DNS server: names of running instances followed from a BBS (the
//! in-process one), forwarding to an upstream, asked over UDP and TCP with hickory's
//! resolver; and (as root) a container reaching another container by name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use lattice_bbs_client::fake::FakeBbs;
use lattice_bbs_client::CellWrites;
use lattice_cell::dns::{Dns, DnsConfig, Upstream};
use lattice_specs::models::ActualLrpNetInfo;

/// A resolver asking only `server`, over UDP or TCP, with no cache.
fn client(server: SocketAddr, tcp: bool) -> TokioResolver {
    let mut conn = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        vec![conn],
    )]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(2);
    let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    *b.options_mut() = opts;
    b.build().unwrap()
}

/// The A records of `name`, sorted; `Err(true)` for NXDOMAIN, `Err(false)` for
/// another failure.
async fn a_records(c: &TokioResolver, name: &str) -> Result<Vec<Ipv4Addr>, bool> {
    match c.lookup(name, RecordType::A).await {
        Ok(l) => {
            let mut ips: Vec<Ipv4Addr> = l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            ips.sort();
            Ok(ips)
        }
        Err(e) => Err(e.is_nx_domain()),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A DNS server for `domain` on loopback, fed by `bbs`, forwarding to `upstream`.
async fn start(bbs: &FakeBbs, domain: &str, upstream: Upstream) -> Dns {
    start_counted(bbs, domain, upstream, lattice_cell::dns::queries_metric()).await
}

/// [`start`], its answers counted in `queries`.
async fn start_counted(
    bbs: &FakeBbs,
    domain: &str,
    upstream: Upstream,
    queries: prometheus::IntCounterVec,
) -> Dns {
    let cfg = DnsConfig {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        domain: domain.into(),
        upstream,
        resync_every: Duration::from_secs(3600),
    };
    Dns::start(&cfg, Arc::new(bbs.clone()), queries)
        .await
        .unwrap()
}

/// Makes instance `index` of `guid` RUNNING at `addr`.
async fn run(bbs: &FakeBbs, guid: &str, index: i32, addr: &str) {
    let ik = lattice_specs::testing::instance_key(&format!("{guid}-{index}"), "cell-1");
    let net = ActualLrpNetInfo {
        address: "192.168.0.10".into(),
        instance_address: addr.into(),
        ..Default::default()
    };
    bbs.claim_actual_lrp(guid, index, &ik, 1).await.unwrap();
    bbs.start_actual_lrp(guid, index, &ik, &net).await.unwrap();
}

/// Waits (up to 5 s) until `name` answers `want`; how long it took.
async fn becomes(c: &TokioResolver, name: &str, want: Result<Vec<Ipv4Addr>, bool>) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = a_records(c, name).await;
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{name}: {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn instances_are_named_as_they_run_and_stop_and_other_names_are_forwarded() {
    // The "host's resolver": another DNS server, answering for example.test.
    let upstream_bbs = FakeBbs::start().await;
    let d = lattice_specs::testing::desired_lrp("outside", 1);
    upstream_bbs.db().desire_lrp(d).await.unwrap();
    run(&upstream_bbs, "outside", 0, "192.0.2.7").await;
    let upstream = start(&upstream_bbs, "example.test", Upstream::Servers(vec![])).await;

    let bbs = FakeBbs::start().await;
    for (guid, n) in [("web", 2), ("api", 1)] {
        let d = lattice_specs::testing::desired_lrp(guid, n);
        bbs.db().desire_lrp(d).await.unwrap();
    }
    run(&bbs, "web", 0, "10.255.0.2").await;
    run(&bbs, "web", 1, "10.255.1.3").await;
    let queries = lattice_cell::dns::queries_metric();
    let dns = start_counted(
        &bbs,
        "apps.internal",
        Upstream::Servers(vec![upstream.local_addr()]),
        queries.clone(),
    )
    .await;
    let (udp, tcp) = (
        client(dns.local_addr(), false),
        client(dns.local_addr(), true),
    );

    // The snapshot: both instances, over UDP and TCP, case-insensitively.
    let web = vec![ip("10.255.0.2"), ip("10.255.1.3")];
    becomes(&udp, "web.apps.internal.", Ok(web.clone())).await;
    assert_eq!(a_records(&tcp, "WEB.Apps.Internal.").await, Ok(web.clone()));
    assert_eq!(
        a_records(&udp, "1.web.apps.internal.").await,
        Ok(vec![ip("10.255.1.3")])
    );
    assert_eq!(
        a_records(&udp, "2.web.apps.internal.").await,
        Err(true),
        "index out of range"
    );
    assert_eq!(a_records(&udp, "nope.apps.internal.").await, Err(true));
    // An AAAA question about a name that exists: no data, not NXDOMAIN (musl and
    // glibc ask both and give up on an NXDOMAIN).
    let aaaa = udp.lookup("web.apps.internal.", RecordType::AAAA).await;
    assert!(
        aaaa.as_ref()
            .is_err_and(|e| !e.is_nx_domain() && e.is_no_records_found()),
        "{aaaa:?}"
    );

    // An instance becomes RUNNING: named at once; it crashes: gone at once.
    assert_eq!(a_records(&udp, "api.apps.internal.").await, Err(true));
    run(&bbs, "api", 0, "10.255.0.9").await;
    let appeared = becomes(&udp, "api.apps.internal.", Ok(vec![ip("10.255.0.9")])).await;
    println!("RUNNING -> resolvable in {appeared:?}");
    let ik = lattice_specs::testing::instance_key("api-0", "cell-1");
    bbs.crash_actual_lrp("api", 0, &ik, "boom").await.unwrap();
    becomes(&udp, "api.apps.internal.", Err(true)).await;
    // An instance removed: the other stays.
    let ik = lattice_specs::testing::instance_key("web-1", "cell-1");
    bbs.remove_actual_lrp("web", 1, Some(&ik)).await.unwrap();
    becomes(&tcp, "web.apps.internal.", Ok(vec![ip("10.255.0.2")])).await;

    // Other names go to the upstream, its NXDOMAIN included.
    assert_eq!(
        a_records(&udp, "outside.example.test.").await,
        Ok(vec![ip("192.0.2.7")])
    );
    assert_eq!(
        a_records(&tcp, "outside.example.test.").await,
        Ok(vec![ip("192.0.2.7")])
    );
    assert_eq!(a_records(&udp, "missing.example.test.").await, Err(true));

    // Every answer was counted by its kind.
    let count = |kind: &str| queries.with_label_values(&[kind]).get();
    assert!(count("address") >= 5, "{}", count("address"));
    assert!(count("nxdomain") >= 4, "{}", count("nxdomain"));
    assert_eq!(count("nodata"), 1, "the AAAA question");
    assert_eq!(count("forwarded"), 3);
    assert_eq!(count("servfail"), 0);

    dns.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn without_an_upstream_other_names_fail_fast() {
    let bbs = FakeBbs::start().await;
    let dns = start(&bbs, "apps.internal", Upstream::Servers(vec![])).await;
    let c = client(dns.local_addr(), false);
    let t0 = Instant::now();
    assert_eq!(a_records(&c, "example.com.").await, Err(false), "SERVFAIL");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(a_records(&c, "web.apps.internal.").await, Err(true));
    dns.stop().await;
}

#[tokio::test]
async fn a_server_on_an_address_the_host_lacks_says_so() {
    let cfg = DnsConfig {
        // TEST-NET-1: on no interface of a test host.
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 0),
        domain: "apps.internal".into(),
        upstream: Upstream::Servers(vec![]),
        resync_every: Duration::from_secs(3600),
    };
    let bbs = FakeBbs::start().await;
    let e = Dns::start(&cfg, Arc::new(bbs), lattice_cell::dns::queries_metric())
        .await
        .err()
        .expect("no interface has 192.0.2.1")
        .to_string();
    assert!(
        e.contains("192.0.2.1") && e.contains("the bridge must exist"),
        "{e}"
    );
}

#[tokio::test]
async fn a_container_reaches_another_by_name_through_the_cells_dns() {
    use lattice_cell::shim::ShimEvent;
    use lattice_cell::testing::{leftovers, request, wait_event, TestExecutor};
    use lattice_specs::testing::sh;

    let t = TestExecutor::new();
    let net = t.exec.network().config().clone();
    let bbs = FakeBbs::start().await;
    let d = lattice_specs::testing::desired_lrp("web", 1);
    bbs.db().desire_lrp(d).await.unwrap();
    // The cell's own server, on the bridge's gateway; nothing to forward to.
    let cfg = DnsConfig {
        upstream: Upstream::Servers(vec![]),
        ..DnsConfig::for_network(&net)
    };
    let dns = Dns::start(
        &cfg,
        Arc::new(bbs.clone()),
        lattice_cell::dns::queries_metric(),
    )
    .await
    .unwrap();
    assert_eq!(dns.local_addr(), SocketAddr::from((net.gateway, 53)));

    let web = t
        .exec
        .create(request(
            "dns-web",
            sh("mkdir -p /www && echo hello-by-name > /www/index.html && exec httpd -f -p 8080 -h /www"),
        ))
        .await
        .unwrap();
    run(&bbs, "web", 0, &web.ip().to_string()).await;
    becomes(
        &client(dns.local_addr(), false),
        "web.apps.internal.",
        Ok(vec![web.ip()]),
    )
    .await;

    // Plain `wget` (Debian busybox's `wget -T` crashes), retried while httpd starts.
    let script = "cat /etc/resolv.conf > /tmp/resolv; cat /etc/hosts > /tmp/hosts; \
        nslookup web.apps.internal > /tmp/ns 2>&1; \
        i=0; until wget -q -O- http://web.apps.internal:8080/ > /tmp/page; do \
          i=$((i+1)); [ $i -ge 50 ] && exit 1; sleep 0.2; done; \
        wget -q -O- http://web:8080/ > /tmp/short";
    let client_info = t
        .exec
        .create(request("dns-client", sh(script)))
        .await
        .unwrap();
    let exited = wait_event(&t.exec, "dns-client", Duration::from_secs(30), |e| {
        matches!(e, ShimEvent::Exited { .. })
    })
    .await;
    let read = |path: &'static str| {
        let exec = t.exec.clone();
        async move { exec.read_file("dns-client", path).await.unwrap_or_default() }
    };
    let (resolv, hosts, ns, page, short) = (
        read("/tmp/resolv").await,
        read("/tmp/hosts").await,
        read("/tmp/ns").await,
        read("/tmp/page").await,
        read("/tmp/short").await,
    );
    assert!(
        matches!(exited, ShimEvent::Exited { failed: false, .. }),
        "{exited:?}; resolv.conf: {resolv}; nslookup: {ns}"
    );
    assert_eq!(
        resolv,
        format!(
            "nameserver {}\nsearch apps.internal\noptions ndots:1\n",
            net.gateway
        )
    );
    assert!(
        hosts.contains("127.0.0.1 localhost")
            && hosts.contains(&format!("{} dns-client", client_info.ip())),
        "{hosts}"
    );
    assert!(ns.contains(&web.ip().to_string()), "nslookup: {ns}");
    assert_eq!(page.trim(), "hello-by-name");
    assert_eq!(
        short.trim(),
        "hello-by-name",
        "the short name through the search domain"
    );

    dns.stop().await;
    for handle in ["dns-client", "dns-web"] {
        t.exec.destroy(handle).await;
        let left = leftovers(&t.exec, handle);
        assert!(left.is_empty(), "{handle} left behind: {left:?}");
    }
}

/// The in-process BBS behind a switch: while `down`, every call fails and the event
/// stream open at the time ends.
#[derive(Clone)]
struct Flaky {
    inner: FakeBbs,
    down: tokio::sync::watch::Sender<bool>,
}

impl Flaky {
    fn check(&self) -> lattice_bbs_client::Result<()> {
        if *self.down.borrow() {
            Err(tonic::Status::unavailable("the BBS is down (test)").into())
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl lattice_bbs_client::Events for Flaky {
    async fn subscribe_events(
        &self,
    ) -> lattice_bbs_client::Result<lattice_bbs_client::EventStream> {
        use futures::StreamExt as _;
        self.check()?;
        let mut down = self.down.subscribe();
        let cut = async move {
            let _ = down.wait_for(|d| *d).await;
        };
        Ok(self.inner.subscribe_events().await?.take_until(cut).boxed())
    }
}

#[async_trait::async_trait]
impl lattice_bbs_client::Reads for Flaky {
    async fn desired_lrps(
        &self,
    ) -> lattice_bbs_client::Result<Vec<lattice_specs::models::DesiredLrp>> {
        self.check()?;
        self.inner.desired_lrps().await
    }
    async fn desired_lrp(
        &self,
        guid: &str,
    ) -> lattice_bbs_client::Result<lattice_specs::models::DesiredLrp> {
        self.check()?;
        self.inner.desired_lrp(guid).await
    }
    async fn actual_lrps(
        &self,
        filter: &lattice_bbs_client::ActualLrpFilter,
    ) -> lattice_bbs_client::Result<Vec<lattice_specs::models::ActualLrp>> {
        self.check()?;
        self.inner.actual_lrps(filter).await
    }
    async fn tasks(
        &self,
        filter: &lattice_bbs_client::TaskFilter,
    ) -> lattice_bbs_client::Result<Vec<lattice_specs::models::Task>> {
        self.check()?;
        self.inner.tasks(filter).await
    }
    async fn task(&self, guid: &str) -> lattice_bbs_client::Result<lattice_specs::models::Task> {
        self.check()?;
        self.inner.task(guid).await
    }
    async fn cells(&self) -> lattice_bbs_client::Result<Vec<lattice_specs::models::CellPresence>> {
        self.check()?;
        self.inner.cells().await
    }
    async fn domains(&self) -> lattice_bbs_client::Result<Vec<lattice_specs::models::Domain>> {
        self.check()?;
        self.inner.domains().await
    }
    async fn volumes(
        &self,
        cell_id: &str,
    ) -> lattice_bbs_client::Result<Vec<lattice_specs::models::Volume>> {
        self.check()?;
        self.inner.volumes(cell_id).await
    }
}

#[tokio::test]
async fn names_outlive_the_bbs_going_away_and_catch_up_when_it_is_back() {
    use lattice_bbs_client::Reads as _;
    let inner = FakeBbs::start().await;
    for guid in ["web", "api"] {
        let d = lattice_specs::testing::desired_lrp(guid, 1);
        inner.db().desire_lrp(d).await.unwrap();
    }
    run(&inner, "web", 0, "10.255.0.2").await;
    let (down, _) = tokio::sync::watch::channel(false);
    let bbs = Flaky {
        inner: inner.clone(),
        down,
    };
    let cfg = DnsConfig {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        domain: "apps.internal".into(),
        upstream: Upstream::Servers(vec![]),
        resync_every: Duration::from_secs(3600),
    };
    let dns = Dns::start(
        &cfg,
        Arc::new(bbs.clone()),
        lattice_cell::dns::queries_metric(),
    )
    .await
    .unwrap();
    let c = client(dns.local_addr(), false);
    becomes(&c, "web.apps.internal.", Ok(vec![ip("10.255.0.2")])).await;

    // The BBS goes away: the stream ends, reconnecting fails; the names stay.
    bbs.down.send_replace(true);
    assert!(bbs.actual_lrps(&Default::default()).await.is_err());
    run(&inner, "api", 0, "10.255.0.9").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a_records(&c, "web.apps.internal.").await,
        Ok(vec![ip("10.255.0.2")])
    );
    assert_eq!(
        a_records(&c, "api.apps.internal.").await,
        Err(true),
        "what happened while it was away is not known yet"
    );
    assert_eq!(dns.table().len(), 1, "the records it last knew");

    // Back: resubscribed, and the snapshot brings what was missed.
    bbs.down.send_replace(false);
    let caught_up = becomes(&c, "api.apps.internal.", Ok(vec![ip("10.255.0.9")])).await;
    assert!(caught_up < Duration::from_secs(5), "{caught_up:?}");
    dns.stop().await;
}
