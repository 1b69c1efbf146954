//! A Task's completion callback end to end (issue 24): `lattice up`, a task
//! submitted with `ltc submit-task` whose `completion_callback_url` points at a
//! server on the host. The server answers 503 first, then 200: the callback comes
//! twice with the completed task's JSON, the task is deleted afterwards, and its log
//! says how the callback went.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_tests::{wait_for, UpProcess};

/// A plain HTTP server on loopback answering the n-th request with `replies[n]`
/// (200 past them), keeping each request's headers (lowercase) and body.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

fn receiver(replies: Vec<u16>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    // Lives until the test process ends.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let n = {
                let mut got = g.lock().unwrap();
                got.push((head, body));
                got.len() - 1
            };
            let status = replies.get(n).copied().unwrap_or(200);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    Receiver { url, got }
}

#[test]
fn a_tasks_completion_callback_is_made_after_a_503_and_the_task_deleted() {
    let rx = receiver(vec![503]);
    let up = UpProcess::start();
    up.target();
    let task = up.data_dir.path().join("task.json");
    std::fs::write(
        &task,
        format!(
            r#"{{"task_guid": "called-back", "rootfs": "preloaded:busybox", "log_guid": "called-back",
                "action": {{"run": {{"path": "sh", "args": ["-c", "echo 42 > /tmp/result"]}}}},
                "result_file": "/tmp/result", "memory_mb": 32,
                "completion_callback_url": "{}"}}"#,
            rx.url
        ),
    )
    .unwrap();
    up.ltc_ok(&["submit-task", task.to_str().unwrap()]);

    let got = wait_for("two callbacks", Duration::from_secs(60), || {
        let got = rx.got.lock().unwrap().clone();
        (got.len() >= 2).then_some(got)
    });
    for (head, body) in &got {
        assert!(head.starts_with("post /done http/1.1"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(body["task_guid"], "called-back");
        assert_eq!(body["state"], "COMPLETED");
        assert_eq!(body["failed"], false, "{body}");
        assert_eq!(body["result"], "42\n");
    }
    wait_for("the task deleted", Duration::from_secs(30), || {
        let out = up.ltc(&["task", "called-back"]);
        (!out.ok).then_some(out)
    });
    // The task is gone, so `ltc logs` no longer finds its name: its log guid's
    // lines through the API.
    let logs = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(format!("{}/v1/logs/called-back?follow=false", up.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let want = format!("completion callback to {}: 200 after 2 attempts", rx.url);
    assert!(logs.contains(&want), "no {want:?} in\n{logs}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.got.lock().unwrap().len(), 2, "no callback after the 200");
}
