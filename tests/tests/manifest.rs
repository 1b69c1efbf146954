//! `ltc apply` end to end: a database-API-front-end system from one manifest, created
//! in `depends_on` order by health (the API reads the database by its internal name as
//! it starts, the front end reads the API), applying it again changes nothing, a bad
//! file changes nothing, `ltc export` reads back as the same system, `--prune` removes
//! what the file dropped; and a changed environment variable rolls that one app only.
//! Real processes, real containers, real HTTP.

use std::time::Duration;

use lattice_tests::{wait_for, UpProcess};

/// db serves a page only after a pause (so a too-early API would crash); api copies
/// db's page and adds its greeting; web copies api's page. A copy that fails exits 3.
fn manifest(greeting: &str, with_web: bool) -> String {
    let mut m = format!(
        r#"name: shop
apps:
  db:
    image: preloaded:busybox
    command: [sh, -c, "mkdir -p /srv/db && echo db-ok > /srv/db/index.html && sleep 2 && exec httpd -f -p 8080 -h /srv/db"]
    no_routes: true
  api:
    image: preloaded:busybox
    command: [sh, -c, "mkdir -p /srv/api && wget -q -O /srv/api/index.html http://db.apps.internal:8080/ || exit 3; echo \"api $GREETING\" >> /srv/api/index.html; exec httpd -f -p 8080 -h /srv/api"]
    env:
      GREETING: {greeting}
    depends_on: [db]
"#
    );
    if with_web {
        m.push_str(
            r#"  web:
    image: preloaded:busybox
    command: [sh, -c, "mkdir -p /srv/web && wget -q -O /srv/web/index.html http://api.apps.internal:8080/ || exit 3; exec httpd -f -p 8080 -h /srv/web"]
    depends_on: [api]
"#,
        );
    }
    m
}

fn write(up: &UpProcess, name: &str, text: &str) -> String {
    let path = up.data_dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn status(up: &UpProcess, app: &str) -> serde_json::Value {
    serde_json::from_str(&up.ltc_ok(&["status", app, "--json"])).expect("status --json")
}

/// Each instance's (index, state, crash count, generation, instance guid).
fn instances(up: &UpProcess, app: &str) -> Vec<(i64, String, i64, i64, String)> {
    let s = status(up, app);
    let mut v: Vec<_> = s["actual_lrps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["index"].as_i64().unwrap_or(0),
                a["state"].as_str().unwrap_or_default().to_string(),
                a["crash_count"].as_i64().unwrap_or(0),
                a["generation"].as_i64().unwrap_or(0),
                a["instance_guid"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn apply_system(up: &UpProcess) -> String {
    up.target();
    let file = write(up, "shop.yaml", &manifest("hi", true));
    let out = up.ltc(&["apply", "-f", &file]);
    assert!(out.ok, "{out:#?}");
    let created: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.ends_with("instance(s) of preloaded:busybox)"))
        .collect();
    assert_eq!(
        created,
        vec![
            "app db: create (1 instance(s) of preloaded:busybox)",
            "app api: create (1 instance(s) of preloaded:busybox)",
            "app web: create (1 instance(s) of preloaded:busybox)",
        ],
        "{out:#?}"
    );
    file
}

#[test]
fn a_system_is_created_in_order_and_applying_it_again_changes_nothing() {
    let up = UpProcess::start();
    let file = apply_system(&up);
    // Each started once, after what it reads was healthy: no crash anywhere.
    for app in ["db", "api", "web"] {
        let i = instances(&up, app);
        assert_eq!(i.len(), 1, "{app}: {i:?}");
        assert_eq!((i[0].1.as_str(), i[0].2), ("RUNNING", 0), "{app}: {i:?}");
    }
    let (code, body) = up.get("web").expect("the router answers");
    assert_eq!((code, body.as_str()), (200, "db-ok\napi hi\n"));

    // Again: nothing to change, nothing restarted.
    let before: Vec<_> = ["db", "api", "web"].map(|a| instances(&up, a)).into();
    let out = up.ltc_ok(&["apply", "-f", &file]);
    assert!(
        out.contains("Nothing to change: the cluster holds what the manifest says."),
        "{out}"
    );
    let after: Vec<_> = ["db", "api", "web"].map(|a| instances(&up, a)).into();
    assert_eq!(before, after);
    // A dry run says field by field what would change, and changes nothing.
    let changed = write(&up, "shop.yaml", &manifest("hello", true));
    let out = up.ltc_ok(&["apply", "-f", &changed, "--dry-run"]);
    assert!(
        out.contains("app api: change, rolled out as a new generation")
            && out.contains("env.GREETING: \"hi\" → \"hello\"")
            && out.contains("Dry run: nothing was changed."),
        "{out}"
    );
    assert_eq!(up.get("web").unwrap().1, "db-ok\napi hi\n");

    // A bad file is refused whole: the unknown field named with its line.
    let bad = write(
        &up,
        "bad.yaml",
        &format!("{}    instnaces: 2\n", manifest("hi", true)),
    );
    let out = up.ltc(&["apply", "-f", &bad]);
    assert!(
        !out.ok && out.stderr.contains("instnaces") && out.stderr.contains("line 17"),
        "{out:#?}"
    );
    let cyclic = write(
        &up,
        "cyclic.yaml",
        &manifest("hi", true).replace(
            "    no_routes: true\n",
            "    no_routes: true\n    depends_on: [web]\n",
        ),
    );
    let out = up.ltc(&["apply", "-f", &cyclic]);
    assert!(
        !out.ok
            && out.stderr.contains("nothing was changed")
            && out
                .stderr
                .contains("depends_on has a cycle: api → db → web → api"),
        "{out:#?}"
    );

    // What runs, exported, is the same system.
    let exported = up.data_dir.path().join("exported.toml");
    up.ltc_ok(&[
        "export",
        "db",
        "api",
        "web",
        "-o",
        exported.to_str().unwrap(),
    ]);
    let out = up.ltc_ok(&["apply", "-f", exported.to_str().unwrap()]);
    assert!(out.contains("Nothing to change"), "{out}");

    // The file drops web: kept (and said so) until --prune.
    let smaller = write(&up, "shop.yaml", &manifest("hi", false));
    let out = up.ltc_ok(&["apply", "-f", &smaller]);
    assert!(
        out.contains("app web is no longer in the manifest: --prune removes it"),
        "{out}"
    );
    let out = up.ltc_ok(&["apply", "-f", &smaller, "--prune"]);
    assert!(
        out.contains("app web: remove (no longer in the manifest)"),
        "{out}"
    );
    let list = up.ltc_ok(&["list"]);
    assert!(list.contains("api") && !list.contains("web"), "{list}");
}

#[test]
fn a_changed_env_rolls_one_app_only() {
    let up = UpProcess::start();
    apply_system(&up);
    let before = |app| instances(&up, app);
    let (db, web) = (before("db"), before("web"));
    assert_eq!(before("api")[0].3, 1, "generation 1");

    let file = write(&up, "shop.yaml", &manifest("hello", true));
    let out = up.ltc(&["apply", "-f", &file]);
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stdout
            .contains("app api: change, rolled out as a new generation")
            && out.stdout.contains("env.GREETING: \"hi\" → \"hello\""),
        "{out:#?}"
    );
    // api runs generation 2 with the new greeting; db and web were not touched.
    let api = wait_for("api on generation 2", Duration::from_secs(60), || {
        let i = instances(&up, "api");
        (i.len() == 1 && i[0].1 == "RUNNING" && i[0].3 == 2).then_some(i)
    });
    assert_eq!(api[0].2, 0, "{api:?}");
    assert_eq!(up.get("api").unwrap().1, "db-ok\napi hello\n");
    assert_eq!(instances(&up, "db"), db);
    assert_eq!(instances(&up, "web"), web);
    let out = up.ltc_ok(&["apply", "-f", &file]);
    assert!(out.contains("Nothing to change"), "{out}");
}

/// What `ltc backup schedule` set beyond `every` and `keep` (retention by age, a
/// restore test, a hook) survives `ltc apply` of a file that does not name it: the
/// same file changes nothing, a changed `every` changes only that; a setting the
/// file does name is applied.
#[test]
fn an_apply_keeps_the_schedule_settings_the_file_leaves_out() {
    let up = UpProcess::start();
    up.target();
    let text = "name: store\nvolumes:\n  pg: {size: 300M}\nbackup_schedules:\n  pg: {every: daily, keep: 3}\n";
    let file = write(&up, "store.yaml", text);
    up.ltc_ok(&["apply", "-f", &file]);
    up.ltc_ok(&[
        "backup",
        "schedule",
        "pg",
        "--every",
        "daily",
        "--keep",
        "3",
        "--keep-daily",
        "7",
        "--verify",
        "daily",
        "--pre",
        "sync",
    ]);
    let schedule = || -> serde_json::Value {
        let all: serde_json::Value =
            serde_json::from_str(&up.ltc_ok(&["backup", "schedules", "--json"])).unwrap();
        all.as_array().unwrap()[0].clone()
    };
    let out = up.ltc_ok(&["apply", "-f", &file]);
    assert!(out.contains("Nothing to change"), "{out}");

    let hourly = write(&up, "store.yaml", &text.replace("daily", "hourly"));
    let out = up.ltc_ok(&["apply", "-f", &hourly]);
    assert!(
        out.contains("backup schedule of pg: every daily → hourly, keep 3 → 3\n"),
        "{out}"
    );
    let s = schedule();
    assert_eq!(
        (
            &s["every"],
            &s["keep_daily"],
            &s["verify"],
            &s["hooks"]["pre"]
        ),
        (
            &serde_json::json!("hourly"),
            &serde_json::json!(7),
            &serde_json::json!("daily"),
            &serde_json::json!("sync")
        ),
        "{s}"
    );

    let named = write(
        &up,
        "store.yaml",
        &text.replace("keep: 3}", "keep: 3, keep_daily: 2, hooks: {}}"),
    );
    let out = up.ltc_ok(&["apply", "-f", &named]);
    assert!(
        out.contains("keep_daily 7 → 2") && out.contains("hooks removed"),
        "{out}"
    );
    let s = schedule();
    assert_eq!(
        (&s["keep_daily"], &s["verify"]),
        (&serde_json::json!(2), &serde_json::json!("daily")),
        "{s}"
    );
    assert!(s.get("hooks").is_none_or(|h| h.is_null()), "{s}");
}
