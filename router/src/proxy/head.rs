//! What the proxy reads from a request's head and writes into the head an
//! instance gets: the host asked for, upgrades, hop-by-hop headers, the
//! forwarding headers and the request id.

use std::borrow::Cow;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri};

use super::Client;

pub const INSTANCE_HEADER: &str = "x-lattice-instance";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header names as values: a `&str` is parsed into a name at every lookup,
/// and inserting by `&str` copies a custom name.
pub(super) const INSTANCE: HeaderName = HeaderName::from_static(INSTANCE_HEADER);
pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A request's id: the client's when usable, else one made here, kept as
/// text (it goes into the instance's request head as bytes).
pub(super) enum RequestId {
    Kept(HeaderValue),
    Made([u8; uuid::fmt::Hyphenated::LENGTH]),
}

impl RequestId {
    pub(super) fn as_str(&self) -> &str {
        match self {
            RequestId::Kept(v) => v.to_str().unwrap_or("-"),
            RequestId::Made(text) => std::str::from_utf8(text).unwrap_or("-"),
        }
    }
}

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1).
pub(crate) fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The host a request is for: the URI authority (HTTP/2, absolute form) or
/// the Host header, without port, lowercased (copied only when it was not).
pub fn host_of<'r>(uri: &'r Uri, headers: &'r HeaderMap) -> Option<Cow<'r, str>> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit_once('@').map(|(_, h)| h).unwrap_or(raw);
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        raw.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        None
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The headers an instance gets, in order: the client's without hop-by-hop
/// ones (but `Upgrade` and `Connection` for an upgrade) and without those
/// set here, then `X-Forwarded-For` (the client appended to what came),
/// `X-Forwarded-Proto` (`https` when the router terminated TLS, whatever came;
/// else `http` unless it came) and `X-Request-Id`.
pub(super) fn forwarded_headers(
    from: &HeaderMap,
    client: &Client,
    request_id: &RequestId,
    keep_upgrade: bool,
    mut each: impl FnMut(&HeaderName, &[u8]),
) {
    let peer_ip = &client.ip;
    for (k, v) in from {
        let upgrade = keep_upgrade && (k == header::UPGRADE || k == header::CONNECTION);
        if (hop_by_hop(k) && !upgrade)
            || k == X_FORWARDED_FOR
            || k == REQUEST_ID
            || (client.tls && k == X_FORWARDED_PROTO)
        {
            continue;
        }
        each(k, v.as_bytes());
    }
    match from.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer_ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_ip.as_bytes());
            each(&X_FORWARDED_FOR, &v);
        }
        None => each(&X_FORWARDED_FOR, peer_ip.as_bytes()),
    }
    if client.tls {
        each(&X_FORWARDED_PROTO, b"https");
    } else if !from.contains_key(&X_FORWARDED_PROTO) {
        each(&X_FORWARDED_PROTO, b"http");
    }
    each(&REQUEST_ID, request_id.as_str().as_bytes());
}

pub(super) fn forward_headers(
    from: &HeaderMap,
    client: &Client,
    request_id: &RequestId,
    keep_upgrade: bool,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(from.len() + 3);
    forwarded_headers(from, client, request_id, keep_upgrade, |k, v| {
        // Every value here came from a valid header value.
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.append(k.clone(), v);
        }
    });
    h
}

/// A request's head as an instance gets it (HTTP/1.1, whatever the client
/// spoke), for a body of `body_len` bytes.
pub(super) fn encode_head(
    parts: &hyper::http::request::Parts,
    client: &Client,
    request_id: &RequestId,
    body_len: usize,
) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/2 clients name the host in the URI.
        if let Some(a) = parts.uri.authority() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    forwarded_headers(&parts.headers, client, request_id, false, |k, v| {
        // The body is whole: its length is ours to say, and nothing waits for a 100.
        if k != header::CONTENT_LENGTH && k != header::EXPECT {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
    });
    let says_length = body_len > 0
        || parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING)
        || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if says_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Where `--redirect-http` sends a plain request for `host`: the same path and
/// query over HTTPS on `port` (left out when 443).
pub(super) fn https_location(host: &str, port: u16, uri: &Uri) -> String {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let host = if host.contains(':') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    };
    match port {
        443 => format!("https://{host}{path}"),
        p => format!("https://{host}:{p}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    fn req(host: Option<&str>, uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    fn host(host: Option<&str>, uri: &str) -> Option<String> {
        let r = req(host, uri);
        host_of(r.uri(), r.headers()).map(Cow::into_owned)
    }

    #[test]
    fn host_comes_from_authority_or_header_without_port() {
        assert_eq!(
            host(Some("Hello.Lattice.Localhost:8080"), "/"),
            Some("hello.lattice.localhost".into())
        );
        assert_eq!(
            host(Some("hello.lattice.localhost."), "/"),
            Some("hello.lattice.localhost".into())
        );
        assert_eq!(host(None, "http://app.x:81/p"), Some("app.x".into()));
        assert_eq!(host(Some("[::1]:8080"), "/"), Some("::1".into()));
        assert_eq!(host(None, "/"), None);
        assert_eq!(host(Some(""), "/"), None);
        // Already lowercase: borrowed from the request, not copied.
        let r = req(Some("app.lattice.localhost:8080"), "/");
        assert!(matches!(
            host_of(r.uri(), r.headers()),
            Some(Cow::Borrowed("app.lattice.localhost"))
        ));
    }

    #[test]
    fn redirects_keep_path_and_query_and_name_the_https_port() {
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        assert_eq!(
            https_location("app.test", 443, &uri),
            "https://app.test/a/b?c=d"
        );
        assert_eq!(
            https_location("app.test", 8443, &uri),
            "https://app.test:8443/a/b?c=d"
        );
        assert_eq!(
            https_location("::1", 8443, &"/".parse().unwrap()),
            "https://[::1]:8443/"
        );
    }

    fn proto_seen(from: &[(&str, &str)], tls: bool) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for (k, v) in from {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let client = Client {
            ip: HeaderValue::from_static("10.0.0.1"),
            tls,
        };
        let id = RequestId::Kept(HeaderValue::from_static("id"));
        let out = forward_headers(&headers, &client, &id, false);
        out.get_all(&X_FORWARDED_PROTO)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn forwarded_proto_is_https_over_tls_whatever_the_client_said() {
        assert_eq!(proto_seen(&[], true), ["https"]);
        assert_eq!(
            proto_seen(&[("x-forwarded-proto", "http")], true),
            ["https"]
        );
        // Plain HTTP keeps what a proxy in front said, else says http.
        assert_eq!(proto_seen(&[], false), ["http"]);
        assert_eq!(
            proto_seen(&[("x-forwarded-proto", "https")], false),
            ["https"]
        );
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let r = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(r.headers()));
        let r = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(r.headers()));
    }
}
