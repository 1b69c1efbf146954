//! `POST /v1/volumes` with failover settings: a volume records its mode and grace,
//! `GET` shows them (a standby volume, where its copy is); a bad mode or a grace
//! shorter than the cells' presence TTL plus the fence margin is refused naming the
//! field.

mod common;

use common::client::{assert_error, start, As, Auth};
use lattice_specs::errors::ErrorName;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_takes_its_failover_mode_and_grace_and_bad_ones_are_refused() {
    let (bbs, _dir) = start(None, true).await;
    let api = As::new(&bbs, Auth::None);
    let cell = lattice_specs::models::CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "127.0.0.1:1".into(),
        volume_drivers: vec!["local".into()],
        capacity: Some(Default::default()),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    let size = lattice_specs::volume::MIN_SIZE;
    let volume = |name: &str, failover: &str, grace_s: i64| {
        json!({
            "name": name, "size_bytes": size, "cell_id": "cell-1",
            "failover": failover, "failover_grace_ns": grace_s * 1_000_000_000,
        })
    };
    for (body, words) in [
        (
            volume("a", "hot", 0),
            "failover: failover \"hot\": use restore",
        ),
        (
            volume("c", "restore", 20),
            "failover_grace_ns: failover grace 20s is shorter",
        ),
    ] {
        let answer = api.send("POST", "/v1/volumes", Some(body)).await;
        let message = assert_error(&answer, 400, ErrorName::InvalidRequest);
        assert!(message.contains(words), "{message}");
    }
    let (status, list) = api.send("GET", "/v1/volumes", None).await;
    assert_eq!((status, list), (200, json!([])), "nothing recorded");

    let answer = api
        .send("POST", "/v1/volumes", Some(volume("pg", "restore", 30)))
        .await;
    assert_eq!(answer.0, 201, "{}", answer.1);
    let (_, v) = api.send("GET", "/v1/volumes/pg", None).await;
    assert_eq!(v["failover"], "restore", "{v}");
    assert_eq!(v["failover_grace_ns"], 30_000_000_000i64, "{v}");
    assert_eq!(v["epoch"], 0, "{v}");
    assert_eq!(v["fenced_copies"], json!([]), "{v}");
    let answer = api
        .send("POST", "/v1/volumes", Some(volume("warm", "standby", 0)))
        .await;
    assert_eq!(answer.0, 201, "{}", answer.1);
    let (_, v) = api.send("GET", "/v1/volumes/warm", None).await;
    assert_eq!(v["failover"], "standby", "{v}");
    assert_eq!(
        v["standby_cell_id"], "",
        "no copy until the brain places one: {v}"
    );
    assert_eq!(v["standby_ready"], false, "{v}");
    let answer = api
        .send("POST", "/v1/volumes", Some(volume("plain", "", 0)))
        .await;
    assert_eq!(answer.0, 201, "{}", answer.1);
    let (_, v) = api.send("GET", "/v1/volumes/plain", None).await;
    assert_eq!(v["failover"], "none", "{v}");
    assert_eq!(v["failover_grace_ns"], 60_000_000_000i64, "the default");
}
