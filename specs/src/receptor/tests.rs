use super::*;
use serde_json::json;

#[test]
fn task_request_reads_receptor_json_with_one_key_actions() {
    let body = json!({
        "task_guid": "t-1", "domain": "d", "rootfs": "preloaded:busybox",
        "action": {"serial": {"actions": [
            {"run": {"path": "sh", "args": ["-c", "echo hi > /tmp/out"], "resource_limits": {"nofile": 1024}}},
            {"timeout": {"action": {"run": {"path": "true"}}, "timeout": 5000000000i64}},
            {"emit_progress": {"action": {"try": {"action": {"download": {"from": "http://x/y.tgz", "to": "/app"}}}}, "start_message": "go"}}
        ]}},
        "env": [{"name": "A", "value": "1"}], "result_file": "/tmp/out", "unknown_field": 1
    });
    let r: TaskCreateRequest = serde_json::from_value(body).unwrap();
    let (guid, domain, def) = r.into_model();
    assert_eq!((guid.as_str(), domain.as_str()), ("t-1", "d"));
    assert_eq!(
        def.cpu_weight, DEFAULT_CPU_WEIGHT,
        "missing cpu_weight gets the default"
    );
    crate::validation::validate_task(&guid, &domain, &def).unwrap();
    let back = serde_json::to_value(def.action.as_ref().unwrap()).unwrap();
    assert_eq!(
        back["serial"]["actions"][0]["run"]["args"][1],
        "echo hi > /tmp/out"
    );
    assert_eq!(
        back["serial"]["actions"][0]["run"]["resource_limits"]["nofile"],
        1024
    );
    assert_eq!(
        back["serial"]["actions"][1]["timeout"]["timeout"],
        5000000000i64
    );
    assert_eq!(
        back["serial"]["actions"][2]["emit_progress"]["action"]["try"]["action"]["download"]["to"],
        "/app"
    );
}

#[test]
fn task_response_has_receptor_field_names() {
    let mut t = crate::task::new_task(
        "t".into(),
        "d".into(),
        TaskDefinition {
            rootfs: "preloaded:x".into(),
            ..Default::default()
        },
        5,
    );
    t.cell_id = "cell-1".into();
    let v = serde_json::to_value(TaskResponse::from(t)).unwrap();
    for f in [
        "task_guid",
        "domain",
        "rootfs",
        "action",
        "cpu_weight",
        "disk_mb",
        "memory_mb",
        "log_guid",
        "log_source",
        "metrics_guid",
        "result_file",
        "completion_callback_url",
        "privileged",
        "cell_id",
        "created_at",
        "failed",
        "failure_reason",
        "result",
        "state",
    ] {
        assert!(v.get(f).is_some(), "missing {f} in {v}");
    }
    assert_eq!(v["state"], "PENDING");
    assert_eq!(v["created_at"], 5);
}

#[test]
fn desired_lrp_round_trips_routes_as_raw_json() {
    let body = json!({
        "process_guid": "web", "rootfs": "docker:///cloudfoundry/lattice-app#latest", "instances": 2,
        "action": {"run": {"path": "/lattice-app"}}, "monitor": {"run": {"path": "nc", "args": ["-z", "127.0.0.1", "8080"]}},
        "ports": [8080], "start_timeout": 60,
        "routes": {"cf-router": [{"hostnames": ["web.lattice.localhost"], "port": 8080}]}
    });
    let r: DesiredLrpCreateRequest = serde_json::from_value(body).unwrap();
    let d = r.into_model();
    assert_eq!(d.domain, DEFAULT_DOMAIN);
    assert_eq!(d.start_timeout_ms, 60_000);
    crate::validation::validate_desired_lrp(&d).unwrap();
    let v = serde_json::to_value(DesiredLrpResponse::from(d)).unwrap();
    assert_eq!(
        v["routes"]["cf-router"][0]["hostnames"][0],
        "web.lattice.localhost"
    );
    assert_eq!(v["start_timeout"], 60);
    assert!(
        v["modification_tag"].get("epoch").is_some()
            && v["modification_tag"].get("index").is_some()
    );
    assert!(
        v.get("setup").is_none(),
        "absent setup is omitted as the receptor did"
    );
}

#[test]
fn actual_lrp_response_shape() {
    let mut l = crate::actual_lrp::new_unclaimed("web", 3, "d", 42);
    l.set_presence(actual_lrp::Presence::Evacuating);
    let v = serde_json::to_value(ActualLrpResponse::from(l)).unwrap();
    assert_eq!(v["state"], "UNCLAIMED");
    assert_eq!(v["index"], 3);
    assert_eq!(v["since"], 42);
    assert_eq!(v["evacuating"], true);
    for f in [
        "process_guid",
        "instance_guid",
        "cell_id",
        "domain",
        "address",
        "ports",
        "crash_count",
        "crash_reason",
        "placement_error",
        "modification_tag",
    ] {
        assert!(v.get(f).is_some(), "missing {f}");
    }
}

#[test]
fn update_request_distinguishes_absent_from_empty_routes() {
    let u: DesiredLrpUpdateRequest = serde_json::from_value(json!({"instances": 5})).unwrap();
    let m = u.into_model();
    assert_eq!((m.instances, m.has_routes), (Some(5), false));
    let u: DesiredLrpUpdateRequest = serde_json::from_value(json!({"routes": {}})).unwrap();
    assert!(u.into_model().has_routes);
}

#[test]
fn a_cell_shows_its_subnet_and_overlay_address() {
    let c = CellResponse::from(CellPresence {
        cell_id: "c1".into(),
        subnet: "10.255.3.0/24".into(),
        overlay_address: "192.168.0.3".into(),
        ..Default::default()
    });
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["subnet"], "10.255.3.0/24");
    assert_eq!(v["overlay_address"], "192.168.0.3");
}
