//! Access lines into the apps' log streams (`RTR` source): the proxy hands each line
//! to a bounded channel (never waiting on it); [`post_to_api`] ships them in batches to
//! the BBS's `POST /v1/logs`, where `ltc logs APP` finds them beside the app's own.

use std::time::Duration;

use base64::Engine;
use lattice_specs::logs::LogMessage;
use tokio::sync::mpsc;

/// Lines waiting to be shipped; beyond this, new lines are dropped (and counted).
pub const QUEUE: usize = 10_000;

/// Where the proxy puts access lines.
pub type LogSink = mpsc::Sender<LogMessage>;

/// A sink and its receiving end.
pub fn channel() -> (LogSink, mpsc::Receiver<LogMessage>) {
    mpsc::channel(QUEUE)
}

/// Ships lines from `rx` to `api` (`http://HOST:PORT` or `https://…`, verified by
/// `client`: [`lattice_tls::web::client`] with the cluster CA), `Basic` auth with
/// `basic_auth` (`user:password`) when given, until every sender is gone. A batch the
/// API refuses or cannot take is dropped with a warning (logs are best effort).
pub async fn post_to_api(
    mut rx: mpsc::Receiver<LogMessage>,
    api: String,
    basic_auth: Option<String>,
    client: lattice_tls::web::Client,
) {
    let url = format!("{}/v1/logs", api.trim_end_matches('/'));
    let auth = basic_auth.map(|a| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(a)
        )
    });
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1000).await > 0 {
        let body: Vec<u8> = batch.drain(..).flat_map(|m| m.to_ndjson()).collect();
        let mut req = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .timeout(Duration::from_secs(5))
            .body(body);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), %url, "the API refused access lines"),
            Err(e) if e.is_timeout() => tracing::warn!(%url, "shipping access lines timed out"),
            Err(e) => {
                tracing::warn!(error = %lattice_tls::web::chain(&e), %url, "cannot ship access lines")
            }
        }
        // Batch what piles up meanwhile rather than posting line by line.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
