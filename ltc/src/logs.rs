//! `ltc logs`: an app's or task's lines from every instance, the cell and the router.

use std::io::Write;

use futures::StreamExt;
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::{decode_ndjson, LogMessage};

use crate::api::{error_name, Api};

/// The log guid behind NAME: an app's, a task's, or NAME itself.
pub async fn log_guid_of(api: &Api, name: &str) -> anyhow::Result<String> {
    match api.desired_lrp(name).await {
        Ok(d) => {
            return Ok(if d.request.log_guid.is_empty() {
                name.into()
            } else {
                d.request.log_guid
            })
        }
        Err(e) if error_name(&e) != Some(ErrorName::DesiredLRPNotFound) => return Err(e),
        Err(_) => {}
    }
    match api.task(name).await {
        Ok(t) => Ok(if t.request.log_guid.is_empty() {
            name.into()
        } else {
            t.request.log_guid
        }),
        // A log guid of its own, or a task gone since (a completion callback resolves
        // and deletes it): its lines are still kept.
        Err(_) if has_lines(api, name).await => Ok(name.into()),
        Err(_) => anyhow::bail!(
            "no app or task named {name}, and no log lines for it: `ltc list` shows the apps, `ltc list-tasks` the tasks"
        ),
    }
}

/// Whether the API holds any line for log guid `guid`.
async fn has_lines(api: &Api, guid: &str) -> bool {
    match api.logs(guid, false).await {
        Ok(r) => r.bytes().await.is_ok_and(|b| !b.trim_ascii().is_empty()),
        Err(_) => false,
    }
}

/// `HH:MM:SS.mmm` (UTC) of a Unix-ns time.
fn clock(nanos: i64) -> String {
    let ms = nanos / 1_000_000;
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}

pub fn format_line(m: &LogMessage) -> String {
    let err = if m.stream == "stderr" { " ERR" } else { "" };
    format!("{} [{}{err}] {}", clock(m.timestamp), m.source, m.message)
}

/// Prints `log_guid`'s lines: the recent ones, then (if `follow`) new ones until
/// interrupted.
pub async fn print(api: &Api, log_guid: &str, follow: bool) -> anyhow::Result<()> {
    let resp = api.logs(log_guid, follow).await?;
    let mut lines = std::pin::pin!(decode_ndjson(resp.bytes_stream()));
    let mut out = std::io::stdout();
    while let Some(m) = lines.next().await {
        if writeln!(out, "{}", format_line(&m)).is_err() {
            break; // stdout closed (e.g. piped into head)
        }
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_time_source_and_stream() {
        let mut m = LogMessage::new("g", "APP/1", "hello");
        m.timestamp = ((13 * 3600 + 4 * 60 + 5) * 1000 + 6) * 1_000_000;
        assert_eq!(format_line(&m), "13:04:05.006 [APP/1] hello");
        m.stream = "stderr".into();
        assert_eq!(format_line(&m), "13:04:05.006 [APP/1 ERR] hello");
    }
}
