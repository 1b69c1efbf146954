//! Tests of `ltc create`'s flags, routes, durations and progress.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: CreateArgs,
}

fn args(v: &[&str]) -> CreateArgs {
    T::try_parse_from(std::iter::once("ltc").chain(v.iter().copied()))
        .unwrap()
        .a
}

fn target() -> Target {
    Target::parse("127.0.0.1:8888").unwrap()
}

#[test]
fn create_defaults_are_lattices() {
    let r = create_request(
        &args(&["hello", "preloaded:busybox", "--", "httpd", "-f"]),
        &target(),
    )
    .unwrap();
    assert_eq!(r.process_guid, "hello");
    assert_eq!(r.log_guid, "hello");
    assert_eq!(r.instances, 1);
    assert_eq!(r.ports, vec![8080]);
    assert_eq!(r.memory_mb, 128);
    assert_eq!(r.start_timeout, 120);
    assert_eq!(
        serde_json::to_value(&r.routes).unwrap(),
        serde_json::json!({"cf-router": [{"hostnames": ["hello.lattice.localhost"], "port": 8080}]})
    );
    assert!(
        r.monitor.is_none() && r.check_definition.is_none(),
        "the cell's default: the first port"
    );
    let Some(action::Action::Run(run)) = r.action.unwrap().action else {
        panic!()
    };
    assert_eq!(
        (run.path.as_str(), run.args.as_slice(), run.dir.as_str()),
        ("httpd", &["-f".to_string()][..], ""),
        "no directory: the image's"
    );
}

#[test]
fn create_flags_map_to_the_request() {
    std::env::set_var("LTC_TEST_PASSED", "yes");
    let r = create_request(
        &args(&[
            "web",
            "preloaded:busybox",
            "-i",
            "3",
            "-m",
            "64",
            "-c",
            "50",
            "-p",
            "9000,9001",
            "-R",
            "www",
            "-R",
            "api.example.com:9001",
            "-U",
            "9000:/health",
            "-e",
            "A=1",
            "-e",
            "LTC_TEST_PASSED",
            "-w",
            "/srv",
            "-u",
            "nobody",
            "--privileged",
            "--placement-tag",
            "ssd",
            "--volume",
            "data:/data:ro",
            "-t",
            "30s",
            "--",
            "sh",
            "-c",
            "x",
        ]),
        &target(),
    )
    .unwrap();
    assert_eq!(
        (r.instances, r.memory_mb, r.cpu_weight, r.start_timeout),
        (3, 64, 50, 30)
    );
    assert_eq!(
        serde_json::to_value(&r.routes).unwrap(),
        serde_json::json!({"cf-router": [
            {"hostnames": ["www.lattice.localhost"], "port": 9000},
            {"hostnames": ["api.example.com"], "port": 9001},
        ]})
    );
    let checks = r.check_definition.unwrap().checks;
    assert!(
        matches!(&checks[0].check, Some(check::Check::Http(h)) if h.port == 9000 && h.path == "/health")
    );
    assert_eq!(r.env[1].value, "yes");
    assert!(r.privileged);
    assert_eq!(r.placement_tags, vec!["ssd"]);
    assert!(r.volume_mounts[0].read_only);
    let Some(action::Action::Run(run)) = r.action.unwrap().action else {
        panic!()
    };
    assert_eq!((run.dir.as_str(), run.user.as_str()), ("/srv", "nobody"));

    let r = create_request(
        &args(&[
            "w",
            "preloaded:busybox",
            "--no-monitor",
            "--no-routes",
            "--",
            "x",
        ]),
        &target(),
    )
    .unwrap();
    assert!(r.routes.is_empty());
    assert_eq!(
        r.check_definition.unwrap().checks.len(),
        0,
        "no monitor: an empty definition"
    );
    let r = create_request(
        &args(&[
            "w",
            "preloaded:busybox",
            "--monitor-command",
            "test -f /ok",
            "--",
            "x",
        ]),
        &target(),
    )
    .unwrap();
    assert!(matches!(
        r.monitor.unwrap().action,
        Some(action::Action::Run(_))
    ));
}

#[test]
fn bad_create_input_says_what_to_do() {
    let t = target();
    let e = |v: &[&str]| create_request(&args(v), &t).unwrap_err().to_string();
    assert!(e(&["Hello", "preloaded:busybox", "--", "x"]).contains("lowercase"));
    assert!(e(&["a", "busybox", "--", "x"]).contains("preloaded:busybox"));
    assert!(e(&["a", "preloaded:busybox"]).contains("after `--`"));
    let r = create_request(&args(&["a", "docker://r.local:5000/app:1"]), &t).unwrap();
    let Some(action::Action::Run(run)) = r.action.unwrap().action else {
        panic!()
    };
    assert!(run.path.is_empty(), "an image brings its own command");
    let r = create_request(&args(&["a", "docker://r/app:1", "--", "-v", "x"]), &t).unwrap();
    let Some(action::Action::Run(run)) = r.action.unwrap().action else {
        panic!()
    };
    assert_eq!(
        (run.path.as_str(), run.args.as_slice()),
        ("", &["-v".to_string(), "x".to_string()][..]),
        "args go to the image's entrypoint, as with docker run"
    );
    assert!(e(&["a", "preloaded:busybox", "-R", "x:99999", "--", "x"]).contains("not a port"));
    assert!(e(&["a", "preloaded:busybox", "-U", "health", "--", "x"]).contains("PORT:/path"));
    assert!(e(&[
        "a",
        "preloaded:busybox",
        "-e",
        "LTC_SURELY_UNSET_VAR",
        "--",
        "x"
    ])
    .contains("=VALUE"));
    assert!(e(&["a", "preloaded:busybox", "--volume", "v", "--", "x"]).contains("NAME:/path"));
    assert!(T::try_parse_from(["ltc", "a", "i", "--no-monitor", "-M", "1"]).is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("3d").is_err());
}

fn actual(index: i32, state: &str) -> ActualLrpResponse {
    ActualLrpResponse {
        index,
        state: state.into(),
        ..Default::default()
    }
}

#[test]
fn progress_waits_finishes_and_fails_with_the_reason() {
    let mut a = vec![
        actual(0, "RUNNING"),
        actual(1, "CLAIMED"),
        actual(2, "UNCLAIMED"),
    ];
    assert_eq!(
        progress(&a, 3, &Baseline::new()),
        Progress::Waiting {
            running: 1,
            wanted: 3,
            summary: "1 CLAIMED, 1 UNCLAIMED".into()
        }
    );
    a[1].state = "RUNNING".into();
    a[2].state = "RUNNING".into();
    assert_eq!(progress(&a, 3, &Baseline::new()), Progress::Done);
    assert!(
        matches!(
            progress(&a, 2, &Baseline::new()),
            Progress::Waiting { running: 2, .. }
        ),
        "one still stopping"
    );
    a[2].state = "UNCLAIMED".into();
    a[2].placement_error = "insufficient resources: memory".into();
    assert_eq!(
        progress(&a, 3, &Baseline::new()),
        Progress::Failed("instance 2 cannot be placed: insufficient resources: memory".into())
    );
    a[2].placement_error.clear();
    a[2].state = "CRASHED".into();
    a[2].crash_count = 1;
    a[2].crash_reason = "exited with status 2".into();
    assert_eq!(
        progress(&a, 3, &Baseline::new()),
        Progress::Failed("instance 2 crashed: exited with status 2".into())
    );
    assert!(
        matches!(progress(&a, 3, &baseline(&a)), Progress::Waiting { .. }),
        "an older crash is not this wait's"
    );
}

#[test]
fn routes_parse_against_the_domain() {
    assert_eq!(
        parse_routes(
            &["Web".into(), "a.b.c:81".into()],
            "lattice.localhost",
            8080
        )
        .unwrap(),
        vec![("web.lattice.localhost".into(), 8080), ("a.b.c".into(), 81)]
    );
    assert!(parse_routes(&["bad host".into()], "d", 1).is_err());
}

#[test]
fn tcp_routes_add_their_container_ports() {
    let r = create_request(
        &args(&[
            "echo",
            "preloaded:busybox",
            "-p",
            "9000",
            "--no-routes",
            "--tcp-route",
            "5000:9000",
            "--tcp-route",
            "5001:9001",
            "--",
            "x",
        ]),
        &target(),
    )
    .unwrap();
    assert_eq!(r.ports, [9000, 9001], "9001 added; 9000 not twice");
    assert_eq!(
        serde_json::to_value(&r.routes).unwrap(),
        serde_json::json!({"tcp-router": [
            {"external_port": 5000, "container_port": 9000},
            {"external_port": 5001, "container_port": 9001},
        ]})
    );
    let bad = create_request(
        &args(&[
            "echo",
            "preloaded:busybox",
            "--tcp-route",
            "5000",
            "--",
            "x",
        ]),
        &target(),
    )
    .unwrap_err();
    assert!(
        bad.to_string()
            .starts_with("--tcp-route \"5000\": expected EXTERNAL:CONTAINER"),
        "{bad}"
    );
}
