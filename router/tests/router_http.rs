//! The router over real HTTP: a real BBS, plain tokio/hyper backends standing
//! in for instances, requests through the router.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lattice_router::proxy::ProxyConfig;
use lattice_specs::bbs_api::*;

mod support;
use support::{backend, bbs, router};

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn get(router: SocketAddr, host: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{router}/hello?x=1"))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_three_instances_with_forwarding_headers() {
    let b = bbs().await;
    b.desire("web", "web.lattice.localhost", 3).await;
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let port = backend(name).await.port();
        b.run("web", i as i32, port).await;
    }
    let r = router(&b, ProxyConfig::default()).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let resp = get(r.addr, "Web.Lattice.Localhost:8080").await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-lattice-instance"));
        assert_eq!(resp.headers()["seen-x-forwarded-for"], "127.0.0.1");
        assert_eq!(resp.headers()["seen-x-forwarded-proto"], "http");
        assert_eq!(
            resp.headers()["seen-host"],
            "Web.Lattice.Localhost:8080",
            "the app sees the host it was called by"
        );
        let id = resp.headers()["seen-x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 36, "a generated request id: {id}");
        *counts.entry(resp.text().await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    let resp = reqwest::Client::new()
        .get(format!("http://{}/", r.addr))
        .header("host", "web.lattice.localhost")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["seen-x-request-id"],
        "abc-123",
        "an incoming request id is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_stops_getting_traffic_within_a_second() {
    let b = bbs().await;
    b.desire("web", "web.x", 2).await;
    let ik0 = b.run("web", 0, backend("zero").await.port()).await;
    b.run("web", 1, backend("one").await.port()).await;
    let r = router(&b, ProxyConfig::default()).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(get(r.addr, "web.x").await.text().await.unwrap());
    }
    assert_eq!(seen.len(), 2);
    let crashed_at = Instant::now();
    b.client()
        .await
        .crash_actual_lrp(CrashActualLrpRequest {
            key: Some(ActualLrpRef {
                process_guid: "web".into(),
                index: 0,
            }),
            instance_key: Some(ik0),
            error_message: "boom".into(),
        })
        .await
        .unwrap();
    // Until the event arrives requests may still reach it; after, never again.
    loop {
        let mut hits = 0;
        for _ in 0..6 {
            if get(r.addr, "web.x").await.text().await.unwrap() == "zero" {
                hits += 1;
            }
        }
        if hits == 0 {
            break;
        }
        assert!(
            crashed_at.elapsed() < Duration::from_secs(1),
            "still routed to the crashed instance after a second"
        );
    }
    assert!(crashed_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_404_nothing_running_503_everything_refused_502_refused_one_retried() {
    let b = bbs().await;
    b.desire("idle", "idle.x", 1).await;
    b.desire("dead", "dead.x", 2).await;
    b.run("dead", 0, closed_port()).await;
    b.run("dead", 1, closed_port()).await;
    b.desire("half", "half.x", 2).await;
    b.run("half", 0, closed_port()).await;
    b.run("half", 1, backend("alive").await.port()).await;
    let r = router(&b, ProxyConfig::default()).await;

    let resp = get(r.addr, "nope.x").await;
    assert_eq!(resp.status(), 404);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("no app is routed at nope.x"));
    let resp = get(r.addr, "idle.x").await;
    assert_eq!(resp.status(), 503);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("idle has no running instance"));
    let resp = get(r.addr, "dead.x").await;
    assert_eq!(resp.status(), 502);
    for _ in 0..10 {
        let resp = get(r.addr, "half.x").await;
        assert_eq!(
            resp.status(),
            200,
            "a refused connection is retried on another instance"
        );
        assert_eq!(resp.text().await.unwrap(), "alive");
    }
    let m = lattice_router::metrics::render();
    assert!(
        m.contains("router_backend_errors_total{kind=\"connect\"}"),
        "{m}"
    );
    // Each event loop adds its counts to the shared metrics every tick.
    let deadline = Instant::now() + Duration::from_secs(2);
    let counted = "router_requests_total{app=\"half\",status=\"200\"} 10\n";
    let mut m = lattice_router::metrics::render();
    while !m.contains(counted) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = lattice_router::metrics::render();
    }
    assert!(m.contains(counted), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_router() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let b = bbs().await;
    b.desire("ws", "ws.x", 1).await;
    b.run("ws", 0, ws_port).await;
    let r = router(&b, ProxyConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.x/echo", stream)
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-lattice-instance"], "0");
    for text in ["hello", "through", "the router"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_rebuilt_by_a_restarted_router_and_survives_losing_the_bbs() {
    let b = bbs().await;
    b.desire("web", "web.x", 1).await;
    b.run("web", 0, backend("only").await.port()).await;
    let first = router(&b, ProxyConfig::default()).await;
    assert_eq!(get(first.addr, "web.x").await.text().await.unwrap(), "only");
    drop(first);
    let second = router(&b, ProxyConfig::default()).await;
    assert_eq!(
        get(second.addr, "web.x").await.text().await.unwrap(),
        "only",
        "a new router builds its table from a snapshot"
    );
    // The BBS goes away: the last good table keeps serving.
    b.running.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(get(second.addr, "web.x").await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_hanging_backends_are_bounded() {
    // A backend that accepts and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let b = bbs().await;
    b.desire("slow", "slow.x", 1).await;
    b.run("slow", 0, hang_port).await;
    b.desire("fast", "fast.x", 1).await;
    b.run("fast", 0, backend("fast").await.port()).await;
    let cfg = ProxyConfig {
        request_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let r = router(&b, cfg).await;

    // A slowloris client sends half a request head and stalls.
    let mut loris = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut loris, b"GET / HTTP/1.1\r\nHost: fast.x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let slow = tokio::spawn(get(r.addr, "slow.x"));
    // Meanwhile other requests are served at once.
    assert_eq!(get(r.addr, "fast.x").await.text().await.unwrap(), "fast");
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "a hanging backend or a slow client stalled other requests"
    );
    assert_eq!(slow.await.unwrap().status(), 504);
    // HTTP/2 (h2c) serves each request as a task of its own: a stream to the
    // hanging backend times out while a later one on the same connection is
    // answered.
    let io = TokioIo::new(tokio::net::TcpStream::connect(r.addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let h2 = |host: &'static str| {
        let mut sender = sender.clone();
        async move {
            let req = Request::get(format!("http://{host}/"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            sender.send_request(req).await.unwrap().status()
        }
    };
    let slow = tokio::spawn(h2("slow.x"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h2("fast.x").await, 200);
    let slow = tokio::time::timeout(Duration::from_secs(3), slow)
        .await
        .expect("an HTTP/2 request to a hanging backend times out");
    assert_eq!(slow.unwrap(), 504);
    // The slowloris connection is closed by the header read timeout.
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut loris, &mut buf),
    )
    .await
    .expect("the router closes a stalled connection");
    let text = String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).to_string();
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Oversized headers are refused.
    let resp = reqwest::Client::new()
        .get(format!("http://{}/", r.addr))
        .header("host", "fast.x")
        .header("x-big", "a".repeat(100 * 1024))
        .send()
        .await;
    assert!(
        resp.map(|r| r.status() == 431 || r.status() == 400)
            .unwrap_or(true),
        "oversized headers are refused"
    );
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let b = bbs().await;
    // Its own app name: the metrics are shared by every test in this process.
    b.desire("shut", "shut.lattice.localhost", 1).await;
    b.run("shut", 0, backend("shut").await.port()).await;
    let r = router(&b, ProxyConfig::default()).await;
    wait_for_routes(r.addr, &["shut"]).await;
    // Like `printf 'GET ...' | nc -N`: the request, then the write side shut.
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: shut.lattice.localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut s).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer),
    )
    .await
    .expect("the router answers a half-closed connection")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("shut"), "{answer}");
}

/// A backend whose answers take every framing HTTP/1.1 has, counting the
/// connections it accepts.
async fn framing_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::{BodyExt, StreamBody};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    type B = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
                    let r: Response<B> = match req.uri().path() {
                        // No length known: hyper sends it chunked, in pieces over time.
                        "/chunked" => {
                            let pieces = futures::stream::iter(0..50).then(|i| async move {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                    Bytes::from(format!("piece {i};")),
                                ))
                            });
                            Response::new(BodyExt::boxed(StreamBody::new(pieces)))
                        }
                        "/big" => Response::new(Full::new(Bytes::from(vec![7u8; 3 << 20])).boxed()),
                        "/echo" => {
                            let seen = req.into_body().collect().await.unwrap().to_bytes();
                            Response::new(Full::new(seen).boxed())
                        }
                        "/none" => {
                            let mut r = Response::new(Full::new(Bytes::new()).boxed());
                            *r.status_mut() = hyper::StatusCode::NO_CONTENT;
                            r
                        }
                        _ => Response::new(Full::new(Bytes::from_static(b"ok")).boxed()),
                    };
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// A backend that answers each connection once, then closes it: with
/// `close_delimited` the body ends at the close, otherwise the response says
/// keep-alive and the connection is closed a moment later (an idle timeout).
async fn one_shot_backend(close_delimited: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = vec![];
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if close_delimited {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
                        )
                        .await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh")
                        .await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_framing_passes_through_and_backend_connections_are_reused() {
    let bbs = bbs().await;
    let (framing, accepted) = framing_backend().await;
    bbs.desire("framing", "framing.lattice.localhost", 1).await;
    bbs.run("framing", 0, framing.port()).await;
    bbs.desire("closer", "closer.lattice.localhost", 1).await;
    bbs.run("closer", 0, one_shot_backend(true).await.port())
        .await;
    bbs.desire("idler", "idler.lattice.localhost", 1).await;
    bbs.run("idler", 0, one_shot_backend(false).await.port())
        .await;
    let r = router(&bbs, ProxyConfig::default()).await;
    wait_for_routes(r.addr, &["framing", "closer", "idler"]).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", r.addr);
    let framing_host = "framing.lattice.localhost";

    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        let resp = send(client.get(url("/")).header("host", framing_host)).await;
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        opened <= 2,
        "20 requests on one client connection opened {opened} backend connections (one per event loop at most)"
    );

    let chunked = send(client.get(url("/chunked")).header("host", framing_host)).await;
    assert_eq!(chunked.status(), 200);
    let expected: String = (0..50).map(|i| format!("piece {i};")).collect();
    assert_eq!(chunked.text().await.unwrap(), expected);

    let big = send(client.get(url("/big")).header("host", framing_host)).await;
    assert_eq!(
        big.headers()["content-length"],
        (3u64 << 20).to_string().as_str()
    );
    let body = big.bytes().await.unwrap();
    assert!(body.len() == 3 << 20 && body.iter().all(|b| *b == 7));

    let head = send(client.head(url("/big")).header("host", framing_host)).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        (3u64 << 20).to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    let none = send(client.get(url("/none")).header("host", framing_host)).await;
    assert_eq!(none.status(), 204);

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let echo = client
        .post(url("/echo"))
        .header("host", framing_host)
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echo.bytes().await.unwrap().to_vec(), payload);
    let empty_post = send(client.post(url("/echo")).header("host", framing_host)).await;
    assert_eq!(empty_post.status(), 200);
    assert!(empty_post.bytes().await.unwrap().is_empty());

    // The same connection still works after all of that.
    let resp = send(client.get(url("/")).header("host", framing_host)).await;
    assert_eq!(resp.text().await.unwrap(), "ok");

    for _ in 0..3 {
        let resp = send(
            client
                .get(url("/"))
                .header("host", "closer.lattice.localhost"),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "until the end");
    }
    // Each answer's connection is closed by the instance while idle in the
    // pool: the next request goes on a fresh one, never a 502.
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let resp = send(
            client
                .get(url("/"))
                .header("host", "idler.lattice.localhost"),
        )
        .await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "fresh");
    }
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

/// Wait until every app answers through the router with something other than 404.
async fn wait_for_routes(router: SocketAddr, apps: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for app in apps {
        loop {
            let status = get(router, &format!("{app}.lattice.localhost"))
                .await
                .status();
            if status != 404 && status != 503 {
                break;
            }
            assert!(Instant::now() < deadline, "{app} is not routed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_host_goes_to_its_address_whatever_the_apps_routes_say() {
    let b = bbs().await;
    // An app that claims the API's host name: it must not get its requests.
    b.desire("thief", "receptor.lattice.localhost", 1).await;
    b.run("thief", 0, backend("thief").await.port()).await;
    b.desire("web", "web.lattice.localhost", 1).await;
    b.run("web", 0, backend("web").await.port()).await;
    let api = backend("api").await;
    let cfg = ProxyConfig {
        fixed: vec![lattice_router::proxy::FixedHost {
            host: "receptor.lattice.localhost".into(),
            addr: api,
            name: "lattice-api".into(),
        }],
        ..Default::default()
    };
    let r = router(&b, cfg).await;
    wait_for_routes(r.addr, &["web"]).await;
    let resp = get(r.addr, "Receptor.Lattice.Localhost").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["seen-x-forwarded-for"], "127.0.0.1");
    assert_eq!(resp.text().await.unwrap(), "api");
    assert_eq!(
        get(r.addr, "web.lattice.localhost")
            .await
            .text()
            .await
            .unwrap(),
        "web"
    );
}
