//! Test support: a real `etcd` process on free loopback ports in a temp dir,
//! stopped and removed when dropped (also when the test panics).
//!
//! A missing `etcd` binary is a failure, never a silent skip: install it with
//! `scripts/setup.sh`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    // The kernel may hand the same free port out twice in a row (the listener is gone by
    // then): a test that asks for several (`lattice up`'s API and gRPC) must get distinct
    // ones, so none is given twice in this process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("binding a loopback port")
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("creating a temp dir for etcd");
        let mut s = EtcdServer {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({e}): install it with scripts/setup.sh (Debian package etcd-server)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.client_port).parse().unwrap();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen within 20 s; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kill etcd (SIGKILL); its data stays for `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The etcd process id (to pause it with SIGSTOP in fault tests).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Start etcd again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Model fixtures shared by tests and benchmarks: the model builders of
/// `lattice_specs::testing`, and starting an instance through a BBS.
pub mod fixtures {
    pub use lattice_specs::testing::{desired_lrp, routed_lrp};

    use lattice_specs::bbs_api::bbs_client::BbsClient;
    use lattice_specs::bbs_api::{ActualLrpRef, ClaimActualLrpRequest, StartActualLrpRequest};
    use lattice_specs::models::*;
    use lattice_specs::testing::instance_key;

    /// Claim and start instance `index` as a cell would, listening at 127.0.0.1:`port`.
    pub async fn run_instance(
        client: &mut BbsClient<tonic::transport::Channel>,
        guid: &str,
        index: i32,
        port: u16,
    ) -> ActualLrpInstanceKey {
        let ik = instance_key(&format!("{guid}-{index}-{port}"), "cell-1");
        let key = Some(ActualLrpRef {
            process_guid: guid.into(),
            index,
        });
        client
            .claim_actual_lrp(ClaimActualLrpRequest {
                generation: 0,
                key: key.clone(),
                instance_key: Some(ik.clone()),
            })
            .await
            .expect("claim");
        let net = ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: port as u32,
            }],
            ..Default::default()
        };
        client
            .start_actual_lrp(StartActualLrpRequest {
                key,
                instance_key: Some(ik.clone()),
                net_info: Some(net),
            })
            .await
            .expect("start");
        ik
    }
}

/// A fresh store on a real etcd (keep the [`EtcdServer`] alive while the store is used).
pub async fn etcd_store() -> (std::sync::Arc<dyn crate::store::Store>, EtcdServer) {
    let etcd = EtcdServer::start();
    let store = crate::store::etcd::EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(3))
        .await
        .expect("connecting to the test etcd");
    (std::sync::Arc::new(store), etcd)
}

/// A fresh embedded store in a temp dir (keep the dir alive while the store is used).
pub fn embedded_store() -> (std::sync::Arc<dyn crate::store::Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir for the embedded store");
    let store = crate::store::embedded::EmbeddedStore::open(dir.path().join("bbs.db"))
        .expect("opening the embedded store");
    (std::sync::Arc::new(store), dir)
}

/// Runs each `async fn NAME(ARG)` of the calling test file against both stores, as the
/// tests `stores::etcd::NAME` and `stores::embedded::NAME`; `|store| EXPR` makes the
/// argument from the store (`Arc<dyn Store>`), e.g. `|store| Db::new(store)`.
#[macro_export]
macro_rules! both_stores {
    (|$store:ident| $arg:expr; $($name:ident),* $(,)?) => {
        mod stores {
            mod etcd {
                #[allow(unused_imports)]
                use super::super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let ($store, _etcd) = $crate::testing::etcd_store().await;
                        super::super::$name($arg).await;
                    }
                )*
            }
            mod embedded {
                #[allow(unused_imports)]
                use super::super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let ($store, _dir) = $crate::testing::embedded_store();
                        super::super::$name($arg).await;
                    }
                )*
            }
        }
    };
}
