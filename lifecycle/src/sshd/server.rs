//! The SSH server: the host key offered as what it is (an RSA key as `ssh-rsa` too,
//! SHA-1 signatures, for 2015 clients; `rsa-sha2-*` for today's), public-key
//! authentication against the one authorized key (or anyone, with
//! `-allowUnauthenticatedClients`), `session` channels ([`super::session`]) and
//! `direct-tcpip` forwards; every other channel type and request refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Server as _, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::net::TcpListener;

use super::session::{self, SessionConfig};
use super::{command, log, Config};

/// How long a forward's connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
struct Shared {
    authorized_key: Option<PublicKey>,
    allow_unauthenticated: bool,
    session: Arc<SessionConfig>,
}

/// The russh server: a [`Conn`] per client.
struct Daemon {
    shared: Arc<Shared>,
}

impl russh::server::Server for Daemon {
    type Handler = Conn;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Conn {
        Conn {
            shared: self.shared.clone(),
            peer,
        }
    }
}

/// One client's connection.
pub struct Conn {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
}

impl Conn {
    fn authorized(&self, key: &PublicKey) -> Auth {
        match &self.shared.authorized_key {
            Some(k) if k.key_data() == key.key_data() => Auth::Accept,
            None if self.shared.allow_unauthenticated => Auth::Accept,
            _ => Auth::reject(),
        }
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(if self.shared.allow_unauthenticated {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.authorized(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let verdict = self.authorized(key.public_key);
        if !matches!(verdict, Auth::Accept) {
            let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
            log(
                "authentication-failed",
                &[("user", user), ("remote", &peer)],
            );
        }
        Ok(verdict)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(session::run(
            channel,
            session.handle(),
            self.shared.session.clone(),
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let Some(target) = command::target(host_to_connect, port_to_connect, &hosts) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let conn =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await;
        let Ok(Ok(mut tcp)) = conn else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
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
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // sftp only (`session` runs it); no other subsystem is offered.
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

/// The russh configuration: the host key, the methods offered.
fn russh_config(cfg: &Config) -> russh::server::Config {
    let methods: &[MethodKind] = if cfg.allow_unauthenticated {
        &[MethodKind::None, MethodKind::PublicKey]
    } else {
        &[MethodKind::PublicKey]
    };
    russh::server::Config {
        keys: vec![cfg.host_key.clone()],
        methods: MethodSet::from(methods),
        // OpenSSH's first `none` probe is answered at once; real refusals wait.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle shells stay; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Listens at the configured address and serves until the process ends.
pub async fn serve(cfg: Config) -> std::io::Result<()> {
    let listener = TcpListener::bind(&cfg.address).await?;
    serve_on(listener, cfg).await
}

/// Serves on `listener`.
pub async fn serve_on(listener: TcpListener, cfg: Config) -> std::io::Result<()> {
    let addr = listener.local_addr()?.to_string();
    let config = Arc::new(russh_config(&cfg));
    let mut daemon = Daemon {
        shared: Arc::new(Shared {
            authorized_key: cfg.authorized_key.clone(),
            allow_unauthenticated: cfg.allow_unauthenticated,
            session: Arc::new(SessionConfig::from_process(cfg.inherit_daemon_env)),
        }),
    };
    log("started", &[("address", &addr)]);
    daemon.run_on_socket(config, &listener).await
}
