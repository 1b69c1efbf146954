//! Registries: `docker://REGISTRY/REPO:TAG` pulled over the OCI distribution API
//! (HTTPS, or plain HTTP for registries the cell is told are insecure), with the
//! cell's credentials for a registry when it has some.

use anyhow::Context;

use super::{parse_config, Image, ImageStore};

impl ImageStore {
    /// `docker://REGISTRY/REPO:TAG`: pulls what the cache lacks; `progress` hears about
    /// each layer.
    pub async fn pull(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<Image> {
        use oci_client::client::{ClientConfig, ClientProtocol};
        let reference: oci_client::Reference = format!("{registry}/{repository}:{tag}")
            .parse()
            .with_context(|| format!("bad image reference {registry}/{repository}:{tag}"))?;
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
            // A registry that stops answering fails the pull instead of stalling it.
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            // The system's roots are kept; these join them.
            extra_root_certificates: self
                .extra_ca
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone().into_bytes(),
                })
                .collect(),
            ..Default::default()
        });
        let auth = match self.credentials.get(registry) {
            Some((user, password)) => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        let (manifest, _digest, config) = client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(|e| {
                let text = error_chain(&e).to_ascii_lowercase();
                let hint = if text.contains("invalid peer certificate") {
                    " (the registry's certificate is not trusted by this cell: for a private CA, start the cell with --extra-ca CA.pem)"
                } else if !(text.contains("unauthorized")
                    || text.contains("not authorized")
                    || text.contains("401"))
                {
                    ""
                } else if self.credentials.contains_key(registry) {
                    " (the registry refused this cell's credentials for it)"
                } else {
                    " (the registry wants credentials: start the cell with --registry-credential HOST=USER:PASSWORD)"
                };
                anyhow::Error::from(e).context(format!("pulling the manifest of {reference}{hint}"))
            })?;
        let config = parse_config(config.as_bytes())?;
        let n = manifest.layers.len();
        let t0 = std::time::Instant::now();
        let mut layers = Vec::with_capacity(n);
        let mut fetched = 0u64;
        for (i, l) in manifest.layers.iter().enumerate() {
            let dest = self.layer_dir(&l.digest)?;
            if dest.is_dir() {
                Self::touch(&dest);
                layers.push(dest);
                continue;
            }
            progress(format!(
                "Downloading layer {}/{n} ({:.1} MB)",
                i + 1,
                l.size as f64 / 1e6
            ));
            std::fs::create_dir_all(self.root.join("blobs"))?;
            let tmp = self
                .root
                .join("blobs")
                .join(format!(".pull-{}", uuid::Uuid::new_v4().simple()));
            let file = tokio::fs::File::create(&tmp).await?;
            let pulled = client.pull_blob(&reference, l, file).await;
            let unpacked = match pulled {
                Ok(()) => {
                    let (store, tmp2, mt, dg) = (
                        self.clone(),
                        tmp.clone(),
                        l.media_type.clone(),
                        l.digest.clone(),
                    );
                    tokio::task::spawn_blocking(move || store.add_layer(&tmp2, &mt, &dg)).await?
                }
                Err(e) => {
                    Err(anyhow::Error::from(e).context(format!("pulling layer {}", l.digest)))
                }
            };
            let _ = std::fs::remove_file(&tmp);
            layers.push(unpacked?);
            fetched += l.size.max(0) as u64;
        }
        if fetched > 0 {
            progress(format!(
                "Downloaded {reference} ({:.1} MB) in {:.1}s",
                fetched as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            ));
        }
        Ok(Image { layers, config })
    }
}

/// An error and its causes, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(&format!(": {c}"));
        cur = c.source();
    }
    out
}
