//! The receptor-shaped public API, as `ltc` calls it.

use std::time::Duration;

use anyhow::Context;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::rollout::{GenerationRequest, GenerationResponse, RollbackRequest};
use lattice_specs::receptor::schedule::{ScheduleCreateRequest, ScheduleResponse};
use lattice_specs::receptor::{
    ActualLrpResponse, BackupCreateRequest, BackupHooksRequest, BackupResponse,
    BackupScheduleRequest, CellResponse, ContainerUsage, DesiredLrpCreateRequest,
    DesiredLrpResponse, DesiredLrpUpdateRequest, TaskCreateRequest, TaskResponse, TaskStarted,
    TokenCreateRequest, TokenResponse, VolumeCreateRequest, VolumeResponse,
};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

use crate::target::Target;

/// An error the API answered with (`{"name", "message"}`).
#[derive(Debug)]
pub struct ApiError {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.name)
    }
}

impl std::error::Error for ApiError {}

/// The API's error name, if `e` is one and this build knows the name.
pub fn error_name(e: &anyhow::Error) -> Option<ErrorName> {
    e.downcast_ref::<ApiError>()
        .and_then(|a| ErrorName::parse(&a.name))
}

/// A WebSocket to the API ([`Api::websocket`]).
pub type WebSocket = tokio_tungstenite::WebSocketStream<reqwest::Upgraded>;

pub struct Api {
    pub target: Target,
    http: reqwest::Client,
}

impl Api {
    /// A client of `target`'s API: over https, its certificate is verified against
    /// the CA trusted for it alone, or the system's roots when none was.
    pub fn new(target: Target) -> anyhow::Result<Api> {
        // HTTP/1.1 only: `ltc ssh`'s WebSockets are HTTP/1.1 upgrades.
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .http1_only();
        if let Some(pem) = &target.ca {
            let roots = crate::trust::pem_certs(pem)
                .context("the CA saved with the target: run `ltc target URL` again")?
                .iter()
                .map(|c| reqwest::Certificate::from_der(c))
                .collect::<Result<Vec<_>, _>>()?;
            b = b.tls_certs_only(roots);
        }
        Ok(Api {
            target,
            http: b.build().context("building the HTTP client")?,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.target.api));
        if let Some(token) = &self.target.token {
            r = r.bearer_auth(token);
        } else if let Some(user) = &self.target.user {
            r = r.basic_auth(user, self.target.password.as_ref());
        }
        r
    }

    async fn send(&self, r: RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = self.send_any(r).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.refusal(resp).await)
    }

    /// Sends `r`: any answer, or why the API could not be reached.
    async fn send_any(&self, r: RequestBuilder) -> anyhow::Result<reqwest::Response> {
        r.send().await.map_err(|e| {
            if let Some(why) =
                crate::trust::explain_tls_error(&e, &self.target.api, self.target.ca.as_deref())
            {
                return anyhow::anyhow!(why);
            }
            anyhow::anyhow!(
                "cannot reach the API at {}: {}. Is the cluster up (`sudo lattice up`), and is `ltc target` right?",
                self.target.api,
                crate::trust::error_chain(&e)
            )
        })
    }

    /// The API's refusal in `resp` as an [`ApiError`].
    async fn refusal(&self, resp: reqwest::Response) -> anyhow::Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let (name, message) = match serde_json::from_str::<lattice_specs::receptor::Error>(&body) {
            Ok(e) => (e.name, e.message),
            Err(_) => (ErrorName::Unknown.to_string(), format!("{status}: {body}")),
        };
        let message = if ErrorName::parse(&name) == Some(ErrorName::Unauthorized) {
            format!(
                "{message}. Run `ltc login --token TOKEN` (or `ltc target {} --user USER --password PASSWORD`)",
                self.target.api
            )
        } else {
            message
        };
        ApiError { name, message }.into()
    }

    /// A WebSocket on `path` (`ltc ssh`'s sessions and forwarded connections): a GET
    /// upgraded over HTTP/1.1 with the target's credentials and trust. A refusal before
    /// the upgrade (no such app, not running, a viewer) is the API's [`ApiError`].
    pub async fn websocket(&self, path: &str) -> anyhow::Result<WebSocket> {
        use reqwest::header::{
            CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
        };
        use tokio_tungstenite::tungstenite::handshake;
        let key = handshake::client::generate_key();
        let resp = self
            .send_any(
                self.request(Method::GET, path)
                    .header(CONNECTION, "Upgrade")
                    .header(UPGRADE, "websocket")
                    .header(SEC_WEBSOCKET_VERSION, "13")
                    .header(SEC_WEBSOCKET_KEY, &key),
            )
            .await?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.refusal(resp).await);
        }
        let accept = resp.headers().get(SEC_WEBSOCKET_ACCEPT).cloned();
        anyhow::ensure!(
            accept.as_ref().map(|a| a.as_bytes())
                == Some(handshake::derive_accept_key(key.as_bytes()).as_bytes()),
            "the API at {} answered GET {path} with a WebSocket upgrade without the right Sec-WebSocket-Accept: is a proxy in the way?",
            self.target.api
        );
        let io = resp
            .upgrade()
            .await
            .with_context(|| format!("upgrading GET {path} to a WebSocket"))?;
        Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .send(
                self.request(Method::GET, path)
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        resp.json()
            .await
            .with_context(|| format!("the API's answer to GET {path} is not what ltc expects"))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let mut r = self.request(method, path).timeout(Duration::from_secs(30));
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await.map(drop)
    }

    pub async fn version(&self) -> anyhow::Result<serde_json::Value> {
        self.get("/v1/version").await
    }

    pub async fn desired_lrps(&self) -> anyhow::Result<Vec<DesiredLrpResponse>> {
        self.get("/v1/desired_lrps").await
    }

    pub async fn desired_lrp(&self, guid: &str) -> anyhow::Result<DesiredLrpResponse> {
        self.get(&format!("/v1/desired_lrps/{}", seg(guid))).await
    }

    /// The app, or a clear "not found" that says what to do.
    pub async fn app(&self, name: &str) -> anyhow::Result<DesiredLrpResponse> {
        match self.desired_lrp(name).await {
            Err(e) if error_name(&e) == Some(ErrorName::DesiredLRPNotFound) => anyhow::bail!(
                "app {name} not found: `ltc list` shows the apps, `ltc create {name} IMAGE -- CMD` makes it"
            ),
            r => r,
        }
    }

    pub async fn create_desired_lrp(&self, req: &DesiredLrpCreateRequest) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            "/v1/desired_lrps",
            Some(serde_json::to_value(req)?),
        )
        .await
    }

    pub async fn update_desired_lrp(
        &self,
        guid: &str,
        u: &DesiredLrpUpdateRequest,
    ) -> anyhow::Result<()> {
        self.call(
            Method::PUT,
            &format!("/v1/desired_lrps/{}", seg(guid)),
            Some(serde_json::to_value(u)?),
        )
        .await
    }

    pub async fn remove_desired_lrp(&self, guid: &str) -> anyhow::Result<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/desired_lrps/{}", seg(guid)),
            None,
        )
        .await
    }

    // ---- rolling updates (an extension; specs/src/receptor/rollout.rs) -------------

    /// A whole new definition: a new generation rolled out, a change in place, or
    /// nothing; the app as it is now either way.
    pub async fn create_generation(
        &self,
        guid: &str,
        req: &GenerationRequest,
    ) -> anyhow::Result<DesiredLrpResponse> {
        self.post(
            &format!("/v1/desired_lrps/{}/generations", seg(guid)),
            serde_json::to_value(req)?,
        )
        .await
    }

    /// The kept generations, oldest first.
    pub async fn generations(&self, guid: &str) -> anyhow::Result<Vec<GenerationResponse>> {
        self.get(&format!("/v1/desired_lrps/{}/generations", seg(guid)))
            .await
    }

    /// Back to `generation` (0: the last that ran healthy).
    pub async fn rollback(
        &self,
        guid: &str,
        generation: i64,
    ) -> anyhow::Result<DesiredLrpResponse> {
        self.post(
            &format!("/v1/desired_lrps/{}/rollback", seg(guid)),
            serde_json::to_value(RollbackRequest { generation })?,
        )
        .await
    }

    /// A paused canary rolls on.
    pub async fn promote(&self, guid: &str) -> anyhow::Result<DesiredLrpResponse> {
        self.post(
            &format!("/v1/desired_lrps/{}/promote", seg(guid)),
            serde_json::Value::Null,
        )
        .await
    }

    pub async fn actual_lrps(&self) -> anyhow::Result<Vec<ActualLrpResponse>> {
        self.get("/v1/actual_lrps").await
    }

    pub async fn actual_lrps_of(&self, guid: &str) -> anyhow::Result<Vec<ActualLrpResponse>> {
        self.get(&format!("/v1/actual_lrps/{}", seg(guid))).await
    }

    /// What each of the app's containers uses (an extension of the receptor API).
    pub async fn usage(&self, guid: &str) -> anyhow::Result<Vec<ContainerUsage>> {
        self.get(&format!("/v1/actual_lrps/{}/usage", seg(guid)))
            .await
    }

    pub async fn cells(&self) -> anyhow::Result<Vec<CellResponse>> {
        self.get("/v1/cells").await
    }

    pub async fn create_task(&self, req: &TaskCreateRequest) -> anyhow::Result<()> {
        self.call(Method::POST, "/v1/tasks", Some(serde_json::to_value(req)?))
            .await
    }

    pub async fn tasks(&self) -> anyhow::Result<Vec<TaskResponse>> {
        self.get("/v1/tasks").await
    }

    pub async fn task(&self, guid: &str) -> anyhow::Result<TaskResponse> {
        match self.get(&format!("/v1/tasks/{}", seg(guid))).await {
            Err(e) if error_name(&e) == Some(ErrorName::TaskNotFound) => {
                anyhow::bail!("task {guid} not found: `ltc list-tasks` shows the tasks")
            }
            r => r,
        }
    }

    pub async fn cancel_task(&self, guid: &str) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/v1/tasks/{}/cancel", seg(guid)),
            None,
        )
        .await
    }

    pub async fn delete_task(&self, guid: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/v1/tasks/{}", seg(guid)), None)
            .await
    }

    /// A log guid's lines, as the API streams them (NDJSON).
    pub async fn logs(&self, log_guid: &str, follow: bool) -> anyhow::Result<reqwest::Response> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/logs/{}?follow={follow}", seg(log_guid)),
        ))
        .await
    }

    // ---- volumes and backups (extensions of the receptor API) ----------------------

    pub async fn volumes(&self) -> anyhow::Result<Vec<VolumeResponse>> {
        self.get("/v1/volumes").await
    }

    /// The volume, or None when it does not exist.
    pub async fn volume(&self, name: &str) -> anyhow::Result<Option<VolumeResponse>> {
        match self.get(&format!("/v1/volumes/{}", seg(name))).await {
            Err(e) if error_name(&e) == Some(ErrorName::VolumeNotFound) => Ok(None),
            r => r.map(Some),
        }
    }

    pub async fn create_volume(&self, req: &VolumeCreateRequest) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            "/v1/volumes",
            Some(serde_json::to_value(req)?),
        )
        .await
    }

    pub async fn grow_volume(&self, name: &str, size_bytes: u64) -> anyhow::Result<()> {
        self.call(
            Method::PUT,
            &format!("/v1/volumes/{}", seg(name)),
            Some(serde_json::json!({ "size_bytes": size_bytes })),
        )
        .await
    }

    pub async fn remove_volume(&self, name: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/v1/volumes/{}", seg(name)), None)
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(
                self.request(Method::POST, path)
                    .json(&body)
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        resp.json()
            .await
            .with_context(|| format!("the API's answer to POST {path} is not what ltc expects"))
    }

    /// Starts a backup; with a pre hook the API answers once it ran (a failing one is
    /// a `BackupHookFailed` error with its output).
    pub async fn create_backup(
        &self,
        volume: &str,
        hooks: Option<BackupHooksRequest>,
    ) -> anyhow::Result<BackupResponse> {
        let req = BackupCreateRequest {
            volume: volume.into(),
            hooks,
        };
        self.post("/v1/backups", serde_json::to_value(req)?).await
    }

    /// The cluster's backup key (admins only; the BBS audits the read).
    pub async fn backup_key(&self) -> anyhow::Result<lattice_specs::repo::BackupKeyResponse> {
        self.get("/v1/backup_key").await
    }

    pub async fn backups(&self) -> anyhow::Result<Vec<BackupResponse>> {
        self.get("/v1/backups").await
    }

    pub async fn backup(&self, id: &str) -> anyhow::Result<BackupResponse> {
        self.get(&format!("/v1/backups/{}", seg(id))).await
    }

    pub async fn delete_backup(&self, id: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/v1/backups/{}", seg(id)), None)
            .await
    }

    pub async fn restore_backup(&self, id: &str, volume: &str) -> anyhow::Result<TaskStarted> {
        self.post(
            &format!("/v1/backups/{}/restore", seg(id)),
            serde_json::json!({ "volume": volume }),
        )
        .await
    }

    pub async fn verify_backup(&self, id: &str) -> anyhow::Result<TaskStarted> {
        self.post(
            &format!("/v1/backups/{}/verify", seg(id)),
            serde_json::Value::Null,
        )
        .await
    }

    pub async fn import_backup(&self, b: &BackupResponse) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            "/v1/backups/import",
            Some(serde_json::to_value(b)?),
        )
        .await
    }

    /// Sets a backup schedule with its retention, verification and thresholds.
    pub async fn set_backup_schedule(&self, r: &BackupScheduleRequest) -> anyhow::Result<()> {
        self.call(
            Method::PUT,
            &format!("/v1/backup_schedules/{}", seg(&r.volume)),
            Some(serde_json::to_value(r)?),
        )
        .await
    }

    pub async fn remove_schedule(&self, volume: &str) -> anyhow::Result<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/backup_schedules/{}", seg(volume)),
            None,
        )
        .await
    }

    pub async fn schedules(&self) -> anyhow::Result<Vec<BackupScheduleRequest>> {
        self.get("/v1/backup_schedules").await
    }

    // ---- periodic Tasks (an extension; specs/src/receptor/schedule.rs) --------------

    pub async fn create_schedule(
        &self,
        req: &ScheduleCreateRequest,
    ) -> anyhow::Result<ScheduleResponse> {
        self.post("/v1/schedules", serde_json::to_value(req)?).await
    }

    /// Every schedule, Task and backup ones, sorted by name.
    pub async fn all_schedules(&self) -> anyhow::Result<Vec<ScheduleResponse>> {
        self.get("/v1/schedules").await
    }

    /// `pause` or `resume`.
    pub async fn schedule_action(
        &self,
        name: &str,
        action: &str,
    ) -> anyhow::Result<ScheduleResponse> {
        let r = self
            .post(
                &format!("/v1/schedules/{}/{action}", seg(name)),
                serde_json::Value::Null,
            )
            .await;
        schedule_not_found(r, name)
    }

    pub async fn delete_schedule(&self, name: &str) -> anyhow::Result<()> {
        let r = self
            .call(
                Method::DELETE,
                &format!("/v1/schedules/{}", seg(name)),
                None,
            )
            .await;
        schedule_not_found(r, name)
    }

    // ---- API tokens (an extension; admins only) ------------------------------------

    /// Makes a token: the answer holds its secret, shown this once.
    pub async fn create_token(&self, name: &str, role: &str) -> anyhow::Result<TokenResponse> {
        let req = TokenCreateRequest {
            name: name.into(),
            role: role.into(),
        };
        self.post("/v1/tokens", serde_json::to_value(req)?).await
    }

    pub async fn tokens(&self) -> anyhow::Result<Vec<TokenResponse>> {
        self.get("/v1/tokens").await
    }

    pub async fn revoke_token(&self, name: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/v1/tokens/{}", seg(name)), None)
            .await
    }

    /// A blob's bytes, streamed.
    pub async fn get_blob(&self, name: &str) -> anyhow::Result<reqwest::Response> {
        self.send(self.request(Method::GET, &format!("/v1/blobs/{}", seg(name))))
            .await
    }

    /// Stores a blob, checked by the store against `sha256`.
    pub async fn put_blob(
        &self,
        name: &str,
        body: reqwest::Body,
        sha256: &str,
    ) -> anyhow::Result<()> {
        self.send(
            self.request(Method::PUT, &format!("/v1/blobs/{}", seg(name)))
                .header("X-Checksum-Sha256", sha256)
                .body(body),
        )
        .await
        .map(drop)
    }
}

use lattice_specs::path_segment as seg;

/// A missing schedule said with what to do.
fn schedule_not_found<T>(r: anyhow::Result<T>, name: &str) -> anyhow::Result<T> {
    match r {
        Err(e) if error_name(&e) == Some(ErrorName::ScheduleNotFound) => {
            anyhow::bail!("schedule {name} not found: `ltc schedules` shows the schedules")
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(name: &str) -> anyhow::Error {
        ApiError {
            name: name.into(),
            message: "m".into(),
        }
        .into()
    }

    #[test]
    fn error_names_are_known_names_of_api_errors_only() {
        assert_eq!(
            error_name(&api_error(ErrorName::DesiredLRPNotFound.as_str())),
            Some(ErrorName::DesiredLRPNotFound)
        );
        // A newer server's name this build does not know, and errors that are not the API's.
        assert_eq!(error_name(&api_error("SomethingNew")), None);
        assert_eq!(
            error_name(&anyhow::anyhow!(ErrorName::DesiredLRPNotFound.as_str())),
            None
        );
        // The wire string is kept as the server sent it.
        assert_eq!(api_error("SomethingNew").to_string(), "m (SomethingNew)");
    }

    /// A request's head, as a fake API reads it.
    async fn head(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = vec![];
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "the request ended early");
            head.push(b[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn websockets_upgrade_with_the_credentials_and_refusals_are_api_errors() {
        use futures::{SinkExt, StreamExt};
        use tokio::io::AsyncWriteExt;
        use tokio_tungstenite::tungstenite::{handshake, protocol::Role, Message};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // An upgrade: the credentials and the WebSocket headers, then an echo.
            let (mut s, _) = l.accept().await.unwrap();
            let h = head(&mut s).await;
            let lower = h.to_ascii_lowercase();
            assert!(lower.starts_with("get /v1/tasks/t1/exec http/1.1"), "{h}");
            assert!(lower.contains("authorization: bearer lat_t\r\n"), "{h}");
            assert!(lower.contains("upgrade: websocket\r\n"), "{h}");
            let key = h
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(": ")?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then_some(value)
                })
                .unwrap();
            let accept = handshake::derive_accept_key(key.as_bytes());
            s.write_all(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(s, Role::Server, None).await;
            let m = ws.next().await.unwrap().unwrap();
            ws.send(m).await.unwrap();
            // A refusal before any upgrade.
            let (mut s, _) = l.accept().await.unwrap();
            head(&mut s).await;
            let body = r#"{"name":"Forbidden","message":"a viewer token may not open sessions"}"#;
            s.write_all(
                format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        });
        let api = Api::new(Target {
            api: format!("http://{addr}"),
            token: Some("lat_t".into()),
            ..Default::default()
        })
        .unwrap();
        let mut ws = api.websocket("/v1/tasks/t1/exec").await.unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
        let e = api.websocket("/v1/tasks/t1/exec").await.unwrap_err();
        assert_eq!(error_name(&e), Some(ErrorName::Forbidden));
        assert!(e.to_string().contains("may not open sessions"), "{e}");
        server.await.unwrap();
    }
}
