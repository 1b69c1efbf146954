//! Property tests of the public API's request parsing and validation (issue 27): bodies
//! for `POST /v1/tasks`, `POST /v1/desired_lrps` and `PUT /v1/desired_lrps/GUID`, valid
//! requests broken in every way `bodies` knows, go through what the API does with them
//! (`receptor::parse_request`, `into_model`, validation). Whatever comes in:
//! - nothing panics (proptest fails a case that does);
//! - a refusal is typed: a body that does not parse is a `BodyError` whose message says
//!   so (and names the field when the body is an object), a definition that does not
//!   validate is `ValidationErrors`, each naming a field of the request with a message;
//! - what validation accepts is within the documented bounds (`validation::MAX_*`),
//!   checked here independently of the validation code;
//! - what is accepted reads back the same: the model written out as the API answers it
//!   (`TaskResponse`, `DesiredLrpResponse`) and parsed again, and as the store keeps it
//!   (protobuf), is the model that was accepted.
//!
//! Bounded: [`CASES`] cases a call (`PROPTEST_CASES=N` runs more).

mod bodies;

use bodies::{Body, LRP_FIELDS, TASK_FIELDS, UPDATE_FIELDS};
use lattice_specs::models::{action, Action, DesiredLrp, DesiredLrpUpdate, Task, TaskDefinition};
use lattice_specs::receptor::{
    parse_request, BodyError, DesiredLrpCreateRequest, DesiredLrpResponse, DesiredLrpUpdateRequest,
    TaskCreateRequest, TaskResponse,
};
use lattice_specs::rootfs::RootFs;
use lattice_specs::validation::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;
use serde_json::Value;

/// Cases per call. Each takes well under a millisecond, the large ones (300 KB
/// strings, 1,000-action lists) a few.
const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        // A failure prints its smallest body; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

type Check = Result<(), TestCaseError>;

/// A body that does not parse: said so, and where, when it is a JSON object.
fn check_body_error(body: &[u8], e: &BodyError, fields: &[&str]) -> Check {
    prop_assert!(
        e.message
            .starts_with("request body is not valid JSON for this call: "),
        "{e:?}"
    );
    prop_assert!(e.message.len() > "request body is not valid JSON for this call: ".len());
    if let Some(f) = &e.field {
        prop_assert!(!f.is_empty());
        prop_assert!(e.message.contains(&format!("invalid field {f}: ")), "{e:?}");
    }
    // Well-formed JSON, an object, of the wrong shape: the error says which field.
    if let Ok(Value::Object(_)) = serde_json::from_slice::<Value>(body) {
        let f = e.field.as_deref();
        prop_assert!(
            f.is_some_and(|f| fields.contains(&bodies::top_field(f))),
            "a refused object names one of its fields: {e:?}"
        );
    }
    Ok(())
}

/// A definition that does not validate: every error names a field of the request.
fn check_invalid(e: &ValidationErrors, fields: &[&str]) -> Check {
    prop_assert!(!e.0.is_empty());
    let text = e.to_string();
    for fe in &e.0 {
        prop_assert!(!fe.field.is_empty() && !fe.message.is_empty(), "{fe:?}");
        prop_assert!(
            fields.contains(&bodies::top_field(&fe.field)),
            "{:?} is not a field of the request",
            fe.field
        );
        prop_assert!(
            text.contains(&format!("invalid field {}: {}", fe.field, fe.message)),
            "{text}"
        );
    }
    Ok(())
}

// ----------------------------------------------- bounds, checked independently

/// What an action tree adds up to.
#[derive(Default)]
struct Tree {
    actions: usize,
    /// Levels below the root (the root is 0).
    depth: usize,
}

fn walk(a: &Action, depth: usize, t: &mut Tree, exec: &mut Vec<usize>) {
    t.actions += 1;
    t.depth = t.depth.max(depth);
    let one = |b: &Option<Box<Action>>, t: &mut Tree, exec: &mut Vec<usize>| {
        if let Some(b) = b {
            walk(b, depth + 1, t, exec)
        }
    };
    match &a.action {
        None => {}
        Some(action::Action::Run(r)) => {
            exec.push(r.path.len());
            exec.extend(r.args.iter().map(String::len));
            exec.extend(r.env.iter().map(|e| e.name.len() + 1 + e.value.len()));
            let nofile = r.resource_limits.as_ref().and_then(|l| l.nofile);
            assert!(nofile.is_none_or(|n| n <= MAX_NOFILE), "nofile {nofile:?}");
            assert!(r.env.len() <= MAX_ENV_VARS);
            assert!(r.env.iter().all(|e| !e.value.contains('\0')));
        }
        Some(
            action::Action::Download(_) | action::Action::Upload(_) | action::Action::Repository(_),
        ) => {}
        Some(action::Action::Timeout(x)) => {
            assert!(x.timeout > 0, "timeout {}", x.timeout);
            one(&x.action, t, exec)
        }
        Some(action::Action::EmitProgress(x)) => one(&x.action, t, exec),
        Some(action::Action::Try(x)) => one(&x.action, t, exec),
        Some(action::Action::Parallel(x)) => {
            x.actions.iter().for_each(|c| walk(c, depth + 1, t, exec))
        }
        Some(action::Action::Serial(x)) => {
            x.actions.iter().for_each(|c| walk(c, depth + 1, t, exec))
        }
        Some(action::Action::Codependent(x)) => {
            x.actions.iter().for_each(|c| walk(c, depth + 1, t, exec))
        }
    }
}

/// The parts a task and an LRP share.
struct Common<'a> {
    guid: &'a str,
    domain: &'a str,
    rootfs: &'a str,
    actions: Vec<&'a Action>,
    env: &'a [lattice_specs::models::EnvironmentVariable],
    memory_mb: i32,
    disk_mb: i32,
    max_pids: i32,
    cpu_weight: u32,
    names: [&'a str; 3],
    annotation: &'a str,
    placement_tags: &'a [String],
    volume_mounts: usize,
    egress_rules: usize,
}

fn check_common(c: Common) -> Check {
    prop_assert!(!c.guid.is_empty() && c.guid.len() <= MAX_GUID_LEN);
    prop_assert!(c
        .guid
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'));
    prop_assert!(!c.domain.trim().is_empty());
    prop_assert!(RootFs::parse(c.rootfs).is_ok(), "{:?}", c.rootfs);
    prop_assert!(
        !c.actions.is_empty(),
        "an accepted definition has an action"
    );
    let mut tree = Tree::default();
    let mut exec = Vec::new();
    for a in &c.actions {
        let mut t = Tree::default();
        walk(a, 0, &mut t, &mut exec);
        tree.actions += t.actions;
        tree.depth = tree.depth.max(t.depth);
    }
    prop_assert!(tree.depth <= MAX_ACTION_DEPTH, "depth {}", tree.depth);
    prop_assert!(tree.actions <= MAX_ACTIONS, "{} actions", tree.actions);
    prop_assert!(c.env.len() <= MAX_ENV_VARS);
    for e in c.env {
        prop_assert!(!e.name.is_empty() && !e.name.contains(['=', '\0']));
        prop_assert!(!e.value.contains('\0'));
    }
    exec.extend(c.env.iter().map(|e| e.name.len() + 1 + e.value.len()));
    // Each with its NUL below the kernel's MAX_ARG_STRLEN, all of them within a MiB.
    prop_assert!(exec.iter().all(|n| *n < MAX_EXEC_STRING_BYTES));
    prop_assert!(exec.iter().map(|n| n + 1).sum::<usize>() <= MAX_EXEC_BYTES);
    prop_assert!((0..=MAX_MEMORY_MB).contains(&c.memory_mb));
    prop_assert!((0..=MAX_DISK_MB).contains(&c.disk_mb));
    prop_assert!((0..=MAX_PIDS).contains(&c.max_pids));
    prop_assert!((1..=100).contains(&c.cpu_weight));
    prop_assert!(c.names.iter().all(|n| n.len() <= MAX_NAME_BYTES));
    prop_assert!(c.annotation.len() <= MAX_ANNOTATION_BYTES);
    prop_assert!(c.placement_tags.len() <= MAX_PLACEMENT_TAGS);
    prop_assert!(c
        .placement_tags
        .iter()
        .all(|t| !t.trim().is_empty() && t.len() <= MAX_TAG_BYTES));
    prop_assert!(c.volume_mounts <= MAX_VOLUME_MOUNTS);
    prop_assert!(c.egress_rules <= MAX_EGRESS_RULES);
    Ok(())
}

fn check_task_bounds(guid: &str, domain: &str, d: &TaskDefinition) -> Check {
    check_common(Common {
        guid,
        domain,
        rootfs: &d.rootfs,
        actions: d.action.iter().collect(),
        env: &d.env,
        memory_mb: d.memory_mb,
        disk_mb: d.disk_mb,
        max_pids: d.max_pids,
        cpu_weight: d.cpu_weight,
        names: [&d.log_guid, &d.log_source, &d.metrics_guid],
        annotation: &d.annotation,
        placement_tags: &d.placement_tags,
        volume_mounts: d.volume_mounts.len(),
        egress_rules: d.egress_rules.len(),
    })?;
    prop_assert!(d.result_file.is_empty() || d.result_file.starts_with('/'));
    prop_assert!(d.result_file.len() <= 4096);
    let url = &d.completion_callback_url;
    prop_assert!(url.is_empty() || url.starts_with("http://") || url.starts_with("https://"));
    Ok(())
}

fn routes_bytes(routes: &std::collections::HashMap<String, String>) -> usize {
    routes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn check_lrp_bounds(d: &DesiredLrp) -> Check {
    check_common(Common {
        guid: &d.process_guid,
        domain: &d.domain,
        rootfs: &d.rootfs,
        actions: [&d.setup, &d.action, &d.monitor]
            .into_iter()
            .flatten()
            .collect(),
        env: &d.env,
        memory_mb: d.memory_mb,
        disk_mb: d.disk_mb,
        max_pids: d.max_pids,
        cpu_weight: d.cpu_weight,
        names: [&d.log_guid, &d.log_source, &d.metrics_guid],
        annotation: &d.annotation,
        placement_tags: &d.placement_tags,
        volume_mounts: d.volume_mounts.len(),
        egress_rules: d.egress_rules.len(),
    })?;
    prop_assert!(d.action.is_some());
    prop_assert!(
        (0..=MAX_INSTANCES).contains(&d.instances),
        "{}",
        d.instances
    );
    prop_assert!(d.start_timeout_ms <= MAX_START_TIMEOUT_MS);
    prop_assert!(d.ports.len() <= MAX_PORTS);
    prop_assert!(d.ports.iter().all(|p| (1..=65535).contains(p)));
    prop_assert!(routes_bytes(&d.routes) <= MAX_ROUTES_BYTES);
    let checks = d.check_definition.as_ref().map_or(0, |c| c.checks.len());
    prop_assert!(checks <= MAX_CHECKS);
    Ok(())
}

fn check_update_bounds(u: &DesiredLrpUpdate) -> Check {
    if let Some(n) = u.instances {
        prop_assert!((0..=MAX_INSTANCES).contains(&n), "{n}");
    }
    prop_assert!(u
        .annotation
        .as_ref()
        .is_none_or(|a| a.len() <= MAX_ANNOTATION_BYTES));
    prop_assert!(routes_bytes(&u.routes) <= MAX_ROUTES_BYTES);
    Ok(())
}

// -------------------------------------------------------------- the calls

/// `POST /v1/tasks`.
fn task_case(body: &[u8]) -> Check {
    let req: TaskCreateRequest = match parse_request(body) {
        Ok(r) => r,
        Err(e) => return check_body_error(body, &e, TASK_FIELDS),
    };
    let (guid, domain, def) = req.clone().into_model();
    if let Err(e) = validate_task(&guid, &domain, &def) {
        return check_invalid(&e, TASK_FIELDS);
    }
    check_task_bounds(&guid, &domain, &def)?;
    // The request as accepted writes out and reads back as itself.
    let again: TaskCreateRequest = parse_request(&serde_json::to_vec(&req).unwrap()).unwrap();
    prop_assert_eq!(&again, &req);
    // Stored (protobuf) and answered (receptor JSON): the same task.
    let task = lattice_specs::task::new_task(guid.clone(), domain.clone(), def.clone(), 1);
    prop_assert_eq!(
        &Task::decode(task.encode_to_vec().as_slice()).unwrap(),
        &task
    );
    let answer = serde_json::to_vec(&TaskResponse::from(task)).unwrap();
    let read: TaskCreateRequest = parse_request(&answer).unwrap();
    let (g, dom, d) = read.into_model();
    prop_assert_eq!((&g, &dom, &d), (&guid, &domain, &def));
    validate_task(&g, &dom, &d).unwrap();
    Ok(())
}

/// `POST /v1/desired_lrps`.
fn lrp_case(body: &[u8]) -> Check {
    let req: DesiredLrpCreateRequest = match parse_request(body) {
        Ok(r) => r,
        Err(e) => return check_body_error(body, &e, LRP_FIELDS),
    };
    let d = req.clone().into_model();
    if let Err(e) = validate_desired_lrp(&d) {
        return check_invalid(&e, LRP_FIELDS);
    }
    check_lrp_bounds(&d)?;
    // The request as accepted writes out and reads back as itself.
    let again: DesiredLrpCreateRequest = parse_request(&serde_json::to_vec(&req).unwrap()).unwrap();
    prop_assert_eq!(&again, &req);
    prop_assert_eq!(
        &DesiredLrp::decode(d.encode_to_vec().as_slice()).unwrap(),
        &d
    );
    let answer = serde_json::to_vec(&DesiredLrpResponse::from(d.clone())).unwrap();
    let read: DesiredLrpCreateRequest = parse_request(&answer).unwrap();
    let back = read.into_model();
    prop_assert_eq!(&back, &d);
    validate_desired_lrp(&back).unwrap();
    Ok(())
}

/// `PUT /v1/desired_lrps/GUID`.
fn update_case(body: &[u8]) -> Check {
    let req: DesiredLrpUpdateRequest = match parse_request(body) {
        Ok(r) => r,
        Err(e) => return check_body_error(body, &e, UPDATE_FIELDS),
    };
    let u = req.clone().into_model();
    if let Err(e) = validate_desired_lrp_update(&u) {
        return check_invalid(&e, UPDATE_FIELDS);
    }
    check_update_bounds(&u)?;
    // The request as accepted writes out and reads back as itself.
    let again: DesiredLrpUpdateRequest = parse_request(&serde_json::to_vec(&req).unwrap()).unwrap();
    prop_assert_eq!(&again, &req);
    // What the BBS does with an accepted update: an LRP with it applied stays valid
    // as far as the update goes.
    let mut d = DesiredLrp {
        process_guid: "web".into(),
        domain: "apps".into(),
        rootfs: "preloaded:busybox".into(),
        instances: 1,
        action: Some(Action {
            action: Some(action::Action::Run(lattice_specs::models::RunAction {
                path: "/bin/true".into(),
                ..Default::default()
            })),
        }),
        cpu_weight: 100,
        ..Default::default()
    };
    if let Some(n) = u.instances {
        d.instances = n;
    }
    if u.has_routes {
        d.routes = u.routes.clone();
    }
    if let Some(a) = &u.annotation {
        d.annotation = a.clone();
    }
    validate_desired_lrp(&d).unwrap();
    check_lrp_bounds(&d)?;
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn task_bodies(body in bodies::bodies(bodies::task(), TASK_FIELDS)) {
        task_case(&body.0)?;
    }

    #[test]
    fn desired_lrp_bodies(body in bodies::bodies(bodies::lrp(), LRP_FIELDS)) {
        lrp_case(&body.0)?;
    }

    #[test]
    fn desired_lrp_update_bodies(body in bodies::bodies(bodies::update(), UPDATE_FIELDS)) {
        update_case(&body.0)?;
    }
}

/// The generators reach both sides: some bodies are accepted, some refused by parsing,
/// some by validation (a generator that only made garbage would test nothing).
#[test]
fn the_generators_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = [0usize; 3];
    let strategy = bodies::bodies(bodies::lrp(), LRP_FIELDS);
    for _ in 0..400 {
        let Body(body) = strategy.new_tree(&mut runner).unwrap().current();
        let outcome = match parse_request::<DesiredLrpCreateRequest>(&body) {
            Err(_) => 0,
            Ok(r) => match validate_desired_lrp(&r.into_model()) {
                Err(_) => 1,
                Ok(()) => 2,
            },
        };
        seen[outcome] += 1;
    }
    eprintln!("parse errors, validation errors, accepted: {seen:?}");
    assert!(
        seen.iter().all(|n| *n >= 20),
        "parse errors, validation errors, accepted: {seen:?}"
    );
}

/// A few bodies spelled out: what the generators aim at, as a reader would write them.
#[test]
fn named_cases() {
    let lrp = |extra: &str| {
        format!(
            r#"{{"process_guid":"web","rootfs":"preloaded:busybox","action":{{"run":{{"path":"/bin/true"}}}}{extra}}}"#
        )
    };
    for (body, field) in [
        (lrp(r#","instances":"3""#), "instances"),
        (lrp(r#","instances":1e3"#), "instances"),
        (lrp(r#","instances":4294967296"#), "instances"),
        (lrp(r#","ports":[-1]"#), "ports[0]"),
        (lrp(r#","env":[{"name":1}]"#), "env[0].name"),
        (
            r#"{"process_guid":"web","action":{"serial":{"actions":[{"run":{"args":[null]}}]}}}"#
                .to_string(),
            "action.serial.actions[0].run.args[0]",
        ),
        (r#"{"action":{"bogus":{}}}"#.to_string(), "action"),
    ] {
        let e = parse_request::<DesiredLrpCreateRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{body}: {e}");
        assert!(
            e.message.contains(&format!("invalid field {field}: ")),
            "{e}"
        );
    }
    for body in ["", "  \n", "null"] {
        let r = parse_request::<DesiredLrpCreateRequest>(body.as_bytes()).unwrap();
        assert_eq!(r, DesiredLrpCreateRequest::default());
    }
    for body in ["{", "[1]", "3", "{} x", "\u{0}"] {
        let e = parse_request::<DesiredLrpCreateRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(e.field, None, "{body}: {e}");
    }
    let e = validate_desired_lrp(
        &parse_request::<DesiredLrpCreateRequest>(lrp(r#","instances":10001"#).as_bytes())
            .unwrap()
            .into_model(),
    )
    .unwrap_err();
    assert_eq!(e.fields(), vec!["instances"]);
}
