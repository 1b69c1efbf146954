//! Logs through the public API: `GET /v1/logs/LOG_GUID` gathers a log guid's lines
//! from every cell (each rep keeps its containers' lines) and from the BBS's own
//! buffer (lines pushed with `POST /v1/logs`: the router's access lines, the
//! components' debug logs), recent history first in time order, then live lines.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use lattice_specs::logs::{decode_ndjson, LogBuffer, LogMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a cell may take to hand over its recent lines.
const CELL_TIMEOUT: Duration = Duration::from_secs(2);

fn cell_url(rep_address: &str, log_guid: &str, recent: bool, follow: bool) -> String {
    let base = lattice_specs::http_url(rep_address);
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

/// Lists where the cells are asked, each a base URL ([`crate::cell_client::base_url`];
/// for following cells that join later).
pub type CellLister = Arc<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// How often a follower looks for cells it does not follow yet.
const RESCAN: Duration = Duration::from_secs(2);

/// Copies `s` into `tx` until either ends.
fn forward(mut s: BoxStream<'static, LogMessage>, tx: mpsc::Sender<LogMessage>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = s.next() => match m {
                    Some(m) => if tx.send(m).await.is_err() { break },
                    None => break,
                },
                _ = tx.closed() => break,
            }
        }
    })
}

/// A log guid's lines from `buffer` and the cells at `rep_addresses` (base URLs). When following,
/// `more_cells` is asked every couple of seconds for cells to follow too (new ones, or
/// ones whose stream ended and came back).
pub async fn gather(
    client: &reqwest::Client,
    buffer: &LogBuffer,
    rep_addresses: Vec<String>,
    more_cells: Option<CellLister>,
    log_guid: &str,
    recent: bool,
    follow: bool,
) -> BoxStream<'static, LogMessage> {
    // Live streams first, so nothing said while history is read falls between.
    let mut live: BoxStream<'static, LogMessage> = stream::empty().boxed();
    if follow {
        let (tx, rx) = mpsc::channel(1024);
        forward(buffer.stream(log_guid, false, true), tx.clone());
        let followed = Arc::new(Mutex::new(HashSet::new()));
        let follow_cell = {
            let (client, guid, followed) = (client.clone(), log_guid.to_string(), followed.clone());
            move |rep: String, tx: mpsc::Sender<LogMessage>| {
                let (client, guid, followed) = (client.clone(), guid.clone(), followed.clone());
                async move {
                    if !followed.lock().unwrap().insert(rep.clone()) {
                        return;
                    }
                    let s = cell_stream(client, rep.clone(), guid, false, true).await;
                    tokio::spawn(async move {
                        let _ = forward(s, tx).await;
                        followed.lock().unwrap().remove(&rep);
                    });
                }
            }
        };
        // All cells at once: one slow cell must not hold up the others.
        futures::future::join_all(
            rep_addresses
                .iter()
                .map(|rep| follow_cell(rep.clone(), tx.clone())),
        )
        .await;
        if let Some(list) = more_cells {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(RESCAN) => {}
                        _ = tx.closed() => break,
                    }
                    for rep in list().await {
                        follow_cell(rep, tx.clone()).await;
                    }
                }
            });
        }
        live = tokio_stream::wrappers::ReceiverStream::new(rx).boxed();
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
    let live = live
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
        let got: Vec<_> = gather(&client, &buf, vec![], None, "g", true, false)
            .await
            .map(|m| m.message)
            .collect()
            .await;
        assert_eq!(got, vec!["early", "late"]);
    }

    #[tokio::test]
    async fn a_follower_picks_up_a_cell_that_joins_later() {
        // A "cell" whose follow stream says one line and stays open.
        let line = LogMessage::new("g", "APP/0", "from the new cell");
        let body = line.to_ndjson();
        let app = axum::Router::new().route(
            "/v1/logs/{guid}",
            axum::routing::get(move || {
                let body = body.clone();
                async move {
                    let s =
                        stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))])
                            .chain(stream::pending());
                    axum::body::Body::from_stream(s)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let joined = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (j2, a2) = (joined.clone(), addr.clone());
        let lister: CellLister = Arc::new(move || {
            let cells = if j2.load(std::sync::atomic::Ordering::SeqCst) {
                vec![a2.clone()]
            } else {
                vec![]
            };
            Box::pin(async move { cells })
        });
        let client = reqwest::Client::new();
        let buf = LogBuffer::default();
        let mut s = gather(&client, &buf, vec![], Some(lister), "g", false, true).await;
        joined.store(true, std::sync::atomic::Ordering::SeqCst);
        let got = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("the new cell's line within a rescan")
            .unwrap();
        assert_eq!(got.message, "from the new cell");
    }
}
