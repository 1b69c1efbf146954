//! Logs through the public API: `GET /v1/logs/LOG_GUID` gathers a log guid's lines
//! from every cell (each rep keeps its containers' lines) and from the BBS's own
//! buffer (lines pushed with `POST /v1/logs`: the router's access lines, the
//! components' debug logs), recent history first in time order, then live lines.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use lattice_specs::logs::{decode_ndjson, LogBuffer, LogMessage};

/// How long a cell may take to hand over its recent lines.
const CELL_TIMEOUT: Duration = Duration::from_secs(2);

fn cell_url(rep_address: &str, log_guid: &str, recent: bool, follow: bool) -> String {
    let base = if rep_address.contains("://") {
        rep_address.to_string()
    } else {
        format!("http://{rep_address}")
    };
    let guid = lattice_specs::path_segment(log_guid);
    format!("{base}/v1/logs/{guid}?recent={recent}&follow={follow}")
}

async fn cell_stream(
    client: reqwest::Client,
    rep_address: String,
    log_guid: String,
    recent: bool,
    follow: bool,
) -> BoxStream<'static, LogMessage> {
    let url = cell_url(&rep_address, &log_guid, recent, follow);
    let mut req = client.get(&url);
    if !follow {
        req = req.timeout(CELL_TIMEOUT);
    }
    match req.send().await.and_then(|r| r.error_for_status()) {
        Ok(resp) => decode_ndjson(resp.bytes_stream()).boxed(),
        Err(e) => {
            tracing::debug!(%rep_address, error = %e, "cell logs unavailable");
            stream::empty().boxed()
        }
    }
}

/// A log guid's lines from `buffer` and the cells at `rep_addresses`.
pub async fn gather(
    client: &reqwest::Client,
    buffer: &LogBuffer,
    rep_addresses: Vec<String>,
    log_guid: &str,
    recent: bool,
    follow: bool,
) -> BoxStream<'static, LogMessage> {
    // Live streams first, so nothing said while history is read falls between.
    let mut live = Vec::new();
    if follow {
        live.push(buffer.stream(log_guid, false, true));
        // All cells at once: one slow cell must not hold up the others.
        live.extend(
            futures::future::join_all(rep_addresses.iter().map(|rep| {
                cell_stream(
                    client.clone(),
                    rep.clone(),
                    log_guid.to_string(),
                    false,
                    true,
                )
            }))
            .await,
        );
    }
    let mut history = Vec::new();
    if recent {
        history = buffer.recent(log_guid);
        let fetched = futures::future::join_all(rep_addresses.iter().map(|rep| {
            let s = cell_stream(
                client.clone(),
                rep.clone(),
                log_guid.to_string(),
                true,
                false,
            );
            async move {
                tokio::time::timeout(CELL_TIMEOUT, async { s.await.collect::<Vec<_>>().await })
                    .await
                    .unwrap_or_default()
            }
        }))
        .await;
        history.extend(fetched.into_iter().flatten());
        history.sort_by_key(|m| m.timestamp);
    }
    let seen: HashSet<(i64, String, String)> = history
        .iter()
        .map(|m| (m.timestamp, m.source.clone(), m.message.clone()))
        .collect();
    let live = stream::select_all(live)
        .filter(move |m| {
            let dup = seen.contains(&(m.timestamp, m.source.clone(), m.message.clone()));
            futures::future::ready(!dup)
        })
        .boxed();
    stream::iter(history).chain(live).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_urls_keep_the_guid_one_segment() {
        assert_eq!(
            cell_url("10.0.0.1:1800", "my app/x", true, false),
            "http://10.0.0.1:1800/v1/logs/my%20app%2Fx?recent=true&follow=false"
        );
    }

    #[tokio::test]
    async fn gather_merges_history_in_time_order_without_cells() {
        let buf = LogBuffer::default();
        let mut late = LogMessage::new("g", "RTR", "late");
        let mut early = LogMessage::new("g", "RTR", "early");
        early.timestamp = 1;
        late.timestamp = 2;
        buf.push(late);
        buf.push(early);
        let client = reqwest::Client::new();
        let got: Vec<_> = gather(&client, &buf, vec![], "g", true, false)
            .await
            .map(|m| m.message)
            .collect()
            .await;
        assert_eq!(got, vec!["early", "late"]);
    }
}
