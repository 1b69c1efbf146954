//! Sending a request on to an instance: buffered and retried on a refused
//! connection (`forward`), or passed through byte for byte once upgraded
//! (`upgrade`, WebSocket and the like).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::access::InFlight;
use super::head::{encode_head, forward_headers, RequestId, INSTANCE};
use super::{full, Body, BoxError, Client, Proxy};
use crate::backend::{ExchangeError, Outgoing};
use crate::metrics as m;
use crate::table::Endpoint;
use crate::timeouts::Slot;

impl Proxy {
    pub(super) async fn forward<'e>(
        &self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        candidates: &[&'e Endpoint],
        client: &Client,
        request_id: &RequestId,
        slot: &Slot,
    ) -> (Response<Body>, Option<&'e Endpoint>) {
        let body = if hyper::body::Body::is_end_stream(&body) {
            Ok(Bytes::new())
        } else {
            Limited::new(body, self.cfg.max_body_bytes)
                .collect()
                .await
                .map(|b| b.to_bytes())
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_big {
                    (
                        full(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body larger than {} bytes", self.cfg.max_body_bytes),
                        ),
                        None,
                    )
                } else {
                    (
                        full(
                            StatusCode::BAD_REQUEST,
                            format!("could not read the request body: {e}"),
                        ),
                        None,
                    )
                };
            }
        };
        let outgoing = Outgoing::new(
            encode_head(parts, client, request_id, body.len()),
            body,
            parts.method == Method::HEAD,
            matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
            ),
        );
        let mut last_error = String::new();
        for ep in candidates.iter().take(self.cfg.max_attempts.max(1)) {
            let guard = InFlight::new(ep, self.cfg.balance);
            let r = slot
                .within(self.cfg.request_timeout, self.pool.send(ep.addr, &outgoing))
                .await;
            drop(guard);
            match r {
                Ok(Ok(mut resp)) => {
                    resp.headers_mut().insert(INSTANCE, ep.index_header.clone());
                    return (resp, Some(*ep));
                }
                Ok(Err(ExchangeError::Connect(e))) => {
                    m::BACKEND_ERRORS.with_label_values(&["connect"]).inc();
                    tracing::warn!(instance = ep.index, addr = %ep.addr, error = %e, "instance refused the connection; trying another");
                    self.bench(ep.addr);
                    last_error = e.to_string();
                }
                Ok(Err(e)) => {
                    // The request may have reached the app: not retried.
                    m::BACKEND_ERRORS.with_label_values(&["other"]).inc();
                    return (
                        full(
                            StatusCode::BAD_GATEWAY,
                            format!("502 Bad Gateway: instance {} failed: {e}", ep.index),
                        ),
                        Some(*ep),
                    );
                }
                Err(_) => {
                    m::BACKEND_ERRORS.with_label_values(&["timeout"]).inc();
                    let secs = self.cfg.request_timeout.as_secs_f64();
                    return (
                        full(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!(
                                "504 Gateway Timeout: instance {} did not answer within {secs} s",
                                ep.index
                            ),
                        ),
                        Some(*ep),
                    );
                }
            }
        }
        (
            full(
                StatusCode::BAD_GATEWAY,
                format!("502 Bad Gateway: no instance accepted the connection ({last_error})"),
            ),
            None,
        )
    }

    /// Pass an upgraded connection (WebSocket…) through to an instance.
    pub(super) async fn upgrade<'e>(
        &self,
        mut req: Request<Incoming>,
        candidates: &[&'e Endpoint],
        client: &Client,
        request_id: &RequestId,
    ) -> (Response<Body>, Option<&'e Endpoint>) {
        let client_side = hyper::upgrade::on(&mut req);
        let headers = forward_headers(req.headers(), client, request_id, true);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        for ep in candidates.iter().take(self.cfg.max_attempts.max(1)) {
            let stream = match tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(ep.addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    m::BACKEND_ERRORS.with_label_values(&["connect"]).inc();
                    self.bench(ep.addr);
                    continue;
                }
            };
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
            else {
                continue;
            };
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            let mut fwd = Request::builder()
                .method(req.method().clone())
                .uri(path.clone());
            *fwd.headers_mut().unwrap() = headers.clone();
            let Ok(fwd) = fwd.body(Empty::new()) else {
                break;
            };
            let mut resp = match tokio::time::timeout(
                self.cfg.request_timeout,
                sender.send_request(fwd),
            )
            .await
            {
                Ok(Ok(r)) => r,
                _ => {
                    m::BACKEND_ERRORS.with_label_values(&["other"]).inc();
                    return (
                        full(
                            StatusCode::BAD_GATEWAY,
                            format!("502 Bad Gateway: instance {} failed the upgrade", ep.index),
                        ),
                        Some(*ep),
                    );
                }
            };
            let mut out = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            out = out.header(INSTANCE, ep.index_header.clone());
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let backend_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(c), Ok(b)) = tokio::join!(client_side, backend_side) {
                        let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                    }
                });
                return (out.body(Body::empty()).unwrap(), Some(*ep));
            }
            let body = Body::stream(resp.into_body().map_err(|e| Box::new(e) as BoxError));
            return (out.body(body).unwrap(), Some(*ep));
        }
        (
            full(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: no instance accepted the connection".into(),
            ),
            None,
        )
    }
}
