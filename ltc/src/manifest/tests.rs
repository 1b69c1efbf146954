//! Tests of reading, checking, planning and running manifests (the cluster faked).

use clap::Parser;
use lattice_specs::receptor::rollout::DeploymentJson;
use lattice_specs::receptor::{DesiredLrpResponse, TaskResponse, VolumeResponse};

use super::model::{self, AppSpec, Format, Manifest, Monitor};
use super::plan::{self, AppUpdate, Change, Cluster, Ledger, Plan, Prune, Ready};
use super::run::{self, Effects};
use super::{build, check, schedule};
use crate::target::Target;

mod schedules;

const SYSTEM_YAML: &str = r#"
name: shop
volumes:
  pgdata:
    size: 1G
backup_schedules:
  pgdata:
    every: daily
    keep: 3
apps:
  db:
    image: preloaded:busybox
    command: [sh, -c, "exec nc -lk -p 5432 -e cat"]
    ports: [5432]
    no_routes: true
    tcp_routes: ["15432:5432"]
    volumes: ["pgdata:/data"]
  api:
    image: preloaded:busybox
    command: [sh, -c, "exec httpd -f -p 8080"]
    instances: 2
    env:
      DB: db.apps.internal:5432
      GREETING: hi
    monitor:
      url: "8080:/"
    depends_on: [db]
    update:
      max_surge: 2
  web:
    image: preloaded:busybox
    command: [sh, -c, "exec httpd -f -p 8080"]
    http_routes: [shop]
    depends_on: [api]
tasks:
  migrate:
    image: preloaded:busybox
    command: [sh, -c, "echo migrated > /tmp/r"]
    result_file: /tmp/r
    depends_on: [db]
"#;

const SYSTEM_TOML: &str = r#"
name = "shop"

[volumes.pgdata]
size = "1G"

[backup_schedules.pgdata]
every = "daily"
keep = 3

[apps.db]
image = "preloaded:busybox"
command = ["sh", "-c", "exec nc -lk -p 5432 -e cat"]
ports = [5432]
no_routes = true
tcp_routes = ["15432:5432"]
volumes = ["pgdata:/data"]

[apps.api]
image = "preloaded:busybox"
command = ["sh", "-c", "exec httpd -f -p 8080"]
instances = 2
env = { DB = "db.apps.internal:5432", GREETING = "hi" }
monitor = { url = "8080:/" }
depends_on = ["db"]
update = { max_surge = 2 }

[apps.web]
image = "preloaded:busybox"
command = ["sh", "-c", "exec httpd -f -p 8080"]
http_routes = ["shop"]
depends_on = ["api"]

[tasks.migrate]
image = "preloaded:busybox"
command = ["sh", "-c", "echo migrated > /tmp/r"]
result_file = "/tmp/r"
depends_on = ["db"]
"#;

fn target() -> Target {
    Target::parse("127.0.0.1:8888").unwrap()
}

fn system() -> Manifest {
    model::parse(SYSTEM_YAML, Format::Yaml).unwrap()
}

/// The cluster as it is once `m` was applied.
fn applied(m: &Manifest) -> Cluster {
    let c = check::check(m, &Cluster::default(), &target()).unwrap();
    Cluster {
        apps: c
            .apps
            .iter()
            .map(|(n, r)| {
                let d = DesiredLrpResponse {
                    request: r.clone(),
                    generation: 1,
                    ..Default::default()
                };
                (n.clone(), d)
            })
            .collect(),
        tasks: c
            .tasks
            .iter()
            .map(|(n, t)| {
                let r = TaskResponse {
                    request: t.clone(),
                    state: "COMPLETED".into(),
                    ..Default::default()
                };
                (n.clone(), r)
            })
            .collect(),
        volumes: c
            .volumes
            .iter()
            .map(|(n, s)| {
                let v = VolumeResponse {
                    name: n.clone(),
                    size_bytes: *s,
                    state: "READY".into(),
                    ..Default::default()
                };
                (n.clone(), v)
            })
            .collect(),
        schedules: m
            .backup_schedules
            .iter()
            .map(|(v, s)| (v.clone(), schedule::desired(v, s, None).unwrap()))
            .collect(),
        ledger: Ledger {
            apps: m.apps.keys().cloned().collect(),
            tasks: m.tasks.keys().cloned().collect(),
            volumes: m.volumes.keys().cloned().collect(),
            backup_schedules: m.backup_schedules.keys().cloned().collect(),
        },
    }
}

fn plan_of(m: &Manifest, cluster: &Cluster, prune: Prune) -> Result<Plan, Vec<String>> {
    let c = check::check(m, cluster, &target())?;
    plan::plan(m, &c, cluster, &target(), prune)
}

fn names(plan: &Plan) -> Vec<Vec<String>> {
    plan.waves
        .iter()
        .map(|w| w.iter().map(|n| n.name.clone()).collect())
        .collect()
}

// ---------------------------------------------------------------- reading

#[test]
fn yaml_and_toml_say_the_same_system() {
    let yaml = system();
    let toml = model::parse(SYSTEM_TOML, Format::Toml).unwrap();
    assert_eq!(yaml, toml);
    let api = &yaml.apps["api"];
    assert_eq!(api.instances, 2);
    assert_eq!(api.memory_mb, 128, "defaults are ltc create's");
    assert_eq!(api.monitor, Some(Monitor::Url("8080:/".into())));
    assert_eq!((api.update.max_surge, api.update.max_unavailable), (2, 0));
    assert_eq!(yaml.backup_schedules["pgdata"].keep, 3);
    assert_eq!(yaml.tasks["migrate"].depends_on, vec!["db".to_string()]);
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let yaml = "apps:\n  web:\n    image: preloaded:busybox\n    instnaces: 2\n";
    let e = model::parse(yaml, Format::Yaml).unwrap_err();
    assert!(e.contains("instnaces") && e.contains("line 4"), "{e}");
    let toml = "[apps.web]\nimage = \"preloaded:busybox\"\ninstnaces = 2\n";
    let e = model::parse(toml, Format::Toml).unwrap_err();
    assert!(e.contains("instnaces") && e.contains("line 3"), "{e}");
    // Also at the top and inside nested tables.
    let e = model::parse("name: x\napp:\n  web: {}\n", Format::Yaml).unwrap_err();
    assert!(e.contains("app") && e.contains("line 2"), "{e}");
    let e = model::parse(
        "apps:\n  web:\n    update:\n      max_surge: 1\n      canary: 2\n",
        Format::Yaml,
    )
    .unwrap_err();
    assert!(e.contains("canary") && e.contains("line 5"), "{e}");
}

#[test]
fn the_format_comes_from_the_extension() {
    use std::path::Path;
    assert_eq!(Format::of(Path::new("a/shop.yaml")).unwrap(), Format::Yaml);
    assert_eq!(Format::of(Path::new("shop.yml")).unwrap(), Format::Yaml);
    assert_eq!(Format::of(Path::new("shop.toml")).unwrap(), Format::Toml);
    let e = Format::of(Path::new("shop.json")).unwrap_err().to_string();
    assert!(e.contains("NAME.yaml, NAME.yml or NAME.toml"), "{e}");
}

#[test]
fn written_manifests_read_back_the_same_without_defaults() {
    let m = system();
    for format in [Format::Yaml, Format::Toml] {
        let text = model::write(&m, format).unwrap();
        assert_eq!(model::parse(&text, format).unwrap(), m, "{text}");
        assert!(!text.contains("memory_mb"), "defaults left out: {text}");
    }
}

// ---------------------------------------------------------------- building

#[derive(Parser)]
struct CreateCli {
    #[command(flatten)]
    a: crate::app::CreateArgs,
}

#[test]
fn an_app_is_built_as_ltc_create_builds_it() {
    let m = system();
    let built = build::app_request("api", &m.apps["api"], &target()).unwrap();
    let args = CreateCli::try_parse_from([
        "ltc",
        "api",
        "preloaded:busybox",
        "-i",
        "2",
        "-e",
        "DB=db.apps.internal:5432",
        "-e",
        "GREETING=hi",
        "--monitor-url",
        "8080:/",
        "--",
        "sh",
        "-c",
        "exec httpd -f -p 8080",
    ])
    .unwrap()
    .a;
    assert_eq!(built, crate::app::create_request(&args, &target()).unwrap());
}

#[test]
fn tcp_routes_are_routes_and_ports() {
    let m = system();
    let db = build::app_request("db", &m.apps["db"], &target()).unwrap();
    assert_eq!(db.ports, vec![5432]);
    assert_eq!(
        serde_json::to_value(&db.routes).unwrap(),
        serde_json::json!({"tcp-router": [{"external_port": 15432, "container_port": 5432}]})
    );
    let mut spec = m.apps["db"].clone();
    spec.tcp_routes = vec!["15432:6000".into()];
    let r = build::app_request("db", &spec, &target()).unwrap();
    assert_eq!(r.ports, vec![5432, 6000]);
    for bad in ["15432", "0:5432", "x:1", "1:2:3"] {
        spec.tcp_routes = vec![bad.into()];
        let e = build::app_request("db", &spec, &target()).unwrap_err();
        assert!(e.to_string().contains("EXTERNAL:CONTAINER"), "{bad}: {e}");
    }
    spec.tcp_routes = vec!["1000:1".into(), "1000:2".into()];
    let e = build::app_request("db", &spec, &target()).unwrap_err();
    assert!(e.to_string().contains("1000 is named twice"), "{e}");
}

#[test]
fn an_app_reads_back_from_its_definition() {
    let mut m = system();
    let mut more = AppSpec {
        image: "oci:/images/app:1".into(),
        command: vec!["--port".into(), "9000".into()],
        ports: vec![9000, 9001],
        http_routes: vec!["www.example.com:9001".into(), "api:9000".into()],
        tcp_routes: vec!["2222:22".into()],
        monitor: Some(Monitor::Command("test -f /ok".into())),
        working_dir: Some("/srv".into()),
        user: Some("nobody".into()),
        privileged: true,
        placement_tags: vec!["ssd".into()],
        timeout: "90s".into(),
        ..Default::default()
    };
    m.apps.insert("more".into(), more.clone());
    more.monitor = Some(Monitor::None);
    m.apps.insert("quiet".into(), more.clone());
    more.monitor = Some(Monitor::Port(9001));
    m.apps.insert("port".into(), more);
    for (name, spec) in &m.apps {
        let r = build::app_request(name, spec, &target()).unwrap();
        let back = build::app_spec(name, &r, &target());
        let again = build::app_request(name, &back, &target()).unwrap();
        assert_eq!(
            plan::unsaid(again.clone(), &r),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(again, r, "{name}: {back:#?}");
    }
}

#[test]
fn what_a_manifest_cannot_say_is_named() {
    let m = system();
    let mut r = build::app_request("web", &m.apps["web"], &target()).unwrap();
    r.log_source = "CUSTOM".into();
    r.annotation = "kept".into();
    let back = build::app_spec("web", &r, &target());
    let again = build::app_request("web", &back, &target()).unwrap();
    assert_eq!(plan::unsaid(again, &r), vec!["log_source".to_string()]);
}

#[test]
fn sizes_are_written_exactly() {
    assert_eq!(build::exact_size(1 << 30), "1G");
    assert_eq!(build::exact_size(1536 << 20), "1536M");
    assert_eq!(build::exact_size(1000), "1000");
}

// ---------------------------------------------------------------- checking

#[test]
fn depends_on_orders_start_up_in_waves() {
    let m = system();
    let c = check::check(&m, &Cluster::default(), &target()).unwrap();
    assert_eq!(
        c.waves,
        vec![
            vec!["db".to_string()],
            vec!["api".into(), "migrate".into()],
            vec!["web".into()]
        ]
    );
    // An app of the cluster's own comes first.
    let mut m = system();
    m.apps.get_mut("db").unwrap().depends_on = vec!["legacy".into()];
    let mut cluster = Cluster::default();
    cluster
        .apps
        .insert("legacy".into(), DesiredLrpResponse::default());
    let c = check::check(&m, &cluster, &target()).unwrap();
    assert_eq!(c.waves[0], vec!["legacy".to_string()]);
    assert_eq!(c.waves[1], vec!["db".to_string()]);
}

#[test]
fn every_problem_is_found_before_anything_changes() {
    let mut m = system();
    m.apps.get_mut("db").unwrap().depends_on = vec!["web".into()];
    m.apps
        .get_mut("api")
        .unwrap()
        .depends_on
        .push("cache".into());
    m.apps.get_mut("web").unwrap().volumes = vec!["media:/m".into()];
    m.apps.get_mut("web").unwrap().memory_mb = 64;
    m.apps.get_mut("web").unwrap().cpu_weight = 0;
    m.backup_schedules.get_mut("pgdata").unwrap().every = "sometimes".into();
    m.backup_schedules.insert(
        "logs".into(),
        model::ScheduleSpec {
            every: "daily".into(),
            keep: 1,
            ..Default::default()
        },
    );
    let pg = m.backup_schedules.get_mut("pgdata").unwrap();
    pg.smaller_than = Some(2.0);
    pg.hooks = Some(model::HooksSpec {
        pre: "true".into(),
        timeout: "soon".into(),
        ..Default::default()
    });
    m.volumes.get_mut("pgdata").unwrap().size = "lots".into();
    let errors = check::check(&m, &Cluster::default(), &target()).unwrap_err();
    let all = errors.join("\n");
    for expected in [
        "depends_on has a cycle: api → db → web → api",
        "app api: depends_on names cache, which neither the file nor the cluster has",
        "app web: mounts volume media, which neither the file nor the cluster has",
        "app web: --cpu-weight must be 1..100",
        "backup_schedules.pgdata.every: \"sometimes\"",
        "backup_schedules.logs: no volume logs in the file or the cluster",
        "backup_schedules.pgdata.hooks.timeout: \"soon\": ",
        "backup_schedules.pgdata.smaller_than: ",
        "volume pgdata: size \"lots\": unknown unit 's'",
    ] {
        assert!(all.contains(expected), "{expected:?} in:\n{all}");
    }
    assert_eq!(errors.len(), 9, "{all}");
}

#[test]
fn references_to_the_clusters_own_apps_and_volumes_are_fine() {
    let mut m = system();
    m.apps
        .get_mut("api")
        .unwrap()
        .depends_on
        .push("cache".into());
    m.apps.get_mut("web").unwrap().volumes = vec!["media:/m:ro".into()];
    let mut cluster = Cluster::default();
    cluster
        .apps
        .insert("cache".into(), DesiredLrpResponse::default());
    cluster
        .volumes
        .insert("media".into(), VolumeResponse::default());
    assert!(check::check(&m, &cluster, &target()).is_ok());
}

#[test]
fn volumes_never_shrink_and_names_are_checked() {
    let m = system();
    let mut cluster = applied(&m);
    cluster.volumes.get_mut("pgdata").unwrap().size_bytes = 2 << 30;
    let e = check::check(&m, &cluster, &target()).unwrap_err();
    assert_eq!(
        e,
        vec!["volume pgdata: size 1G is smaller than its 2G: volumes only grow".to_string()]
    );
    let mut m = system();
    m.name = "Shop!".into();
    m.tasks.insert("db".into(), model::TaskSpec::default());
    let e = check::check(&m, &Cluster::default(), &target())
        .unwrap_err()
        .join("\n");
    assert!(e.contains("name \"Shop!\""), "{e}");
    assert!(e.contains("db is both an app and a task"), "{e}");
}

// ---------------------------------------------------------------- planning

#[test]
fn an_empty_cluster_gets_everything_in_order() {
    let plan = plan_of(&system(), &Cluster::default(), Prune::default()).unwrap();
    assert_eq!(
        plan.storage.iter().map(plan::describe).collect::<Vec<_>>(),
        vec![
            "volume pgdata: create (1G)",
            "backup schedule of pgdata: create (every daily, keep 3)"
        ]
    );
    assert_eq!(
        names(&plan),
        vec![vec!["db"], vec!["api", "migrate"], vec!["web"]]
    );
    for n in plan.waves.iter().flatten() {
        assert!(n.change.is_some() && n.wait.is_some(), "{n:?}");
    }
    assert!(matches!(plan.waves[1][1].wait, Some(Ready::Task { .. })));
    assert!(matches!(
        plan.waves[1][0].wait,
        Some(Ready::App { instances: 2, .. })
    ));
    assert_eq!(plan.ledger, applied(&system()).ledger);
}

#[test]
fn applying_what_the_cluster_holds_changes_nothing() {
    let m = system();
    let mut cluster = applied(&m);
    // The cluster lists environment variables in its own order.
    cluster.apps.get_mut("api").unwrap().request.env.reverse();
    // What a manifest cannot say stays as it is.
    cluster.apps.get_mut("web").unwrap().request.annotation = "by hand".into();
    let plan = plan_of(&m, &cluster, Prune::default()).unwrap();
    assert!(plan.is_empty(), "{}", plan::render(&plan));
    assert!(plan.waves.iter().flatten().all(|n| n.wait.is_none()));
    assert_eq!(
        plan::render(&plan),
        "Nothing to change: the cluster holds what the manifest says.\n"
    );
}

#[test]
fn a_changed_env_rolls_that_app_only() {
    let m = system();
    let cluster = applied(&m);
    let mut changed = m.clone();
    changed
        .apps
        .get_mut("api")
        .unwrap()
        .env
        .insert("GREETING".into(), "hello".into());
    let plan = plan_of(&changed, &cluster, Prune::default()).unwrap();
    let changes: Vec<&Change> = plan.changes().collect();
    assert_eq!(changes.len(), 1, "{}", plan::render(&plan));
    let Change::UpdateApp { name, fields, how } = changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(name, "api");
    let AppUpdate::Generation(g) = how else {
        panic!("{how:?}")
    };
    assert_eq!((g.strategy.max_surge, g.strategy.max_unavailable), (2, 0));
    assert_eq!(g.definition.env.len(), 2);
    assert_eq!(
        plan::render(&plan),
        "app api: change, rolled out as a new generation (max surge 2, max unavailable 0)\n    env.GREETING: \"hi\" → \"hello\"\n"
    );
    assert_eq!(fields.len(), 1);
    // Waited for: api, and db which it depends on; not web.
    let waited: Vec<&str> = plan
        .waves
        .iter()
        .flatten()
        .filter(|n| n.wait.is_some())
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(waited, vec!["db", "api"]);
}

#[test]
fn instances_and_routes_change_in_place() {
    let m = system();
    let cluster = applied(&m);
    let mut changed = m.clone();
    changed.apps.get_mut("web").unwrap().instances = 3;
    changed.apps.get_mut("web").unwrap().http_routes = vec!["store".into()];
    let plan = plan_of(&changed, &cluster, Prune::default()).unwrap();
    let changes: Vec<&Change> = plan.changes().collect();
    let [Change::UpdateApp {
        how: AppUpdate::InPlace(u),
        ..
    }] = changes[..]
    else {
        panic!("{changes:?}")
    };
    assert_eq!(u.instances, Some(3));
    assert!(u.routes.as_ref().unwrap()["cf-router"]
        .to_string()
        .contains("store.lattice.localhost"));
    let text = plan::render(&plan);
    assert!(text.contains("app web: change in place\n"), "{text}");
    assert!(text.contains("    instances: 1 → 3\n"), "{text}");
}

#[test]
fn an_app_being_updated_is_not_changed_again() {
    let m = system();
    let mut cluster = applied(&m);
    cluster.apps.get_mut("api").unwrap().deployment = Some(DeploymentJson {
        state: "rolling".into(),
        target_generation: 2,
        ..Default::default()
    });
    // Unchanged: fine.
    assert!(plan_of(&m, &cluster, Prune::default()).unwrap().is_empty());
    let mut changed = m.clone();
    changed.apps.get_mut("api").unwrap().memory_mb = 256;
    let e = plan_of(&changed, &cluster, Prune::default()).unwrap_err();
    assert_eq!(
        e,
        vec!["app api is being updated (rolling, generation 2): wait for it, or `ltc rollback api`, then apply again".to_string()]
    );
}

#[test]
fn storage_grows_and_schedules_change() {
    let m = system();
    let cluster = applied(&m);
    let mut changed = m.clone();
    changed.volumes.get_mut("pgdata").unwrap().size = "2G".into();
    changed.backup_schedules.get_mut("pgdata").unwrap().every = "hourly".into();
    let plan = plan_of(&changed, &cluster, Prune::default()).unwrap();
    assert_eq!(
        plan::render(&plan),
        "volume pgdata: grow 1G → 2G\nbackup schedule of pgdata: every daily → hourly, keep 3 → 3\n"
    );
}

#[test]
fn a_task_that_ran_is_not_run_again() {
    let m = system();
    let cluster = applied(&m);
    let mut changed = m.clone();
    changed.tasks.get_mut("migrate").unwrap().memory_mb = 64;
    let plan = plan_of(&changed, &cluster, Prune::default()).unwrap();
    assert!(plan.is_empty());
    assert_eq!(
        plan.notes,
        vec!["task migrate already ran (COMPLETED): a task runs once, so its changes (memory_mb) take effect only after `ltc delete-task migrate`".to_string()]
    );
}

#[test]
fn prune_removes_only_what_this_manifest_made() {
    let m = system();
    let mut cluster = applied(&m);
    // Someone else's app, never in this manifest's record.
    cluster
        .apps
        .insert("other".into(), DesiredLrpResponse::default());
    let mut smaller = m.clone();
    smaller.apps.remove("web");
    smaller.tasks.clear();
    smaller.backup_schedules.clear();
    smaller.volumes.clear();
    // db still mounts pgdata: the cluster has it.

    let plan = plan_of(&smaller, &cluster, Prune::default()).unwrap();
    assert!(plan.is_empty());
    assert_eq!(plan.notes.len(), 4, "{:?}", plan.notes);
    assert!(plan.notes[0].contains("app web is no longer in the manifest: --prune removes it"));
    assert_eq!(
        plan.ledger, cluster.ledger,
        "still recorded for a later --prune"
    );

    let p = Prune {
        apps: true,
        volumes: false,
    };
    let plan = plan_of(&smaller, &cluster, p).unwrap();
    assert_eq!(
        plan.prune,
        vec![
            Change::RemoveApp("web".into()),
            Change::RemoveTask("migrate".into()),
            Change::RemoveSchedule("pgdata".into()),
        ]
    );
    assert!(plan.notes[0].contains("volume pgdata is no longer in the manifest: --prune-volumes"));
    assert_eq!(
        plan.ledger.volumes.iter().collect::<Vec<_>>(),
        vec!["pgdata"]
    );
    let all = Prune {
        apps: true,
        volumes: true,
    };
    let plan = plan_of(&smaller, &cluster, all).unwrap();
    assert_eq!(
        plan.prune.last(),
        Some(&Change::RemoveVolume("pgdata".into()))
    );
    assert!(plan.ledger.volumes.is_empty());
}

// ---------------------------------------------------------------- running

/// Records what the runner does; `ready` fails for the names in `unhealthy`.
#[derive(Default)]
struct Fake {
    log: Vec<String>,
    unhealthy: Vec<String>,
}

impl Effects for Fake {
    async fn apply(&mut self, change: &Change) -> anyhow::Result<()> {
        let first = plan::describe(change);
        self.log
            .push(first.lines().next().unwrap_or_default().into());
        Ok(())
    }

    async fn ready(&mut self, name: &str, _: Ready) -> anyhow::Result<()> {
        self.log.push(format!("ready {name}"));
        anyhow::ensure!(
            !self.unhealthy.contains(&name.to_string()),
            "{name} crashed"
        );
        Ok(())
    }

    async fn save_ledger(&mut self, l: &Ledger) -> anyhow::Result<()> {
        self.log.push(format!("ledger {:?}", l.apps));
        Ok(())
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn dependents_start_only_once_their_dependencies_are_ready() {
    let plan = plan_of(&system(), &Cluster::default(), Prune::default()).unwrap();
    let mut fake = Fake::default();
    block_on(run::run(&plan, &Ledger::default(), &mut fake)).unwrap();
    assert_eq!(
        fake.log,
        vec![
            "ledger {\"api\", \"db\", \"web\"}",
            "volume pgdata: create (1G)",
            "backup schedule of pgdata: create (every daily, keep 3)",
            "app db: create (1 instance(s) of preloaded:busybox)",
            "ready db",
            "app api: create (2 instance(s) of preloaded:busybox)",
            "task migrate: run (preloaded:busybox)",
            "ready api",
            "ready migrate",
            "app web: create (1 instance(s) of preloaded:busybox)",
            "ready web",
        ]
    );
}

#[test]
fn an_unhealthy_dependency_stops_the_apply_before_its_dependents() {
    let plan = plan_of(&system(), &Cluster::default(), Prune::default()).unwrap();
    let mut fake = Fake {
        unhealthy: vec!["db".into()],
        ..Default::default()
    };
    let e = block_on(run::run(&plan, &Ledger::default(), &mut fake)).unwrap_err();
    assert_eq!(e.to_string(), "db crashed");
    assert_eq!(fake.log.last().map(String::as_str), Some("ready db"));
    assert!(!fake.log.iter().any(|l| l.starts_with("app api")));
}

#[test]
fn pruning_comes_last_and_the_record_follows() {
    let m = system();
    let cluster = applied(&m);
    let mut smaller = m.clone();
    smaller.apps.remove("web");
    smaller.apps.get_mut("api").unwrap().instances = 3;
    let p = Prune {
        apps: true,
        volumes: false,
    };
    let plan = plan_of(&smaller, &cluster, p).unwrap();
    let mut fake = Fake::default();
    block_on(run::run(&plan, &cluster.ledger, &mut fake)).unwrap();
    assert_eq!(
        fake.log,
        vec![
            "ready db",
            "app api: change in place",
            "ready api",
            "app web: remove (no longer in the manifest)",
            "ledger {\"api\", \"db\"}",
        ]
    );
}
