//! Backup schedules in manifests against what `ltc backup schedule` set: what the
//! file leaves out is kept, what it names wins, and an export applies as it was.

use super::super::model::{self, Format, Manifest};
use super::super::plan::{self, Change, Cluster, Prune};
use super::super::schedule;
use super::{applied, plan_of, system, SYSTEM_YAML};

/// The cluster's schedule of pgdata as `ltc backup schedule` left it: retention by
/// age, a daily restore test, a threshold and a hook, none of which the file names.
fn tuned(cluster: &mut Cluster) {
    let r = cluster.schedules.get_mut("pgdata").unwrap();
    r.keep_daily = 7;
    r.verify = "daily".into();
    r.smaller_than = 0.3;
    r.hooks = Some(lattice_specs::receptor::BackupHooksRequest {
        pre: "sqlite3 /data/db .backup /data/dump".into(),
        app: "db".into(),
        ..Default::default()
    });
    r.last_verify_at = 1;
    r.last_verification = "b1: ok".into();
}

#[test]
fn a_schedule_keeps_the_settings_the_file_leaves_out() {
    let m = system();
    let mut cluster = applied(&m);
    tuned(&mut cluster);
    let plan = plan_of(&m, &cluster, Prune::default()).unwrap();
    assert!(
        plan.is_empty(),
        "the same file again changes nothing: {plan:?}"
    );

    let mut changed = m.clone();
    changed.backup_schedules.get_mut("pgdata").unwrap().every = "hourly".into();
    let plan = plan_of(&changed, &cluster, Prune::default()).unwrap();
    assert_eq!(
        plan::render(&plan),
        "backup schedule of pgdata: every daily → hourly, keep 3 → 3\n"
    );
    let Change::SetSchedule { request, .. } = &plan.storage[0] else {
        panic!("{plan:?}")
    };
    let mut want = schedule::settings(&cluster.schedules["pgdata"]);
    want.every = "hourly".into();
    assert_eq!(
        **request, want,
        "retention, verification, threshold and hooks kept"
    );
}

#[test]
fn the_file_sets_retention_verification_and_hooks() {
    let yaml = SYSTEM_YAML.replace(
        "    keep: 3\n",
        "    keep: 3\n    keep_daily: 7\n    verify: weekly\n    hooks:\n      pre: sqlite3 /data/db .backup /data/dump\n      app: db\n      timeout: 30s\n",
    );
    let m = model::parse(&yaml, Format::Yaml).unwrap();
    let plan = plan_of(&m, &Cluster::default(), Prune::default()).unwrap();
    assert!(
        plan::render(&plan).contains(
            "backup schedule of pgdata: create (every daily, keep 3, keep_daily 7, verify weekly, hooks set (pre in app db))"
        ),
        "{}",
        plan::render(&plan)
    );
    let Change::SetSchedule { request, .. } = &plan.storage[1] else {
        panic!("{plan:?}")
    };
    assert_eq!(request.hooks.as_ref().unwrap().timeout_ms, 30_000);

    // Over a cluster tuned otherwise, what the file names wins; an empty hooks table
    // removes the hooks.
    let mut cluster = applied(&system());
    tuned(&mut cluster);
    let mut m = system();
    let pg = m.backup_schedules.get_mut("pgdata").unwrap();
    pg.keep_daily = Some(0);
    pg.verify = Some(String::new());
    pg.hooks = Some(model::HooksSpec::default());
    let plan = plan_of(&m, &cluster, Prune::default()).unwrap();
    assert_eq!(
        plan::render(&plan),
        "backup schedule of pgdata: every daily → daily, keep 3 → 3, keep_daily 7 → 0, verify daily → never, hooks removed\n"
    );
}

#[test]
fn an_exported_schedule_applies_as_it_was() {
    let mut cluster = applied(&system());
    tuned(&mut cluster);
    let have = &cluster.schedules["pgdata"];
    let spec = schedule::spec_of(have);
    let text = model::write(
        &Manifest {
            backup_schedules: [("pgdata".to_string(), spec.clone())].into(),
            ..Default::default()
        },
        Format::Yaml,
    )
    .unwrap();
    assert!(
        text.contains("keep_daily: 7") && text.contains("app: db"),
        "{text}"
    );
    assert_eq!(
        schedule::desired("pgdata", &spec, None).unwrap(),
        schedule::settings(have)
    );
}
