//! A manifest's backup schedule against the cluster's (pure): the request `ltc apply`
//! sends (the file's settings laid over the cluster's, so a setting the file leaves
//! out keeps the value `ltc backup schedule` gave it), what that changes, as the plan
//! prints it, and the file's form of a cluster schedule (`ltc export`).

use lattice_specs::receptor::{BackupHooksRequest, BackupScheduleRequest};

use super::model::{HooksSpec, ScheduleSpec};

/// What the cluster holds for a schedule, without the fields only answers carry (the
/// last verification), so that it compares with what a PUT sends.
pub fn settings(have: &BackupScheduleRequest) -> BackupScheduleRequest {
    BackupScheduleRequest {
        last_verify_at: 0,
        last_verification: String::new(),
        ..have.clone()
    }
}

/// The schedule of `volume` once `spec` is applied over `have` (the cluster's, if
/// any); a bad hook timeout is an error naming its field.
pub fn desired(
    volume: &str,
    spec: &ScheduleSpec,
    have: Option<&BackupScheduleRequest>,
) -> anyhow::Result<BackupScheduleRequest> {
    let mut r = overlay(volume, spec, have);
    if let Some(h) = &spec.hooks {
        r.hooks = hooks(volume, h)?;
    }
    Ok(r)
}

/// [`desired`] but for the hooks (kept as `have` has them): every other setting.
pub fn overlay(
    volume: &str,
    spec: &ScheduleSpec,
    have: Option<&BackupScheduleRequest>,
) -> BackupScheduleRequest {
    let mut r = have.map(settings).unwrap_or_default();
    r.volume = volume.to_string();
    r.every = spec.every.clone();
    r.keep = spec.keep;
    r.keep_daily = spec.keep_daily.unwrap_or(r.keep_daily);
    r.keep_weekly = spec.keep_weekly.unwrap_or(r.keep_weekly);
    r.keep_monthly = spec.keep_monthly.unwrap_or(r.keep_monthly);
    r.verify = spec.verify.clone().unwrap_or(r.verify);
    r.smaller_than = spec.smaller_than.unwrap_or(r.smaller_than);
    r.faster_than = spec.faster_than.unwrap_or(r.faster_than);
    r
}

/// The request's hooks for `h` of `volume`'s schedule (none for an empty table); a
/// bad timeout is an error naming its field.
pub fn hooks(volume: &str, h: &HooksSpec) -> anyhow::Result<Option<BackupHooksRequest>> {
    if *h == HooksSpec::default() {
        return Ok(None);
    }
    let timeout_ms = match h.timeout.as_str() {
        "" => 0,
        t => crate::app::parse_duration(t)
            .map_err(|e| anyhow::anyhow!("backup_schedules.{volume}.hooks.timeout: {t:?}: {e}"))?
            .as_millis() as u64,
    };
    Ok(Some(BackupHooksRequest {
        pre: h.pre.clone(),
        post: h.post.clone(),
        app: h.app.clone(),
        timeout_ms,
    }))
}

/// The settings a plan line names beyond every and keep, each as it reads.
fn shown(r: &BackupScheduleRequest) -> [(&'static str, String); 6] {
    let verify = if r.verify.is_empty() {
        "never".to_string()
    } else {
        r.verify.clone()
    };
    [
        ("keep_daily", r.keep_daily.to_string()),
        ("keep_weekly", r.keep_weekly.to_string()),
        ("keep_monthly", r.keep_monthly.to_string()),
        ("verify", verify),
        ("smaller_than", r.smaller_than.to_string()),
        ("faster_than", r.faster_than.to_string()),
    ]
}

/// How `new` differs from `old`, one "field old → new" each: every and keep always
/// (as the plan has always said them), the other settings when they change.
pub fn differences(old: &BackupScheduleRequest, new: &BackupScheduleRequest) -> Vec<String> {
    let mut out = vec![
        format!("every {} → {}", old.every, new.every),
        format!("keep {} → {}", old.keep, new.keep),
    ];
    for ((name, o), (_, n)) in shown(old).into_iter().zip(shown(new)) {
        if o != n {
            out.push(format!("{name} {o} → {n}"));
        }
    }
    if old.hooks != new.hooks {
        out.push(match &new.hooks {
            None => "hooks removed".to_string(),
            Some(h) if old.hooks.is_none() => format!("hooks set ({})", hooks_summary(h)),
            Some(h) => format!("hooks changed ({})", hooks_summary(h)),
        });
    }
    out
}

/// What a plan line says of hooks: which are set and where they run.
fn hooks_summary(h: &BackupHooksRequest) -> String {
    let mut parts = vec![];
    if !h.pre.is_empty() {
        parts.push("pre");
    }
    if !h.post.is_empty() {
        parts.push("post");
    }
    let mut s = parts.join(" and ");
    if !h.app.is_empty() {
        s.push_str(&format!(" in app {}", h.app));
    }
    s
}

/// What the plan says of a new schedule: every and keep, each other setting it has
/// (not at its default), and its hooks.
pub fn created(r: &BackupScheduleRequest) -> String {
    let mut parts = vec![format!("every {}", r.every), format!("keep {}", r.keep)];
    let defaults = shown(&BackupScheduleRequest::default());
    for ((name, v), (_, d)) in shown(r).into_iter().zip(defaults) {
        if v != d {
            parts.push(format!("{name} {v}"));
        }
    }
    if let Some(h) = &r.hooks {
        parts.push(format!("hooks set ({})", hooks_summary(h)));
    }
    parts.join(", ")
}

/// The file's form of the cluster's schedule `r`: each setting it has (zero and empty
/// ones left out, which keeps the cluster's on a later apply).
pub fn spec_of(r: &BackupScheduleRequest) -> ScheduleSpec {
    let some = |v: u32| (v > 0).then_some(v);
    ScheduleSpec {
        every: r.every.clone(),
        keep: r.keep,
        keep_daily: some(r.keep_daily),
        keep_weekly: some(r.keep_weekly),
        keep_monthly: some(r.keep_monthly),
        verify: (!r.verify.is_empty()).then(|| r.verify.clone()),
        smaller_than: (r.smaller_than > 0.0).then_some(r.smaller_than),
        faster_than: (r.faster_than > 0.0).then_some(r.faster_than),
        hooks: r.hooks.as_ref().map(|h| HooksSpec {
            pre: h.pre.clone(),
            post: h.post.clone(),
            app: h.app.clone(),
            timeout: match h.timeout_ms {
                0 => String::new(),
                ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
                ms => format!("{ms}ms"),
            },
        }),
    }
}
