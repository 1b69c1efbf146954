//! What one request leaves behind: its count in flight to an instance (for
//! least-connections) and its access line, metrics and log line.

use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper::{Method, StatusCode, Uri};

use super::Balance;
use crate::metrics as m;
use crate::table::{Endpoint, HostEntry};

/// Counts a request in flight to an instance until dropped (least-connections
/// only: every loop touching one shared counter per request costs throughput).
pub(super) struct InFlight<'a>(Option<&'a std::sync::atomic::AtomicUsize>);

impl InFlight<'_> {
    pub(super) fn new(e: &Endpoint, balance: Balance) -> InFlight<'_> {
        if balance != Balance::LeastConnections {
            return InFlight(None);
        }
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(&e.in_flight))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the access log and metrics record about one request.
pub(super) struct Access<'a> {
    pub(super) started: Instant,
    pub(super) method: &'a Method,
    pub(super) uri: &'a Uri,
    pub(super) host: &'a str,
    pub(super) app: &'a str,
    /// The host's entry, when it is routed (holds the app's metric handles).
    pub(super) entry: Option<&'a HostEntry>,
    pub(super) log_guid: &'a str,
    pub(super) request_id: &'a str,
    pub(super) logs: Option<&'a crate::logs::LogSink>,
}

impl Access<'_> {
    fn path(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }

    pub(super) fn done(&self, status: StatusCode, served_by: Option<&Endpoint>) {
        let instance = served_by.map(|e| e.index);
        // The instance's own app, when several share the host.
        let log_guid = match served_by {
            Some(e) if !e.log_guid.is_empty() => e.log_guid.as_str(),
            _ => self.log_guid,
        };
        let elapsed = self.started.elapsed();
        match self.entry {
            Some(entry) => {
                let app = entry.metrics.get_or_init(|| m::AppMetrics::new(self.app));
                if status != StatusCode::OK {
                    m::REQUESTS
                        .with_label_values(&[self.app, status.as_str()])
                        .inc();
                }
                app.observe(status == StatusCode::OK, elapsed.as_secs_f64());
            }
            None => {
                m::REQUESTS
                    .with_label_values(&[self.app, status.as_str()])
                    .inc();
                m::LATENCY
                    .with_label_values(&[self.app])
                    .observe(elapsed.as_secs_f64());
            }
        }
        tracing::info!(
            target: "rtr",
            source = "RTR",
            app = self.app,
            host = self.host,
            method = %self.method,
            path = %self.path(),
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            instance = instance.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            request_id = self.request_id,
            "request"
        );
        if let (Some(logs), false) = (self.logs, log_guid.is_empty()) {
            let line = format!(
                "{} - \"{} {}\" {} response_time:{:.6} app_index:{} x_request_id:{}",
                self.host,
                self.method,
                self.path(),
                status.as_u16(),
                elapsed.as_secs_f64(),
                instance
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                self.request_id,
            );
            if logs
                .try_send(lattice_specs::logs::LogMessage::new(
                    self.log_guid,
                    "RTR",
                    line,
                ))
                .is_err()
            {
                m::ACCESS_LINES_DROPPED.inc();
            }
        }
    }
}
