//! The ssh proxy: Diego's `ssh-proxy` on port 2222 of the API host, what the original
//! Lattice `ltc ssh` (and plain `ssh -p 2222 diego:APP/0@HOST`) connects to.
//!
//! - **Login**: user `diego:PROCESS_GUID/INDEX` (`login`), password the API's own
//!   credential — its Basic `USER:PASSWORD` (what `ltc` sends; `:` for an API without
//!   credentials, taken only as the API takes an anonymous caller: over loopback) or an
//!   API token. The caller is identified, authorized and checked for ownership exactly
//!   as a `GET` of the API's exec route would be (`api::caller_of`, `authz`, `owners`),
//!   then the instance must exist and run. Refused logins are counted
//!   (`bbs_ssh_logins_total`) and leave an audit line in the debug log, like the API's
//!   refusals; after a refusal russh waits out its constant rejection time.
//! - **Channels**: `session` (`pty-req`, `env`, `shell`, `exec`, `subsystem sftp`,
//!   `window-change`, `signal`; `session`) and `direct-tcpip` (`forward`). Through the
//!   instance's own `diego-sshd` when its LRP has a `diego-ssh` route and the daemon
//!   takes the route's key at login (`relay`, as Diego's proxy); otherwise each is
//!   carried over the exec path to the rep of the instance's cell
//!   (`api::exec::open_rep`: the BBS's mutual TLS to that cell). Either way audited as
//!   the API audits its sessions.
//!   A client that goes away closes its rep end: the process is killed there.
//! - **Algorithms**: the host key is ECDSA P-256 (`hostkey`); russh's defaults offer
//!   `curve25519-sha256@libssh.org`, `aes128/192/256-ctr` and `hmac-sha2-256`, each
//!   one the 2015 golang.org/x/crypto of the original `ltc` accepts, besides today's
//!   algorithms for OpenSSH.
//! - **Bounds**: at most [`SshProxyConfig::max_connections`] connections, a login
//!   within [`LOGIN_TIMEOUT`], keepalives every 30 s (3 missed: dropped).

mod forward;
mod hostkey;
mod login;
mod relay;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{ForwardQuery, API_LRP_EXEC};
use lattice_specs::logs::{LogMessage, DEBUG_LOG_GUID};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelOpenFailure, MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::api::authz::{api_authz, verb_of, Decision, Object};
use crate::api::exec::{self, Kind};
use crate::api::{audit, caller_of, owners, ApiError, ApiState, Caller};
pub use hostkey::HostKeyError;
use login::{authorization, parse_user, BadUser, Login};

/// How long a client has from connecting to logging in.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how the proxy serves.
#[derive(Debug, Clone)]
pub struct SshProxyConfig {
    pub listen: SocketAddr,
    /// The host key's file (made when missing).
    pub host_key_file: PathBuf,
    pub max_connections: usize,
}

impl SshProxyConfig {
    pub fn new(listen: SocketAddr, host_key_file: PathBuf) -> SshProxyConfig {
        SshProxyConfig {
            listen,
            host_key_file,
            max_connections: 256,
        }
    }
}

/// Why a login is refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    User(#[from] BadUser),
    #[error("{name}: {message}")]
    Api { name: ErrorName, message: String },
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused::Api {
            name: e.name(),
            message: e.message().to_string(),
        }
    }
}

/// Who logged in, into what.
#[derive(Debug, Clone)]
struct Grant {
    caller: Caller,
    login: Login,
}

impl Grant {
    /// The API route a session of `kind` on this login would have taken (its audit
    /// line names it).
    fn path(&self, kind: Kind) -> String {
        let what = match kind {
            Kind::Exec => "exec",
            Kind::Forward => "forward",
        };
        format!(
            "/v1/actual_lrps/{}/index/{}/{what}",
            lattice_specs::path_segment(&self.login.process_guid),
            self.login.index
        )
    }
}

/// The server's settings for russh.
fn russh_config(key: russh::keys::PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: SshId::Standard(format!("SSH-2.0-lattice_{}", crate::api::VERSION).into()),
        methods: MethodSet::from(&[MethodKind::Password][..]),
        auth_rejection_time: Duration::from_secs(1),
        // The `none` probe every client starts with is answered at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Binds the proxy and serves it until `stopped` turns true.
pub async fn start(
    state: ApiState,
    cfg: &SshProxyConfig,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let key = hostkey::load_or_create(&cfg.host_key_file)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the ssh proxy's listener {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let config = Arc::new(russh_config(key));
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let task = tokio::spawn(async move {
        let stop = until(stopped.clone());
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = &mut stop => return,
            };
            let (socket, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "the ssh proxy could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut stop => return,
            };
            let (authed_tx, authed) = oneshot::channel();
            let client = Client {
                s: state.clone(),
                peer: Some(peer),
                grant: None,
                daemon: None,
                authed: Some(authed_tx),
            };
            let config = config.clone();
            let stopped = stopped.clone();
            let span = tracing::info_span!("ssh", %peer);
            tokio::spawn(
                async move {
                    let _permit = permit;
                    connection(config, socket, client, authed, stopped).await;
                }
                .instrument(span),
            );
        }
    });
    tracing::info!(%addr, "ssh proxy serving");
    Ok((addr, task))
}

async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// One client's connection, until it ends, fails to log in in time or the BBS stops.
async fn connection(
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    client: Client,
    authed: oneshot::Receiver<()>,
    stopped: watch::Receiver<bool>,
) {
    let session = match tokio::time::timeout(
        LOGIN_TIMEOUT,
        russh::server::run_stream(config, socket, client),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!(error = %e, "ssh handshake failed"),
        Err(_) => return tracing::debug!("ssh handshake timed out"),
    };
    let handle = session.handle();
    let login_deadline = async {
        if tokio::time::timeout(LOGIN_TIMEOUT, authed).await.is_err() {
            return;
        }
        std::future::pending::<()>().await
    };
    let bye = |why: &'static str| {
        let handle = handle.clone();
        async move {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, why.into(), "".into())
                .await;
        }
    };
    tokio::select! {
        r = session => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "ssh connection ended");
            }
        }
        () = login_deadline => bye("no login in time").await,
        () = until(stopped) => bye("the BBS is stopping").await,
    }
}

/// One client's handler.
struct Client {
    s: ApiState,
    peer: Option<SocketAddr>,
    grant: Option<Grant>,
    /// The instance's own sshd, logged in to (`relay`); None: the exec path.
    daemon: Option<Arc<russh::client::Handle<relay::Daemon>>>,
    /// Told once the client logged in.
    authed: Option<oneshot::Sender<()>>,
}

impl Client {
    fn peer(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_default()
    }

    /// Identifies, authorizes and checks the instance as the API's exec route would.
    async fn login(&self, user: &str, password: &str) -> Result<Grant, Refused> {
        let login = parse_user(user)?;
        let path = format!(
            "/v1/actual_lrps/{}/index/{}/exec",
            lattice_specs::path_segment(&login.process_guid),
            login.index
        );
        let auth = authorization(password);
        let caller = caller_of(&self.s, auth.as_deref(), &path, self.peer).await?;
        let Some(role) = caller.role else {
            return Err(Refused::Api {
                name: ErrorName::Forbidden,
                message: "a task's credential opens no ssh session".into(),
            });
        };
        if let Decision::Deny(why) = api_authz(role, &Method::GET, Some(API_LRP_EXEC)) {
            return Err(Refused::Api {
                name: ErrorName::Forbidden,
                message: why,
            });
        }
        let verb = verb_of(&Method::GET, API_LRP_EXEC);
        let app = Object::App(login.process_guid.clone());
        owners::ensure_may_act(&self.s, &caller, verb, &app).await?;
        exec::lrp_target_at(&self.s, Kind::Exec, &login.process_guid, login.index).await?;
        Ok(Grant { caller, login })
    }

    /// Counts and audits a refused login.
    fn refuse(&self, user: &str, why: &Refused) {
        crate::metrics::SSH_LOGINS
            .with_label_values(&["refused"])
            .inc();
        let peer = self.peer();
        tracing::info!(%user, %peer, "ssh login refused: {why}");
        self.s.logs.push(LogMessage::new(
            DEBUG_LOG_GUID,
            audit::SOURCE,
            format!("ssh login refused: user={user} from={peer}: {why}"),
        ));
    }
}

/// The instance's own sshd, logged in to with its LRP's `diego-ssh` route; None (the
/// exec path) when there is no route or the daemon does not take the key.
async fn instance_sshd(
    s: &ApiState,
    login: &Login,
) -> Option<Arc<russh::client::Handle<relay::Daemon>>> {
    let desired = s.db.desired_lrp(&login.process_guid).await.ok()?;
    let route = match relay::sshd_route(&desired.routes) {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(why) => {
            tracing::info!("ssh: {why}; the exec path instead");
            return None;
        }
    };
    // The records read once, the running one picked as the exec route picks it (the
    // pure decision: a miss here is no API refusal to count).
    let records =
        s.db.actual_lrps("", "", &login.process_guid, Some(login.index))
            .await
            .ok()?;
    let target = exec::target::lrp_target(
        &login.process_guid,
        login.index,
        desired.instances,
        &records,
    )
    .ok()?;
    let addr = relay::sshd_addr(&records, &target.handle, route.container_port)?;
    match relay::connect(addr, &route).await {
        Ok(h) => {
            tracing::info!(%addr, "ssh: through the instance's own sshd");
            Some(Arc::new(h))
        }
        Err(e) => {
            tracing::info!("ssh: {e}; the exec path instead");
            None
        }
    }
}

/// A `session` channel relayed to the instance's own sshd; over the exec path when
/// the daemon no longer takes one (the instance restarted since the login, say).
async fn relayed_session(
    s: ApiState,
    grant: Grant,
    channel: Channel<Msg>,
    server: russh::server::Handle,
    daemon: Arc<russh::client::Handle<relay::Daemon>>,
) {
    let up = match relay::open_session(&daemon).await {
        Ok(up) => up,
        Err(why) => {
            tracing::info!(
                "ssh: the instance's sshd took no session ({why}); the exec path instead"
            );
            return exec_session(s, grant, channel).await;
        }
    };
    audit_open(&s, &grant, Kind::Exec, &grant.path(Kind::Exec));
    let started = Instant::now();
    tracing::info!(who = %exec::who(&grant.caller), "ssh session opened (relayed)");
    let ended = relay::session(channel, server, up).await;
    count("relayed_session", ended.as_str());
    tracing::info!(
        outcome = ended.as_str(),
        seconds = started.elapsed().as_secs_f64(),
        "ssh session ended"
    );
}

/// A `direct-tcpip` channel relayed to the instance's own sshd: accepted once the
/// daemon opened its end (a refusal there is a channel open failure here).
#[allow(clippy::too_many_arguments)]
async fn relayed_forward(
    s: ApiState,
    grant: Grant,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    daemon: Arc<russh::client::Handle<relay::Daemon>>,
    host: String,
    port: u16,
    originator: (String, u32),
) {
    let up = match relay::open_forward(&daemon, &host, port, originator).await {
        Ok(up) => up,
        Err(e) => {
            count("relayed_direct_tcpip", "refused");
            tracing::info!("port forward refused by the instance's sshd: {e}");
            return reply.reject(ChannelOpenFailure::ConnectFailed).await;
        }
    };
    reply.accept().await;
    let object = format!("{}?port={port}&host={host}", grant.path(Kind::Forward));
    audit_open(&s, &grant, Kind::Forward, &object);
    let ended = relay::forward(channel, up).await;
    count("relayed_direct_tcpip", ended.as_str());
}

/// Audits a session being opened, as the API's exec route does.
fn audit_open(s: &ApiState, grant: &Grant, kind: Kind, object: &str) {
    let verb = match kind {
        Kind::Exec => "EXEC",
        Kind::Forward => "FORWARD",
    };
    let verb = Method::from_bytes(verb.as_bytes()).expect("a valid method token");
    audit::record(&s.logs, &grant.caller, &verb, object);
}

fn count(kind: &str, outcome: &str) {
    crate::metrics::SSH_SESSIONS
        .with_label_values(&[kind, outcome])
        .inc();
}

/// The rep's end of a session of `kind` on the login's instance (found again: it
/// may have moved since the login).
async fn open_rep(
    s: &ApiState,
    grant: &Grant,
    kind: Kind,
    forward: Option<&ForwardQuery>,
) -> Result<crate::cell_client::RepSocket, ApiError> {
    let target = exec::lrp_target_at(s, kind, &grant.login.process_guid, grant.login.index).await?;
    exec::open_rep(s, kind, &target, forward).await
}

/// A `session` channel: its setup, then the exec session.
async fn exec_session(s: ApiState, grant: Grant, mut channel: Channel<Msg>) {
    let Some((setup, start)) = session::setup(&mut channel).await else {
        return count("session", "closed_by_client");
    };
    let who = exec::who(&grant.caller);
    let request = match session::exec_request(&setup, &start, &who) {
        Ok(r) => r,
        Err(e) => {
            count("session", "unsupported");
            let _ = channel
                .extended_data_bytes(1, format!("lattice: {e}\r\n").into_bytes())
                .await;
            let _ = channel.close().await;
            return;
        }
    };
    let rep = match open_rep(&s, &grant, Kind::Exec, None).await {
        Ok(rep) => rep,
        Err(e) => {
            count("session", "refused");
            let line = format!("lattice: {}: {}\r\n", e.name(), e.message());
            let _ = channel.extended_data_bytes(1, line.into_bytes()).await;
            let _ = channel.close().await;
            return;
        }
    };
    audit_open(&s, &grant, Kind::Exec, &grant.path(Kind::Exec));
    let started = Instant::now();
    tracing::info!(who = %who, tty = request.tty, "ssh session opened");
    let ended = session::run(channel, rep, &request).await;
    count("session", ended.as_str());
    tracing::info!(
        outcome = ended.as_str(),
        seconds = started.elapsed().as_secs_f64(),
        "ssh session ended"
    );
}

/// A `direct-tcpip` channel: accepted once the rep connected (a connection the rep
/// refuses outright is a channel open failure).
async fn forward_channel(
    s: ApiState,
    grant: Grant,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    query: ForwardQuery,
) {
    let rep = match open_rep(&s, &grant, Kind::Forward, Some(&query)).await {
        Ok(rep) => rep,
        Err(e) => {
            count("direct_tcpip", "refused");
            tracing::info!("port forward refused: {}: {}", e.name(), e.message());
            return reply.reject(ChannelOpenFailure::ConnectFailed).await;
        }
    };
    reply.accept().await;
    let object = format!(
        "{}?port={}&host={}",
        grant.path(Kind::Forward),
        query.port,
        query.host
    );
    audit_open(&s, &grant, Kind::Forward, &object);
    match forward::run(channel, rep).await {
        forward::Ended::Closed => count("direct_tcpip", "closed"),
        forward::Ended::Failed(why) => {
            count("direct_tcpip", "failed");
            tracing::info!("port forward ended: {why}");
        }
    }
}

impl russh::server::Handler for Client {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        match self.login(user, password).await {
            Ok(grant) => {
                crate::metrics::SSH_LOGINS
                    .with_label_values(&["accepted"])
                    .inc();
                tracing::info!(%user, caller = %grant.caller.name, "ssh login");
                self.daemon = instance_sshd(&self.s, &grant.login).await;
                self.grant = Some(grant);
                if let Some(tx) = self.authed.take() {
                    let _ = tx.send(());
                }
                Ok(Auth::Accept)
            }
            Err(why) => {
                self.refuse(user, &why);
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(grant) = self.grant.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let span = tracing::info_span!("ssh_session", channel = %channel.id());
        match self.daemon.clone().filter(|d| !d.is_closed()) {
            Some(daemon) => tokio::spawn(
                relayed_session(self.s.clone(), grant, channel, session.handle(), daemon)
                    .instrument(span),
            ),
            None => tokio::spawn(exec_session(self.s.clone(), grant, channel).instrument(span)),
        };
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(grant) = self.grant.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if let Some(daemon) = self.daemon.clone().filter(|d| !d.is_closed()) {
            // The daemon resolves what it is asked for (its /etc/hosts included).
            let Some(port) = u16::try_from(port_to_connect).ok().filter(|p| *p > 0) else {
                count("relayed_direct_tcpip", "unsupported");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            };
            let span = tracing::info_span!("ssh_forward", port);
            tokio::spawn(
                relayed_forward(
                    self.s.clone(),
                    grant,
                    channel,
                    reply,
                    daemon,
                    host_to_connect.to_string(),
                    port,
                    (originator_address.to_string(), originator_port),
                )
                .instrument(span),
            );
            return Ok(());
        }
        let (host, port) = match forward::target(host_to_connect, port_to_connect) {
            Ok(t) => t,
            Err(e) => {
                count("direct_tcpip", "unsupported");
                tracing::info!("port forward refused: {e}");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        let query = ForwardQuery {
            port,
            host,
            who: exec::who(&grant.caller),
        };
        let span = tracing::info_span!("ssh_forward", port);
        tokio::spawn(
            forward_channel(self.s.clone(), grant, channel, reply, query).instrument(span),
        );
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: russh::ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: russh::ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn pty_request(
        &mut self,
        channel: russh::ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: russh::ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_names_the_route_the_api_would_have_taken() {
        let g = Grant {
            caller: Caller {
                name: "local".into(),
                role: Some(lattice_specs::receptor::ApiRole::Admin),
            },
            login: Login {
                process_guid: "web".into(),
                index: 2,
            },
        };
        assert_eq!(g.path(Kind::Exec), "/v1/actual_lrps/web/index/2/exec");
        assert_eq!(g.path(Kind::Forward), "/v1/actual_lrps/web/index/2/forward");
    }

    #[test]
    fn the_proxy_offers_what_the_original_ltc_accepts() {
        // golang.org/x/crypto of 2015 (ltc v0.7): kex curve25519-sha256@libssh.org or
        // ecdh-sha2-nistp*, ciphers aes*-ctr, MACs hmac-sha2-256 or hmac-sha1.
        let p = russh::Preferred::default();
        let kex: Vec<&str> = p.kex.iter().map(|k| k.as_ref()).collect();
        assert!(kex.contains(&"curve25519-sha256@libssh.org"), "{kex:?}");
        let ciphers: Vec<&str> = p.cipher.iter().map(|c| c.as_ref()).collect();
        assert!(ciphers.contains(&"aes128-ctr"), "{ciphers:?}");
        let macs: Vec<&str> = p.mac.iter().map(|m| m.as_ref()).collect();
        assert!(macs.contains(&"hmac-sha2-256"), "{macs:?}");
        let key = russh::keys::PrivateKey::random(
            &mut russh::keys::key::safe_rng(),
            russh::keys::Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
        )
        .unwrap();
        assert_eq!(key.algorithm().as_str(), "ecdsa-sha2-nistp256");
        let cfg = russh_config(key);
        assert_eq!(&cfg.methods[..], &[MethodKind::Password]);
    }
}
