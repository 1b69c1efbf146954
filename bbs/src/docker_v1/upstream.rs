//! The v2 registry behind the v1 face: its tags and image configs, through
//! `oci_client` (tokens, Basic, manifest lists resolved to this host's platform).

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

/// What a v2 registry could not give.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The repository or tag is not there.
    #[error("not found in the registry")]
    NotFound,
    /// The registry wants credentials the caller did not give, or refused them.
    #[error("the registry refused the request (it wants credentials)")]
    Unauthorized,
    /// Unreachable, an error status, or an answer that is not an image.
    #[error("{0}")]
    Failed(String),
}

/// The v2 registry's read side, as the v1 face needs it.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync {
    /// The repository's tags.
    async fn tags(
        &self,
        repository: &str,
        auth: &RegistryAuth,
    ) -> Result<Vec<String>, UpstreamError>;
    /// The image config blob (JSON) of `repository:tag`.
    async fn config(
        &self,
        repository: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<serde_json::Value, UpstreamError>;
}

/// A real v2 registry at `host` (`HOST:PORT`), over HTTPS or plain HTTP. Each call
/// has a client of its own: oci_client keeps the first credentials (and tokens) it
/// is given per registry, and one caller's must never serve another.
pub struct OciUpstream {
    host: String,
    protocol: ClientProtocol,
}

impl OciUpstream {
    /// The registry `url` names (`http://HOST:PORT` or `https://HOST[:PORT]`).
    pub fn new(url: &reqwest::Url) -> anyhow::Result<OciUpstream> {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => anyhow::bail!("the registry URL {url} names no host, e.g. http://127.0.0.1:5000"),
        };
        let protocol = match url.scheme() {
            "http" => ClientProtocol::Http,
            "https" => ClientProtocol::Https,
            s => anyhow::bail!("the registry URL {url} is {s}: use http:// or https://"),
        };
        anyhow::ensure!(
            url.username().is_empty() && url.password().is_none(),
            "the registry URL carries credentials, which are not used: the face passes on \
             those of its clients (give the URL as http://HOST:PORT)"
        );
        Ok(OciUpstream { host, protocol })
    }

    fn client(&self) -> oci_client::Client {
        oci_client::Client::new(ClientConfig {
            protocol: self.protocol.clone(),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(30)),
            ..Default::default()
        })
    }

    fn reference(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<oci_client::Reference, UpstreamError> {
        format!("{}/{repository}:{tag}", self.host)
            .parse()
            .map_err(|e| UpstreamError::Failed(format!("bad image reference: {e}")))
    }
}

/// Sorts oci_client's errors into ours.
fn sorted(e: OciDistributionError) -> UpstreamError {
    use OciDistributionError as E;
    match &e {
        E::ImageManifestNotFoundError(_) => UpstreamError::NotFound,
        E::ServerError { code: 404, .. } => UpstreamError::NotFound,
        E::ServerError {
            code: 401 | 403, ..
        }
        | E::UnauthorizedError { .. }
        | E::AuthenticationFailure(_) => UpstreamError::Unauthorized,
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::NameUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                UpstreamError::NotFound
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                UpstreamError::Unauthorized
            } else {
                UpstreamError::Failed(e.to_string())
            }
        }
        _ => UpstreamError::Failed(e.to_string()),
    }
}

#[async_trait::async_trait]
impl Upstream for OciUpstream {
    async fn tags(
        &self,
        repository: &str,
        auth: &RegistryAuth,
    ) -> Result<Vec<String>, UpstreamError> {
        let r = self.reference(repository, "latest")?;
        let listed = self
            .client()
            .list_tags(&r, auth, None, None)
            .await
            .map_err(sorted)?;
        Ok(listed.tags)
    }

    async fn config(
        &self,
        repository: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<serde_json::Value, UpstreamError> {
        let r = self.reference(repository, tag)?;
        let (_, _, config) = self
            .client()
            .pull_manifest_and_config(&r, auth)
            .await
            .map_err(sorted)?;
        serde_json::from_str(&config)
            .map_err(|e| UpstreamError::Failed(format!("the image config is not JSON: {e}")))
    }
}
