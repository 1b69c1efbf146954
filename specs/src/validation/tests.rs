use super::*;
use crate::models::{EnvironmentVariable, RunAction, TimeoutAction};
use crate::testing::{self, run};

fn run_action(path: &str) -> RunAction {
    RunAction {
        path: path.into(),
        ..Default::default()
    }
}

fn as_action(r: RunAction) -> Action {
    Action {
        action: Some(action::Action::Run(r)),
    }
}

fn env(name: &str, value: &str) -> EnvironmentVariable {
    EnvironmentVariable {
        name: name.into(),
        value: value.into(),
    }
}

fn mount(path: &str) -> VolumeMount {
    VolumeMount {
        volume: "v".into(),
        container_path: path.into(),
        ..Default::default()
    }
}

fn lrp() -> DesiredLrp {
    DesiredLrp {
        domain: "lattice".into(),
        cpu_weight: 100,
        ports: vec![],
        ..testing::desired_lrp("web-1", 2)
    }
}

fn fields_of(d: &DesiredLrp) -> Vec<String> {
    validate_desired_lrp(d)
        .unwrap_err()
        .fields()
        .into_iter()
        .map(String::from)
        .collect()
}

#[test]
fn a_good_lrp_passes() {
    validate_desired_lrp(&lrp()).unwrap();
}

#[test]
fn an_image_may_supply_the_command() {
    let mut d = lrp();
    d.action = Some(run(""));
    d.rootfs = "docker://registry.local:5000/app:1".into();
    validate_desired_lrp(&d).unwrap();
    d.rootfs = "oci:/images/app:v1".into();
    validate_desired_lrp(&d).unwrap();
    d.rootfs = "preloaded:busybox".into();
    let e = validate_desired_lrp(&d).unwrap_err();
    assert!(e.fields().contains(&"action.run.path"), "{e}");
}

#[test]
fn each_bad_field_is_named() {
    type Mutation = fn(&mut DesiredLrp);
    let cases: Vec<(Mutation, &str)> = vec![
        (|d| d.process_guid = "bad guid!".into(), "process_guid"),
        (|d| d.process_guid.clear(), "process_guid"),
        (|d| d.process_guid = "x".repeat(256), "process_guid"),
        (|d| d.domain.clear(), "domain"),
        (|d| d.rootfs = "nope".into(), "rootfs"),
        (|d| d.instances = -1, "instances"),
        (|d| d.action = None, "action"),
        (|d| d.action = Some(Action::default()), "action"),
        (|d| d.action = Some(run("")), "action.run.path"),
        (|d| d.setup = Some(run("")), "setup.run.path"),
        (|d| d.cpu_weight = 0, "cpu_weight"),
        (|d| d.cpu_weight = 101, "cpu_weight"),
        (|d| d.memory_mb = -5, "memory_mb"),
        (|d| d.disk_mb = -5, "disk_mb"),
        (|d| d.max_pids = -1, "max_pids"),
        (|d| d.annotation = "a".repeat(10 * 1024 + 1), "annotation"),
        (
            |d| {
                d.routes
                    .insert("cf-router".into(), "x".repeat(128 * 1024 + 1));
            },
            "routes",
        ),
        (
            |d| {
                d.routes.insert("cf-router".into(), "{not json".into());
            },
            "routes.cf-router",
        ),
        (|d| d.ports = vec![0], "ports[0]"),
        (|d| d.ports = vec![70000], "ports[0]"),
        (
            |d| {
                d.env = vec![EnvironmentVariable {
                    name: "".into(),
                    value: "v".into(),
                }]
            },
            "env[0].name",
        ),
        (|d| d.placement_tags = vec!["".into()], "placement_tags[0]"),
        (|d| d.instances = MAX_INSTANCES + 1, "instances"),
        (|d| d.instances = 1_000_000_000, "instances"),
        (
            |d| d.start_timeout_ms = MAX_START_TIMEOUT_MS + 1000,
            "start_timeout",
        ),
        (|d| d.start_timeout_ms = u64::MAX, "start_timeout"),
        (
            |d| d.process_guid = "x".repeat(MAX_GUID_LEN + 1),
            "process_guid",
        ),
        (|d| d.memory_mb = MAX_MEMORY_MB + 1, "memory_mb"),
        (|d| d.disk_mb = MAX_DISK_MB + 1, "disk_mb"),
        (|d| d.max_pids = MAX_PIDS + 1, "max_pids"),
        (|d| d.ports = (1..=MAX_PORTS as u32 + 1).collect(), "ports"),
        (|d| d.log_guid = "l".repeat(256), "log_guid"),
        (
            |d| d.placement_tags = vec!["t".into(); MAX_PLACEMENT_TAGS + 1],
            "placement_tags",
        ),
        (
            |d| d.placement_tags = vec!["t".repeat(256)],
            "placement_tags[0]",
        ),
        (
            |d| d.env = vec![env("BIG", &"v".repeat(1 << 20))],
            "env[0].value",
        ),
        (|d| d.env = vec![env("A", "x\0y")], "env[0].value"),
        (|d| d.env = vec![env("A", "1"); MAX_ENV_VARS + 1], "env"),
        (|d| d.env = vec![env("A", &"v".repeat(100_000)); 11], "env"),
        (
            |d| {
                let mut r = run_action("/bin/x");
                r.args = vec!["a".repeat(MAX_EXEC_STRING_BYTES)];
                d.action = Some(as_action(r));
            },
            "action.run.args[0]",
        ),
        (
            |d| {
                let mut r = run_action("/bin/x");
                r.resource_limits = Some(crate::models::ResourceLimits {
                    nofile: Some(MAX_NOFILE + 1),
                });
                d.setup = Some(as_action(r));
            },
            "setup.run.resource_limits.nofile",
        ),
        (
            |d| {
                d.action = Some(Action {
                    action: Some(action::Action::Parallel(crate::models::ParallelAction {
                        actions: vec![run("/bin/true"); MAX_ACTIONS + 1],
                        log_source: String::new(),
                    })),
                })
            },
            "action.parallel.actions[1023]",
        ),
        (
            |d| d.volume_mounts = vec![mount("/.lattice")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/.lattice/pause")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("//.lattice/")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/./.lattice")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/a/../.lattice")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/proc")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/dev/shm")],
            "volume_mounts[0].container_path",
        ),
        (
            |d| d.volume_mounts = vec![mount("/data"), mount("/data/")],
            "volume_mounts[1].container_path",
        ),
        (
            |d| {
                d.volume_mounts = (0..=MAX_VOLUME_MOUNTS)
                    .map(|i| mount(&format!("/v{i}")))
                    .collect()
            },
            "volume_mounts",
        ),
        (
            |d| {
                d.volume_mounts = vec![VolumeMount {
                    volume: "v".into(),
                    container_path: "data".into(),
                    ..Default::default()
                }]
            },
            "volume_mounts[0].container_path",
        ),
    ];
    for (mutate, field) in cases {
        let mut d = lrp();
        mutate(&mut d);
        let fields = fields_of(&d);
        assert!(
            fields.iter().any(|f| f == field),
            "expected {field}, got {fields:?}"
        );
        let msg = validate_desired_lrp(&d).unwrap_err().to_string();
        assert!(msg.contains(&format!("invalid field {field}")), "{msg}");
    }
}

#[test]
fn counts_and_sizes_at_their_limits_pass() {
    let mut d = lrp();
    d.instances = MAX_INSTANCES;
    d.start_timeout_ms = MAX_START_TIMEOUT_MS;
    d.process_guid = "p".repeat(MAX_GUID_LEN);
    d.memory_mb = MAX_MEMORY_MB;
    d.disk_mb = MAX_DISK_MB;
    d.max_pids = MAX_PIDS;
    d.ports = (1..=MAX_PORTS as u32).collect();
    // NAME=VALUE and its NUL: exactly the kernel's limit.
    d.env = vec![env("A", &"v".repeat(MAX_EXEC_STRING_BYTES - 3))];
    d.volume_mounts = vec![mount("/data"), mount("/.latticex"), mount("/srv/proc")];
    validate_desired_lrp(&d).unwrap();
    // The longest guid that runs: the cell's namespace `lattice-GUID` is a file name.
    assert!("lattice-".len() + MAX_GUID_LEN <= 255);
    let def = testing::task_definition("/bin/true");
    validate_task(&"t".repeat(MAX_GUID_LEN), "d", &def).unwrap();
    let e = validate_task(&"t".repeat(MAX_GUID_LEN + 1), "d", &def).unwrap_err();
    assert!(e.to_string().contains("at most 200 characters"), "{e}");
    let mut big = def.clone();
    big.env = vec![env("BIG", &"v".repeat(1 << 20))];
    let e = validate_task("t", "d", &big).unwrap_err().to_string();
    assert!(e.contains("invalid field env[0].value"), "{e}");
    assert!(e.contains("kernel refuses"), "{e}");
    let mut vol = def;
    vol.volume_mounts = vec![mount("/.lattice")];
    let e = validate_task("t", "d", &vol).unwrap_err().to_string();
    assert!(e.contains("reserved"), "{e}");
}

#[test]
fn reserved_paths_are_found_however_written() {
    for (p, r) in [
        ("/", Some("/")),
        ("//", Some("/")),
        ("/.lattice", Some("/.lattice")),
        ("/.lattice/pause", Some("/.lattice")),
        ("/./.lattice//x/", Some("/.lattice")),
        ("/proc/sys", Some("/proc")),
        ("/sys", Some("/sys")),
        ("/dev", Some("/dev")),
        ("/data", None),
        ("/.lattice2", None),
        ("/devices", None),
    ] {
        assert_eq!(reserved_container_path(p), r, "{p}");
    }
}

#[test]
fn an_update_is_bounded_too() {
    let e = validate_desired_lrp_update(&DesiredLrpUpdate {
        instances: Some(1_000_000_000),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.fields(), vec!["instances"]);
    assert!(e.to_string().contains("at most 10000"), "{e}");
}

#[test]
fn annotation_and_routes_at_the_limit_pass() {
    let mut d = lrp();
    d.annotation = "a".repeat(10 * 1024);
    d.routes
        .insert("r".into(), format!("\"{}\"", "x".repeat(128 * 1024 - 3)));
    validate_desired_lrp(&d).unwrap();
}

#[test]
fn nested_actions_are_checked_with_their_path() {
    let mut d = lrp();
    d.action = Some(Action {
        action: Some(action::Action::Timeout(Box::new(TimeoutAction {
            action: Some(Box::new(run(""))),
            timeout: 0,
            log_source: String::new(),
        }))),
    });
    let f = fields_of(&d);
    assert!(
        f.contains(&"action.timeout.action.run.path".to_string()),
        "{f:?}"
    );
    assert!(f.contains(&"action.timeout.timeout".to_string()), "{f:?}");
    // serial with no actions
    d.action = Some(Action {
        action: Some(action::Action::Serial(Default::default())),
    });
    assert!(fields_of(&d).contains(&"action.serial.actions".to_string()));
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut a = run("/bin/true");
    for _ in 0..100 {
        a = Action {
            action: Some(action::Action::Try(Box::new(crate::models::TryAction {
                action: Some(Box::new(a)),
                log_source: String::new(),
            }))),
        };
    }
    let mut d = lrp();
    d.action = Some(a);
    let msg = validate_desired_lrp(&d).unwrap_err().to_string();
    assert!(msg.contains("nest deeper"), "{msg}");
}

#[test]
fn tasks_cells_domains_updates() {
    let def = testing::task_definition("/bin/true");
    validate_task("t-1", "d", &def).unwrap();
    let e = validate_task(
        "t 1",
        "",
        &TaskDefinition {
            result_file: "rel".into(),
            completion_callback_url: "ftp://x".into(),
            ..def.clone()
        },
    )
    .unwrap_err();
    for f in [
        "task_guid",
        "domain",
        "result_file",
        "completion_callback_url",
    ] {
        assert!(e.fields().contains(&f), "{f} in {e}");
    }
    let e = validate_task(
        "t",
        "d",
        &TaskDefinition {
            action: None,
            ..def
        },
    )
    .unwrap_err();
    assert_eq!(e.fields(), vec!["action"]);

    let e = validate_cell(&CellPresence {
        cell_id: "c/1".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.fields(), vec!["cell_id", "rep_address", "capacity"]);

    assert!(validate_domain(&Domain {
        name: "".into(),
        ttl_seconds: -1
    })
    .is_err());
    validate_domain(&Domain {
        name: "cf-apps".into(),
        ttl_seconds: 0,
    })
    .unwrap();

    let e = validate_desired_lrp_update(&DesiredLrpUpdate {
        instances: Some(-1),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.fields(), vec!["instances"]);
}

#[test]
fn tcp_routes_are_checked_on_desire_and_update() {
    let mut d = lrp();
    d.routes.insert(
        crate::routes::TCP_ROUTER_KEY.into(),
        r#"[{"external_port": 5432, "container_port": 5432}]"#.into(),
    );
    validate_desired_lrp(&d).unwrap();
    d.routes.insert(
        crate::routes::TCP_ROUTER_KEY.into(),
        r#"[{"external_port": 0, "container_port": 5432}]"#.into(),
    );
    assert_eq!(fields_of(&d), ["routes.tcp-router[0].external_port"]);
    let u = DesiredLrpUpdate {
        has_routes: true,
        routes: d.routes.clone(),
        ..Default::default()
    };
    let e = validate_desired_lrp_update(&u).unwrap_err();
    assert!(
        e.to_string().contains("must be a port 1..65535 (got 0)"),
        "{e}"
    );
}
