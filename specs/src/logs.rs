//! Log lines as every component passes them around: an app's stdout/stderr, the cell's
//! and the router's lines about it, tagged with its log guid, source and time, their
//! bounds and their NDJSON form. The bounded recent-history buffer with live fan-out
//! that cells and the BBS keep (`LogBuffer`, a tokio broadcast) is in `buffer`, behind
//! the default `log-buffer` feature.

use futures::stream;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

#[cfg(feature = "log-buffer")]
mod buffer;
#[cfg(feature = "log-buffer")]
pub use buffer::LogBuffer;

/// Lines kept per log guid.
pub const HISTORY: usize = 1000;

/// Bytes kept per log guid (of its lines' [`LogMessage::cost`]); past this, its oldest
/// lines go, whatever their count.
pub const HISTORY_BYTES: usize = 1024 * 1024;

/// Bytes kept over every log guid; past this, the log guid written to longest ago is
/// forgotten.
pub const TOTAL_BYTES: usize = 64 * 1024 * 1024;

/// A message longer than this is cut (and says so), as Diego's log streamer cuts them.
pub const MAX_MESSAGE_BYTES: usize = 61_440;

/// A log guid, source or stream longer than this: the line is dropped (no app has one).
pub const MAX_TAG_BYTES: usize = 255;

/// Lines a follower may fall behind by before it skips (each at most
/// [`MAX_MESSAGE_BYTES`]: a stalled follower pins at most ~60 MiB).
pub const FOLLOW_QUEUE: usize = 1024;

/// Log guids kept; past this, the one written to longest ago is forgotten (apps and
/// tasks come and go; their history must not pile up for ever).
pub const MAX_GUIDS: usize = 1000;

/// The log guid under which the components' own logs (`ltc debug-logs`) are kept.
pub const DEBUG_LOG_GUID: &str = "lattice-debug";

/// A log message as followers see it (one NDJSON line on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    pub log_guid: String,
    /// `APP/0`, `CELL`, `TASK`, `RTR`, …
    pub source: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
    /// Unix nanoseconds.
    pub timestamp: i64,
}

impl LogMessage {
    pub fn new(log_guid: &str, source: &str, message: impl Into<String>) -> LogMessage {
        LogMessage {
            log_guid: log_guid.to_string(),
            source: source.to_string(),
            stream: "stdout".into(),
            message: message.into(),
            timestamp: crate::now_nanos(),
        }
    }

    /// What the line costs in a buffer: its text and tags.
    pub fn cost(&self) -> usize {
        self.message.len() + self.log_guid.len() + self.source.len() + self.stream.len()
    }

    /// Cuts a message longer than [`MAX_MESSAGE_BYTES`] (at a character boundary),
    /// saying how much went.
    pub fn truncate(&mut self) {
        if self.message.len() <= MAX_MESSAGE_BYTES {
            return;
        }
        let total = self.message.len();
        let note = format!(" [message truncated: {total} bytes, {MAX_MESSAGE_BYTES} kept]");
        let mut keep = MAX_MESSAGE_BYTES - note.len();
        while !self.message.is_char_boundary(keep) {
            keep -= 1;
        }
        self.message.truncate(keep);
        self.message.push_str(&note);
    }

    /// The message as one NDJSON line (with its newline).
    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Splits a byte stream of newline-delimited JSON into log messages (bad lines are
/// skipped).
pub fn decode_ndjson<S, B, E>(body: S) -> impl Stream<Item = LogMessage>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    stream::unfold(
        (body, Vec::<u8>::new(), false),
        |(mut body, mut buf, mut done)| async move {
            loop {
                if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    match serde_json::from_slice::<LogMessage>(&line) {
                        Ok(m) => return Some((m, (body, buf, done))),
                        Err(_) => continue,
                    }
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(chunk.as_ref()),
                    _ => {
                        done = true;
                        buf.push(b'\n');
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ndjson_is_split_across_chunks_and_bad_lines_skipped() {
        let a = LogMessage::new("g", "APP/0", "one");
        let b = LogMessage::new("g", "RTR", "two");
        let mut bytes = a.to_ndjson();
        bytes.extend_from_slice(b"not json\n");
        bytes.extend_from_slice(&b.to_ndjson());
        bytes.pop(); // the last line may come without its newline
        let chunks: Vec<Result<Vec<u8>, ()>> = bytes.chunks(7).map(|c| Ok(c.to_vec())).collect();
        let got: Vec<_> = decode_ndjson(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got, vec![a, b]);
    }
}
