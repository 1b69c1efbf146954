//! Through an instance's own `diego-sshd`, as Diego's ssh proxy goes: when the app's
//! DesiredLRP has a `diego-ssh` route (`{"container_port": 2222, "private_key": PEM,
//! "host_fingerprint": …}`, what the original `ltc create` writes) and its daemon
//! answers, the proxy logs in to it with the route's key, at the cell's address and
//! the host port of that container port, and relays each channel: a session's
//! requests (pty, env, shell, exec, subsystem, window changes, signals) and data up,
//! its output, exit status or signal, EOF and close down; a `direct-tcpip` as a byte
//! stream both ways. The daemon's host key is checked against the route's fingerprint
//! when it has one (MD5 or SHA-1 colon hex, or `SHA256:` base64), as Diego does.
//! Without a route, or when the daemon does not answer, sessions take the exec path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::ActualLrp;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{client, server, Channel, ChannelMsg, ChannelWriteHalf};
use tokio::task::JoinHandle;

/// The route name of an instance's own sshd (Diego's).
pub const DIEGO_SSH_KEY: &str = "diego-ssh";
/// How long the daemon has to answer and take the key.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// An LRP's `diego-ssh` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdRoute {
    pub container_port: u16,
    /// The proxy's key (PEM) the daemon's `-authorizedKey` lets in.
    pub private_key: String,
    pub host_fingerprint: Option<String>,
}

/// The `diego-ssh` route in a DesiredLRP's stored routes: None when there is none;
/// an error names what is wrong with one that is there.
pub fn sshd_route(routes: &HashMap<String, String>) -> Result<Option<SshdRoute>, String> {
    let Some(raw) = routes.get(DIEGO_SSH_KEY) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("the diego-ssh route is not JSON: {e}"))?;
    let port = v["container_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("the diego-ssh route has no container_port (1-65535)")?;
    let key = v["private_key"]
        .as_str()
        .filter(|k| !k.trim().is_empty())
        .ok_or("the diego-ssh route has no private_key")?;
    Ok(Some(SshdRoute {
        container_port: port,
        private_key: key.to_string(),
        host_fingerprint: v["host_fingerprint"]
            .as_str()
            .filter(|f| !f.is_empty())
            .map(String::from),
    }))
}

/// Where instance `instance_guid`'s sshd answers from outside its cell: the cell's
/// address and the host port of `container_port`, from its RUNNING record.
pub fn sshd_addr(
    records: &[ActualLrp],
    instance_guid: &str,
    container_port: u16,
) -> Option<SocketAddr> {
    let a = records.iter().find(|a| {
        a.state() == State::Running
            && a.instance_key
                .as_ref()
                .is_some_and(|k| k.instance_guid == instance_guid)
    })?;
    let net = a.net_info.as_ref()?;
    let host_port = net
        .ports
        .iter()
        .find(|p| p.container_port == u32::from(container_port))?
        .host_port;
    let ip: std::net::IpAddr = net.address.parse().ok()?;
    Some(SocketAddr::new(
        ip,
        u16::try_from(host_port).ok().filter(|p| *p > 0)?,
    ))
}

/// Whether `key` is the one a Diego `host_fingerprint` names: MD5 or SHA-1 as colon
/// hex (`ssh-keygen -E md5` without its prefix), or `SHA256:` unpadded base64.
pub fn fingerprint_matches(expected: &str, key: &PublicKey) -> bool {
    use md5::Digest as _;
    let expected = expected.trim();
    let blob = match key.to_bytes() {
        Ok(b) => b,
        Err(_) => return false,
    };
    if let Some(b64) = expected.strip_prefix("SHA256:") {
        return key.fingerprint(HashAlg::Sha256).to_string() == format!("SHA256:{b64}");
    }
    let colon_hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let lower = expected.to_ascii_lowercase();
    match lower.len() {
        47 => colon_hex(&md5::Md5::digest(&blob)) == lower,
        59 => colon_hex(&sha1::Sha1::digest(&blob)) == lower,
        _ => false,
    }
}

/// Why the daemon could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the diego-ssh route's private_key is not a key: {0}")]
    Key(String),
    #[error("the instance's sshd at {addr} did not answer: {why}")]
    Unreachable { addr: SocketAddr, why: String },
    #[error("the instance's sshd at {0} refused the route's key")]
    Refused(SocketAddr),
}

/// The client side towards the daemon: its host key checked against the route's
/// fingerprint, when there is one.
pub struct Daemon {
    fingerprint: Option<String>,
}

impl client::Handler for Daemon {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(expected) = &self.fingerprint else {
            return Ok(true);
        };
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                fingerprint_matches(expected, key)
            }
            _ => false,
        })
    }
}

/// Logs in to the instance's daemon at `addr` with the route's key.
pub async fn connect(
    addr: SocketAddr,
    route: &SshdRoute,
) -> Result<client::Handle<Daemon>, RelayError> {
    let key = russh::keys::decode_secret_key(&route.private_key, None)
        .map_err(|e| RelayError::Key(e.to_string()))?;
    let unreachable = |why: String| RelayError::Unreachable { addr, why };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let handler = Daemon {
        fingerprint: route.host_fingerprint.clone(),
    };
    let login = async {
        let mut h = client::connect(config, addr, handler)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let hash = h
            .best_supported_rsa_hash()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .flatten();
        let auth = h
            .authenticate_publickey("vcap", PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !auth.success() {
            return Err(RelayError::Refused(addr));
        }
        Ok(h)
    };
    tokio::time::timeout(CONNECT_WITHIN, login)
        .await
        .map_err(|_| unreachable(format!("no login within {CONNECT_WITHIN:?}")))?
}

/// How a relayed channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The daemon ended it (the process exited, the forward closed).
    ByInstance,
    /// The client closed it first.
    ByClient,
    /// The connection to the daemon broke.
    Broke,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::ByInstance => "closed_by_instance",
            Ended::ByClient => "closed_by_client",
            Ended::Broke => "instance_broke",
        }
    }
}

/// Opens a `session` channel at the daemon.
pub async fn open_session(daemon: &client::Handle<Daemon>) -> Result<Channel<client::Msg>, String> {
    match tokio::time::timeout(CONNECT_WITHIN, daemon.channel_open_session()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_WITHIN:?}")),
    }
}

/// Opens a `direct-tcpip` channel at the daemon to `host`:`port`.
pub async fn open_forward(
    daemon: &client::Handle<Daemon>,
    host: &str,
    port: u16,
    originator: (String, u32),
) -> Result<Channel<client::Msg>, String> {
    let open = daemon.channel_open_direct_tcpip(host, u32::from(port), originator.0, originator.1);
    match tokio::time::timeout(CONNECT_WITHIN, open).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_WITHIN:?}")),
    }
}

/// Waits for the first of the two directions to end, stops the other: its outcome.
async fn first_of(mut up: JoinHandle<Ended>, mut down: JoinHandle<Ended>) -> Ended {
    let ended = tokio::select! {
        r = &mut up => { down.abort(); r }
        r = &mut down => { up.abort(); r }
    };
    ended.unwrap_or(Ended::Broke)
}

/// Ends a relayed channel once either direction did: the daemon's end closed, the
/// client told EOF (once) and closed.
async fn close_both(
    to_daemon: &ChannelWriteHalf<client::Msg>,
    to_client: &ChannelWriteHalf<server::Msg>,
    eof_sent: &AtomicBool,
) {
    let _ = to_daemon.close().await;
    if !eof_sent.swap(true, Ordering::SeqCst) {
        let _ = to_client.eof().await;
    }
    let _ = to_client.close().await;
}

/// Relays one `session` channel between the client and the daemon (its end `up`
/// opened) until either side closes it. Each direction is a task of its own, so
/// neither waits behind the other (a full window one way never stalls the other).
pub async fn session(
    client_side: Channel<server::Msg>,
    server: server::Handle,
    up: Channel<client::Msg>,
) -> Ended {
    let id = client_side.id();
    let (mut from_client, to_client) = client_side.split();
    let (mut from_daemon, to_daemon) = up.split();
    let (to_client, to_daemon) = (Arc::new(to_client), Arc::new(to_daemon));
    let eof_sent = Arc::new(AtomicBool::new(false));
    let upward = {
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            while let Some(m) = from_client.wait().await {
                let sent = match m {
                    ChannelMsg::Close => return Ended::ByClient,
                    ChannelMsg::RequestPty {
                        term,
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                        terminal_modes,
                        ..
                    } => {
                        to_daemon
                            .request_pty(
                                false,
                                &term,
                                col_width,
                                row_height,
                                pix_width,
                                pix_height,
                                &terminal_modes,
                            )
                            .await
                    }
                    ChannelMsg::SetEnv {
                        variable_name,
                        variable_value,
                        ..
                    } => {
                        to_daemon
                            .set_env(false, variable_name, variable_value)
                            .await
                    }
                    ChannelMsg::RequestShell { .. } => to_daemon.request_shell(true).await,
                    ChannelMsg::Exec { command, .. } => to_daemon.exec(true, command).await,
                    ChannelMsg::RequestSubsystem { name, .. } => {
                        to_daemon.request_subsystem(true, name).await
                    }
                    ChannelMsg::WindowChange {
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                    } => {
                        to_daemon
                            .window_change(col_width, row_height, pix_width, pix_height)
                            .await
                    }
                    ChannelMsg::Signal { signal } => to_daemon.signal(signal).await,
                    ChannelMsg::Data { data } => to_daemon.data_bytes(data).await,
                    ChannelMsg::Eof => to_daemon.eof().await,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return Ended::Broke;
                }
            }
            Ended::ByClient
        })
    };
    let downward = {
        let (to_client, eof_sent) = (to_client.clone(), eof_sent.clone());
        tokio::spawn(async move {
            while let Some(m) = from_daemon.wait().await {
                let sent = match m {
                    ChannelMsg::Close => return Ended::ByInstance,
                    ChannelMsg::Data { data } => to_client.data_bytes(data).await,
                    ChannelMsg::ExtendedData { data, ext } => {
                        to_client.extended_data_bytes(ext, data).await
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        to_client.exit_status(exit_status).await
                    }
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    } => server
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await
                        .map_err(|()| russh::Error::SendError),
                    ChannelMsg::Eof => {
                        eof_sent.store(true, Ordering::SeqCst);
                        to_client.eof().await
                    }
                    // The client was told yes already (the proxy's handler): a
                    // refusal upstream ends the channel, saying so.
                    ChannelMsg::Failure => {
                        let _ = to_client
                            .extended_data_bytes(
                                1,
                                &b"lattice: the instance's sshd refused the request\r\n"[..],
                            )
                            .await;
                        return Ended::ByInstance;
                    }
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return Ended::ByClient;
                }
            }
            Ended::Broke
        })
    };
    let ended = first_of(upward, downward).await;
    close_both(&to_daemon, &to_client, &eof_sent).await;
    ended
}

/// Relays one `direct-tcpip` channel (its daemon end `up` opened) as bytes both ways,
/// each direction a task of its own: an EOF is passed on as a half close; a close
/// from either side ends both (a client that leaves takes the connection along).
pub async fn forward(client_side: Channel<server::Msg>, up: Channel<client::Msg>) -> Ended {
    let (mut from_client, to_client) = client_side.split();
    let (mut from_daemon, to_daemon) = up.split();
    let (to_client, to_daemon) = (Arc::new(to_client), Arc::new(to_daemon));
    let eof_sent = Arc::new(AtomicBool::new(false));
    let upward = {
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            while let Some(m) = from_client.wait().await {
                let sent = match m {
                    ChannelMsg::Close => return Ended::ByClient,
                    ChannelMsg::Data { data } => to_daemon.data_bytes(data).await,
                    ChannelMsg::Eof => to_daemon.eof().await,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return Ended::Broke;
                }
            }
            Ended::ByClient
        })
    };
    let downward = {
        let (to_client, eof_sent) = (to_client.clone(), eof_sent.clone());
        tokio::spawn(async move {
            while let Some(m) = from_daemon.wait().await {
                let sent = match m {
                    ChannelMsg::Close => return Ended::ByInstance,
                    ChannelMsg::Data { data } => to_client.data_bytes(data).await,
                    ChannelMsg::Eof => {
                        eof_sent.store(true, Ordering::SeqCst);
                        to_client.eof().await
                    }
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return Ended::ByClient;
                }
            }
            Ended::Broke
        })
    };
    let ended = first_of(upward, downward).await;
    close_both(&to_daemon, &to_client, &eof_sent).await;
    ended
}

#[cfg(test)]
mod tests;
