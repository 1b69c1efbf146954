//! A whole cluster on a [`Lan`], every component on a host of its own: etcd, the BBS
//! (on etcd), a brain converging every second, cells, the router, and an "outside"
//! host running a plain HTTP server (as a machine beyond the cluster). The base of the
//! multi-host end-to-end tests (`tests/tests/multihost.rs`). Security is on: every
//! component has a certificate from a CA made for the test ([`TestPki`]) and every
//! internal connection is mutual TLS; the BBS's public API is HTTPS.

use lattice_specs::identity::Role;

use crate::hosts::{EtcdOnHost, Host, HttpServer, Lan};
use crate::pki::TestPki;
use crate::{BbsProcess, BrainProcess, CellProcess, RouterProcess};

/// What the outside host's server answers at `/`.
pub const OUTSIDE_BODY: &str = "hello from outside\n";

/// Every component on a host of its own. Fields drop in order: the processes first
/// (each cell destroying its containers), the LAN (its switch) last.
pub struct LanCluster {
    /// On host `router`: apps at IP:8080 (`Host: APP.lattice.localhost`).
    pub router: RouterProcess,
    /// `cell-I` on `cell_hosts[I]`, in the order started.
    pub cells: Vec<CellProcess>,
    /// `brain-0` on host `brain`.
    pub brain: BrainProcess,
    /// On host `bbs`, its store on etcd.
    pub bbs: BbsProcess,
    /// On host `etcd`.
    pub etcd: EtcdOnHost,
    /// On the outside host at IP:80, answering [`OUTSIDE_BODY`].
    pub httpd: HttpServer,
    pub outside: Host,
    /// Host `cellI` for cell `cell-I`.
    pub cell_hosts: Vec<Host>,
    /// The cluster's CA and the test's certificate.
    pub pki: TestPki,
    pub lan: Lan,
}

impl LanCluster {
    /// A cluster with `cells` cells.
    pub fn start(cells: usize) -> LanCluster {
        Self::start_with(cells, cells)
    }

    /// A cluster with `hosts` cell hosts and cells started on the first `cells` of them
    /// (the others for [`LanCluster::start_cell`]).
    pub fn start_with(hosts: usize, cells: usize) -> LanCluster {
        Self::start_opts(hosts, cells, &[])
    }

    /// [`LanCluster::start_with`], the BBS started with `bbs_extra` flags (the
    /// cluster's network settings: `--default-egress-rules`, `--internal-domain`…).
    pub fn start_opts(hosts: usize, cells: usize, bbs_extra: &[&str]) -> LanCluster {
        let lan = Lan::new();
        let etcd_host = lan.host("etcd");
        let bbs_host = lan.host("bbs");
        let brain_host = lan.host("brain");
        let router_host = lan.host("router");
        let outside = lan.host("outside");
        let cell_hosts: Vec<Host> = (0..hosts).map(|i| lan.host(&format!("cell{i}"))).collect();
        let httpd = HttpServer::start(&outside, OUTSIDE_BODY);
        let etcd = EtcdOnHost::start(&etcd_host);
        let pki = TestPki::new();
        // Its certificate names its address too: it serves the public API (HTTPS,
        // beyond loopback) with it.
        let bbs_tls = pki.flags_naming(Role::Bbs, "bbs", &[bbs_host.ip().to_string()]);
        let bbs_extra: Vec<&str> = bbs_extra
            .iter()
            .copied()
            .chain(bbs_tls.iter().map(String::as_str))
            .collect();
        let mut bbs =
            BbsProcess::start_on(&bbs_host, &format!("etcd://{}", etcd.endpoint), &bbs_extra);
        bbs.tls = Some(pki.to_bbs());
        let brain_tls = pki.flags(Role::Brain, "brain-0");
        let brain_extra: Vec<&str> = ["--lock-ttl", "2", "--convergence-interval", "1"]
            .into_iter()
            .chain(brain_tls.iter().map(String::as_str))
            .collect();
        let brain = BrainProcess::start_on(&brain_host, &bbs.grpc, "brain-0", &brain_extra);
        let router = RouterProcess::start_on_with(
            &router_host,
            &bbs.grpc,
            &pki.flags(Role::Router, "router"),
        );
        let mut cluster = LanCluster {
            router,
            cells: vec![],
            brain,
            bbs,
            etcd,
            httpd,
            outside,
            cell_hosts,
            pki,
            lan,
        };
        for i in 0..cells {
            cluster.start_cell(i, &[]);
        }
        cluster
    }

    /// Starts cell `cell-I` on cell host `i`, with `extra` flags (they override the
    /// harness's: `--lease-ttl`, `--subnet`…).
    pub fn start_cell(&mut self, i: usize, extra: &[&str]) {
        let id = format!("cell-{i}");
        let tls = self.pki.flags(Role::Cell, &id);
        let extra: Vec<&str> = tls
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let mut cell = CellProcess::start_on(&self.cell_hosts[i], &self.bbs.grpc, &id, &extra);
        cell.tls = Some(self.pki.to_reps());
        self.cells.push(cell);
    }

    /// Adds a cell host on another segment, one router away from the others (they
    /// reach its cell through VXLAN, not routed directly): its index for
    /// [`LanCluster::start_cell`].
    pub fn add_cell_host_beyond_router(&mut self) -> usize {
        let i = self.cell_hosts.len();
        let host = self.lan.host_beyond_router(&format!("cell{i}"));
        self.cell_hosts.push(host);
        i
    }

    /// `GET path` of the BBS's public API (HTTPS, verified against the cluster CA
    /// for the BBS's address), from the outside host.
    pub fn api_get(&self, path: &str) -> Option<(u16, String)> {
        self.outside
            .https_get(&self.bbs.api, path, &self.pki.to_api())
    }

    /// `METHOD path` of the BBS's public API with `body` and an `Authorization`
    /// header, from the outside host: (status, the JSON answer, or its text as a JSON
    /// string).
    pub fn api(
        &self,
        auth: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self
            .outside
            .https_request(
                &self.bbs.api,
                method,
                path,
                &[("Authorization", auth)],
                body,
                &self.pki.to_api(),
            )
            .expect("the public API answers");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// `GET /` of `app` through the router, from the outside host.
    pub fn get(&self, app: &str) -> Option<(u16, String)> {
        self.outside.http_get(
            &self.router.listen,
            "/",
            Some(&format!("{app}.lattice.localhost")),
        )
    }
}
