//! `ltc backup schedule`'s retention, verification and alert flags, and how
//! `ltc backup schedules` shows them: restic's retention (`--keep N` as keep-last,
//! `--keep-daily/weekly/monthly`), `--verify daily|weekly`, `--smaller-than`,
//! `--faster-than`. The BBS keeps the newest verified-good backup whatever they say.

use clap::Args;
use lattice_specs::models::Retention;
use lattice_specs::receptor::BackupScheduleRequest;
use lattice_specs::retention::BackupPolicy;

use crate::show;

/// Completed scheduled backups kept by count when no rule by age is given.
pub const DEFAULT_KEEP: u32 = 7;

#[derive(Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// How many of the newest completed backups to keep (restic's --keep-last; default
    /// 7 when no --keep-daily/weekly/monthly is given, else none by count).
    #[arg(long)]
    pub keep: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one (UTC).
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// Verify the newest backup on a schedule (restore it into scratch space and check
    /// it): daily, weekly, or a period like 12h.
    #[arg(long)]
    pub verify: Option<String>,
    /// Warn when a backup holds under this ratio of the previous one's data (default 0.5).
    #[arg(long)]
    pub smaller_than: Option<f64>,
    /// Warn when a backup takes under this ratio of the previous one's time (default 0.2).
    #[arg(long)]
    pub faster_than: Option<f64>,
}

impl PolicyArgs {
    /// The request for `volume` backed up `every`, checked here so that a mistake is
    /// named before anything is sent.
    pub fn request(&self, volume: &str, every: &str) -> anyhow::Result<BackupScheduleRequest> {
        lattice_specs::schedule::parse_backup_cadence(every)?;
        let by_age = self.keep_daily > 0 || self.keep_weekly > 0 || self.keep_monthly > 0;
        let r = BackupScheduleRequest {
            volume: volume.into(),
            every: every.into(),
            keep: self.keep.unwrap_or(if by_age { 0 } else { DEFAULT_KEEP }),
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            verify: self.verify.clone().unwrap_or_default(),
            smaller_than: self.smaller_than.unwrap_or(0.0),
            faster_than: self.faster_than.unwrap_or(0.0),
            ..Default::default()
        };
        if r.keep == 0 && !by_age {
            anyhow::bail!(
                "--keep must be at least 1 (or give --keep-daily, --keep-weekly or --keep-monthly)"
            );
        }
        let policy = BackupPolicy {
            retention: retention(&r),
            verify_every: r.verify.clone(),
            smaller_ratio: r.smaller_than,
            faster_ratio: r.faster_than,
        };
        if let Err((field, why)) = policy.check() {
            anyhow::bail!("--{}: {why}", field.replace('_', "-"));
        }
        Ok(r)
    }
}

fn retention(r: &BackupScheduleRequest) -> Retention {
    Retention {
        keep_last: r.keep,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
    }
}

/// What a schedule keeps, for people: "last 2, 7 daily, 4 weekly, 6 monthly".
pub fn keeps(r: &BackupScheduleRequest) -> String {
    let parts: Vec<String> = [
        (r.keep, "last"),
        (r.keep_daily, "daily"),
        (r.keep_weekly, "weekly"),
        (r.keep_monthly, "monthly"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| match *what {
        "last" => format!("last {n}"),
        _ => format!("{n} {what}"),
    })
    .collect();
    parts.join(", ")
}

/// The line `ltc backup schedule` confirms with.
pub fn confirmation(r: &BackupScheduleRequest) -> String {
    let verify = match r.verify.as_str() {
        "" => String::new(),
        v => format!(", its newest backup verified {v}"),
    };
    let hooks = if r.hooks.is_some() {
        ", with hooks"
    } else {
        ""
    };
    format!(
        "Volume {} is backed up on a schedule ({}{hooks}), keeping {} and the newest verified-good backup{verify}: `ltc backup list {}` shows them.",
        r.volume,
        r.every,
        keeps(r),
        r.volume
    )
}

/// `ltc backup schedules` as a table at `now` (Unix nanoseconds).
pub fn table(all: &[BackupScheduleRequest], now: i64) -> String {
    let ratio = |v: f64, d: f64| format!("{}", if v > 0.0 { v } else { d });
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.volume.clone(),
                s.every.clone(),
                keeps(s),
                if s.verify.is_empty() {
                    "-".into()
                } else {
                    s.verify.clone()
                },
                match s.last_verify_at {
                    0 => "-".into(),
                    at => format!("{} ago", show::age(at, now)),
                },
                if s.last_verification.is_empty() {
                    "-".into()
                } else {
                    s.last_verification.clone()
                },
                format!(
                    "{}/{}",
                    ratio(s.smaller_than, lattice_specs::backup::DEFAULT_SMALLER_RATIO),
                    ratio(s.faster_than, lattice_specs::backup::DEFAULT_FASTER_RATIO)
                ),
            ]
        })
        .collect();
    show::table(
        &[
            "VOLUME",
            "EVERY",
            "KEEP",
            "VERIFY",
            "LAST VERIFY",
            "LAST VERDICT",
            "SMALLER/FASTER",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_the_request_and_mistakes_are_named() {
        let p = PolicyArgs::default();
        let r = p.request("pg", "daily").unwrap();
        assert_eq!((r.keep, keeps(&r).as_str()), (7, "last 7"));
        let p = PolicyArgs {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            verify: Some("daily".into()),
            smaller_than: Some(0.3),
            ..Default::default()
        };
        let r = p.request("pg", "hourly").unwrap();
        assert_eq!(r.keep, 0, "no count rule unless asked");
        assert_eq!(keeps(&r), "7 daily, 4 weekly, 6 monthly");
        assert!(
            confirmation(&r).contains("verified daily"),
            "{}",
            confirmation(&r)
        );
        let bad = PolicyArgs {
            verify: Some("often".into()),
            ..Default::default()
        };
        let e = bad.request("pg", "daily").unwrap_err().to_string();
        assert!(e.starts_with("--verify:"), "{e}");
        let bad = PolicyArgs {
            faster_than: Some(3.0),
            ..Default::default()
        };
        let e = bad.request("pg", "daily").unwrap_err().to_string();
        assert!(e.starts_with("--faster-than:"), "{e}");
        let bad = PolicyArgs {
            keep: Some(0),
            ..Default::default()
        };
        assert!(bad
            .request("pg", "daily")
            .unwrap_err()
            .to_string()
            .contains("--keep"));
    }

    #[test]
    fn the_table_shows_the_policy_and_the_last_verification() {
        let s = BackupScheduleRequest {
            volume: "pg".into(),
            every: "hourly".into(),
            keep: 2,
            keep_daily: 7,
            verify: "daily".into(),
            last_verify_at: 1_000_000_000,
            last_verification: "pg-20270101-0000: failed: the restored data differs".into(),
            ..Default::default()
        };
        let t = table(&[s], 3_601_000_000_000);
        assert!(t.contains("last 2, 7 daily"), "{t}");
        assert!(t.contains("1h0m ago"), "{t}");
        assert!(t.contains("failed: the restored data differs"), "{t}");
        assert!(t.contains("0.5/0.2"), "{t}");
    }
}
