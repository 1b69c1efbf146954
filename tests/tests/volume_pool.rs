//! Issue 25: pools that grow. Under `lattice up --volume-pool-size 600M
//! --volume-pool-max 1G`, a volume larger than the pool (thin) is filled: the cell
//! grows its pool at the watermark by half (900M), then to its maximum, where it warns;
//! `ltc cells`, `ltc volume list`, the `cell_changed` event and the cell's metrics show
//! it. Real processes, real loop devices.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_tests::{wait_for, UpProcess};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The cluster's events as they come (`/v1/events`, server-sent), read by a thread
/// until the cluster stops.
fn follow_events(api: &str) -> Arc<Mutex<String>> {
    let addr = api.trim_start_matches("http://").to_string();
    let seen = Arc::new(Mutex::new(String::new()));
    let into = seen.clone();
    let mut s = std::net::TcpStream::connect(&addr).expect("connecting to the API");
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

fn write_mb(path: &std::path::Path, mb: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..mb {
        f.write_all(&chunk)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    f.sync_all().unwrap();
}

#[test]
fn a_pool_grows_at_its_watermark_and_warns_at_its_maximum() {
    const M: u64 = 1 << 20;
    let up = UpProcess::start_with(&["--volume-pool-size", "600M", "--volume-pool-max", "1G"]);
    up.target();
    let events = follow_events(&up.api);
    up.ltc_ok(&["volume", "create", "fill", "--size", "2G"]);
    let cell = || json(&up.ltc_ok(&["cells", "--json"]))[0].clone();
    let first = wait_for("the pool in the presence", Duration::from_secs(30), || {
        Some(cell()).filter(|c| c["volume_pool_bytes"].as_u64() > Some(0))
    });
    assert_eq!(first["volume_pool_bytes"], 600 * M, "{first}");
    assert_eq!(first["volume_pool_max_bytes"], 1024 * M, "{first}");
    assert!(up.ltc_ok(&["cells"]).contains("(max 1G)"));

    // Fill the volume 40 MB at a time, each time waiting for the cell to report it
    // (and to grow its pool when past the watermark).
    let mnt = up.data_dir.path().join("lattice/cell/volumes/mnt/fill");
    let mut sizes = vec![600 * M];
    let mut written = 0;
    let warned = loop {
        let c = cell();
        let (size, used) = (
            c["volume_pool_bytes"].as_u64().unwrap(),
            c["volume_pool_used_bytes"].as_u64().unwrap(),
        );
        if size != *sizes.last().unwrap() {
            sizes.push(size);
        }
        if c["volume_pool_warning"] != "" {
            break c;
        }
        assert!(written < 1000, "no warning after {written} MB: {c}");
        if used * 10 >= size * 8 {
            // Past the watermark: it grows (or warns) at its next check.
            wait_for("the pool grown or warning", Duration::from_secs(30), || {
                let c = cell();
                (c["volume_pool_bytes"].as_u64() != Some(size) || c["volume_pool_warning"] != "")
                    .then_some(())
            });
            continue;
        }
        write_mb(&mnt.join(format!("f{written}")), 40);
        written += 40;
        wait_for("the written data reported", Duration::from_secs(30), || {
            (cell()["volume_pool_used_bytes"].as_u64().unwrap() > used).then_some(())
        });
    };
    assert_eq!(sizes, vec![600 * M, 900 * M, 1024 * M], "{warned}");
    let w = warned["volume_pool_warning"].as_str().unwrap();
    assert!(w.contains("full and at its maximum (1G)"), "{w}");

    let cells = up.ltc_ok(&["cells"]);
    assert!(cells.contains(" !") && cells.contains(w), "{cells}");
    let volumes = up.ltc_ok(&["volume", "list"]);
    assert!(volumes.contains("(fill): the volume pool is"), "{volumes}");
    let listed = json(&up.ltc_ok(&["volume", "list", "--json"]));
    assert_eq!(listed[0]["pool_warning"], w, "{listed}");

    let grown = format!("\"volume_pool_bytes\":{}", 900 * M);
    wait_for("the cell_changed events", Duration::from_secs(10), || {
        let seen = events.lock().unwrap();
        (seen.contains("event: cell_changed") && seen.contains(&grown) && seen.contains(w))
            .then_some(())
    });
    let m = UpProcess::http_get(&up.metrics, "/metrics");
    assert!(
        m.contains("cell_volume_pool_growths_total{result=\"grown\"} 2"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "cell_volume_pool_bytes{{kind=\"max\"}} {}",
            1024 * M
        )),
        "{m}"
    );
    // The data written while the pool grew is whole.
    for at in (0..written).step_by(40) {
        let f = std::fs::read(mnt.join(format!("f{at}"))).unwrap();
        assert!(f.len() == 40 << 20 && f.iter().all(|b| *b == 7), "f{at}");
    }
}
