//! What `ltc` prints: tables for people, the API's JSON objects with `--json`.

use lattice_specs::receptor::{
    ActualLrpResponse, CellResponse, ContainerUsage, DesiredLrpResponse, TaskResponse,
};
use serde::Serialize;

use crate::app::{hostnames, tcp_routes};
use crate::target::Target;

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A time span for people: 45s, 3m12s, 2h5m, 3d4h.
pub fn age(nanos: i64, now: i64) -> String {
    if nanos <= 0 {
        return "-".into();
    }
    let s = ((now - nanos) / 1_000_000_000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn running(actuals: &[ActualLrpResponse], guid: &str) -> usize {
    actuals
        .iter()
        .filter(|a| {
            a.process_guid == guid
                && a.state == "RUNNING"
                && !matches!(a.presence.as_str(), "EVACUATING" | "REPLACED")
        })
        .count()
}

pub fn apps(
    desired: &[DesiredLrpResponse],
    actuals: &[ActualLrpResponse],
    target: &Target,
) -> String {
    let mut rows: Vec<Vec<String>> = desired
        .iter()
        .map(|d| {
            let r = &d.request;
            vec![
                r.process_guid.clone(),
                format!("{}/{}", running(actuals, &r.process_guid), r.instances),
                generation(d),
                r.memory_mb.to_string(),
                r.disk_mb.to_string(),
                r.rootfs.clone(),
                hostnames(d)
                    .iter()
                    .map(|h| target.app_url(h).trim_end_matches('/').to_string())
                    .chain(tcp_routes(d).iter().map(|r| format!("tcp:{r}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    rows.sort();
    if rows.is_empty() {
        return "No apps yet: `ltc create APP preloaded:busybox -- CMD…` makes one.\n".into();
    }
    table(
        &[
            "APP",
            "RUNNING",
            "GEN",
            "MEMORY_MB",
            "DISK_MB",
            "IMAGE",
            "ROUTES",
        ],
        &rows,
    )
}

/// The app's generation, with its deployment's state while one is in progress
/// (`3 (rolling)`).
fn generation(d: &DesiredLrpResponse) -> String {
    match &d.deployment {
        Some(dep) if dep.in_progress() => format!("{} ({})", d.generation, dep.state),
        _ => d.generation.to_string(),
    }
}

/// What an instance uses: memory bytes and, when sampled twice, CPU percent of one core.
pub type Usage = std::collections::HashMap<String, (u64, Option<f64>)>;

/// Instance guid → (memory, CPU %) from two usage samples `elapsed` apart.
pub fn usage(before: &[ContainerUsage], after: &[ContainerUsage], elapsed: f64) -> Usage {
    after
        .iter()
        .map(|u| {
            let cpu = before
                .iter()
                .find(|b| b.instance_guid == u.instance_guid)
                .filter(|_| elapsed > 0.0)
                .map(|b| ((u.cpu_seconds - b.cpu_seconds) / elapsed * 100.0).max(0.0));
            (u.instance_guid.clone(), (u.memory_bytes, cpu))
        })
        .collect()
}

pub fn status(
    d: &DesiredLrpResponse,
    actuals: &[ActualLrpResponse],
    usage: &Usage,
    target: &Target,
    now: i64,
) -> String {
    let r = &d.request;
    let mut out = format!(
        "App:        {}\nImage:      {}\nInstances:  {}/{} running\nMemory:     {} MB   Disk: {} MB   CPU weight: {}\nPorts:      {}\nRoutes:     {}\n{}",
        r.process_guid,
        r.rootfs,
        running(actuals, &r.process_guid),
        r.instances,
        r.memory_mb,
        r.disk_mb,
        r.cpu_weight,
        r.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
        hostnames(d).iter().map(|h| target.app_url(h)).collect::<Vec<_>>().join(", "),
        match tcp_routes(d).as_slice() {
            [] => String::new(),
            tcp => format!(
                "TCP routes: {}\n",
                tcp.iter().map(|r| target.tcp_route(r)).collect::<Vec<_>>().join(", ")
            ),
        },
    );
    out.push_str(&format!("Generation: {}\n", d.generation));
    if let Some(dep) = crate::rollout::progress::describe(d, actuals, now) {
        out.push_str(&format!("Deployment: {dep}\n"));
    }
    out.push('\n');
    let mut sorted: Vec<_> = actuals.iter().collect();
    sorted.sort_by_key(|a| (a.index, a.presence != "ORDINARY" && !a.presence.is_empty()));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|a| {
            let mut state = if a.presence == "ORDINARY" || a.presence.is_empty() {
                a.state.clone()
            } else {
                format!("{} ({})", a.state, a.presence)
            };
            if a.draining {
                state.push_str(", draining");
            }
            vec![
                a.index.to_string(),
                state,
                a.generation.to_string(),
                if a.cell_id.is_empty() {
                    "-".into()
                } else {
                    a.cell_id.clone()
                },
                if a.address.is_empty() {
                    "-".into()
                } else {
                    a.ports
                        .iter()
                        .map(|p| format!("{}:{}->{}", a.address, p.host_port, p.container_port))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
                a.crash_count.to_string(),
                match usage.get(&a.instance_guid) {
                    Some((m, _)) => format!("{:.1}M", *m as f64 / 1048576.0),
                    None => "-".into(),
                },
                match usage.get(&a.instance_guid) {
                    Some((_, Some(c))) => format!("{c:.1}%"),
                    _ => "-".into(),
                },
                if a.state == "RUNNING" {
                    age(a.since, now)
                } else {
                    "-".into()
                },
                [a.crash_reason.as_str(), a.placement_error.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "INDEX",
            "STATE",
            "GEN",
            "CELL",
            "ADDRESS",
            "CRASHES",
            "MEMORY",
            "CPU",
            "UPTIME",
            "LAST ERROR",
        ],
        &rows,
    ));
    out
}

pub fn cells(cells: &[CellResponse], actuals: &[ActualLrpResponse]) -> String {
    if cells.is_empty() {
        return "No cells: start one (`sudo lattice up`, or `sudo lattice cell --bbs BBS`).\n"
            .into();
    }
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            let n = actuals.iter().filter(|a| a.cell_id == c.cell_id).count();
            vec![
                c.cell_id.clone(),
                c.zone.clone(),
                c.capacity.memory_mb.to_string(),
                c.capacity.disk_mb.to_string(),
                format!("{n}/{}", c.capacity.containers),
                c.rootfs_providers
                    .iter()
                    .flat_map(|(k, v)| v.iter().map(move |n| format!("{k}:{n}")))
                    .collect::<Vec<_>>()
                    .join(", "),
                c.placement_tags.join(","),
                if c.subnet.is_empty() {
                    "-".into()
                } else {
                    c.subnet.clone()
                },
                volume_pool(c),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "CELL",
            "ZONE",
            "MEMORY_MB",
            "DISK_MB",
            "INSTANCES",
            "IMAGES",
            "TAGS",
            "SUBNET",
            "VOLUME_POOL",
        ],
        &rows,
    );
    for c in cells.iter().filter(|c| !c.volume_pool_warning.is_empty()) {
        out.push_str(&format!("cell {}: {}\n", c.cell_id, c.volume_pool_warning));
    }
    out
}

/// A cell's volume pool as `USED/SIZE` and, when it may grow, `(max MAX)`; `-`
/// before it is made (or on a cell without volumes).
fn volume_pool(c: &CellResponse) -> String {
    use lattice_specs::volume::format_size;
    if c.volume_pool_bytes == 0 {
        return "-".into();
    }
    let mut s = format!(
        "{}/{}",
        format_size(c.volume_pool_used_bytes),
        format_size(c.volume_pool_bytes)
    );
    if c.volume_pool_max_bytes > c.volume_pool_bytes {
        s.push_str(&format!(" (max {})", format_size(c.volume_pool_max_bytes)));
    }
    if !c.volume_pool_warning.is_empty() {
        s.push_str(" !");
    }
    s
}

pub fn tasks(tasks: &[TaskResponse], now: i64) -> String {
    if tasks.is_empty() {
        return "No tasks: `ltc submit-task FILE.json` runs one.\n".into();
    }
    let mut rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.request.task_guid.clone(),
                t.state.clone(),
                if t.cell_id.is_empty() {
                    "-".into()
                } else {
                    t.cell_id.clone()
                },
                age(t.created_at, now),
                if t.failed {
                    format!("failed: {}", t.failure_reason)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    rows.sort();
    table(&["TASK", "STATE", "CELL", "AGE", "FAILURE"], &rows)
}

pub fn task(t: &TaskResponse, now: i64) -> String {
    let mut out = format!(
        "Task:     {}\nState:    {}\nCell:     {}\nImage:    {}\nCreated:  {} ago\n",
        t.request.task_guid,
        t.state,
        if t.cell_id.is_empty() {
            "-"
        } else {
            &t.cell_id
        },
        t.request.rootfs,
        age(t.created_at, now),
    );
    if t.state == "COMPLETED" || t.state == "RESOLVING" {
        out.push_str(&format!("Failed:   {}\n", t.failed));
        if t.failed {
            out.push_str(&format!("Reason:   {}\n", t.failure_reason));
        }
        if !t.result.is_empty() {
            out.push_str(&format!("Result:   {}\n", t.result.trim_end()));
        }
    }
    out
}

/// Cells and their instances as a picture: one line per cell, one mark per instance.
pub fn picture(cells: &[CellResponse], actuals: &[ActualLrpResponse], color: bool) -> String {
    let mark = |a: &ActualLrpResponse| {
        let (c, code) = match a.state.as_str() {
            "RUNNING" => ('●', "32"),
            "CLAIMED" => ('◐', "33"),
            "CRASHED" => ('✖', "31"),
            _ => ('○', "37"),
        };
        if color {
            format!("\x1b[{code}m{c}\x1b[0m")
        } else {
            c.to_string()
        }
    };
    let width = cells
        .iter()
        .map(|c| c.cell_id.len())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut out = String::new();
    for c in cells {
        let mut here: Vec<_> = actuals.iter().filter(|a| a.cell_id == c.cell_id).collect();
        here.sort_by_key(|a| (&a.process_guid, a.index));
        let marks: String = here.iter().map(|a| mark(a)).collect();
        out.push_str(&format!(
            "{:<width$}  {marks}  ({} instances)\n",
            c.cell_id,
            here.len()
        ));
    }
    let pending: Vec<_> = actuals.iter().filter(|a| a.cell_id.is_empty()).collect();
    if !pending.is_empty() {
        let marks: String = pending.iter().map(|a| mark(a)).collect();
        out.push_str(&format!(
            "{:<width$}  {marks}  ({} waiting for a cell)\n",
            "unplaced",
            pending.len()
        ));
    }
    out.push_str("● running  ◐ starting  ○ waiting  ✖ crashed\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_their_leased_subnet() {
        let leased = CellResponse {
            cell_id: "cell-a".into(),
            subnet: "10.255.3.0/24".into(),
            ..Default::default()
        };
        let by_hand = CellResponse {
            cell_id: "cell-b".into(),
            ..Default::default()
        };
        let out = cells(&[leased, by_hand], &[]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with("TAGS  SUBNET         VOLUME_POOL"),
            "{out}"
        );
        assert!(lines[1].starts_with("cell-a") && lines[1].contains(" 10.255.3.0/24 "));
        assert!(lines[2].starts_with("cell-b") && lines[2].ends_with(" -"));
    }

    #[test]
    fn cells_show_their_volume_pool_its_maximum_and_warning() {
        let cell = |id: &str, size: u64, max: u64, used: u64, warning: &str| CellResponse {
            cell_id: id.into(),
            volume_pool_bytes: size,
            volume_pool_max_bytes: max,
            volume_pool_used_bytes: used,
            volume_pool_warning: warning.into(),
            ..Default::default()
        };
        let out = cells(
            &[
                cell("grows", 20 << 30, 40 << 30, 2 << 30, ""),
                cell(
                    "full",
                    10 << 30,
                    10 << 30,
                    9 << 30,
                    "the volume pool is 90% full",
                ),
                cell("none", 0, 0, 0, ""),
            ],
            &[],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].ends_with(" 2G/20G (max 40G)"), "{out}");
        assert!(lines[2].ends_with(" 9G/10G !"), "{out}");
        assert!(lines[3].ends_with(" -"), "{out}");
        assert_eq!(lines[4], "cell full: the volume pool is 90% full");
        assert_eq!(lines.len(), 5, "{out}");
    }

    #[test]
    fn status_and_list_show_generations_and_the_deployment() {
        use lattice_specs::receptor::rollout::DeploymentJson;
        let d = DesiredLrpResponse {
            request: lattice_specs::receptor::DesiredLrpCreateRequest {
                process_guid: "web".into(),
                instances: 2,
                ..Default::default()
            },
            generation: 3,
            deployment: Some(DeploymentJson {
                state: "rolling".into(),
                target_generation: 3,
                previous_generation: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = |index, generation, presence: &str, draining| ActualLrpResponse {
            process_guid: "web".into(),
            index,
            generation,
            state: "RUNNING".into(),
            presence: presence.into(),
            draining,
            ..Default::default()
        };
        let actuals = [
            a(0, 3, "ORDINARY", false),
            a(0, 2, "REPLACED", true),
            a(1, 2, "ORDINARY", false),
        ];
        let t = Target::parse("127.0.0.1:8888").unwrap();
        let out = status(&d, &actuals, &Usage::new(), &t, 0);
        assert!(
            out.contains("Instances:  2/2 running"),
            "replaced copies are extra: {out}"
        );
        assert!(
            out.contains(
                "Generation: 3\nDeployment: rolling to generation 3 (from 2): 1/2 updated"
            ),
            "{out}"
        );
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip_while(|l| !l.starts_with("INDEX"))
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .take(3)
                    .collect()
            })
            .collect();
        assert_eq!(
            rows,
            [
                vec!["INDEX", "STATE", "GEN"],
                vec!["0", "RUNNING", "3"],
                vec!["0", "RUNNING (REPLACED), draining", "2"],
                vec!["1", "RUNNING", "2"],
            ],
            "{out}"
        );
        let list = apps(&[d], &actuals, &t);
        assert!(
            list.lines()
                .nth(1)
                .unwrap()
                .starts_with("web  2/2      3 (rolling)"),
            "{list}"
        );
    }

    #[test]
    fn tables_align_and_ages_read_well() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq\n");
        let s = 1_000_000_000;
        assert_eq!(age(100 * s, 145 * s), "45s");
        assert_eq!(age(0, 145 * s), "-");
        assert_eq!(age(s, s + 3725 * s), "1h2m");
        assert_eq!(age(s, s + 200 * s), "3m20s");
    }

    #[test]
    fn cpu_is_the_share_of_one_core_between_samples() {
        let u = |g: &str, cpu: f64| ContainerUsage {
            instance_guid: g.into(),
            memory_bytes: 2 << 20,
            cpu_seconds: cpu,
            ..Default::default()
        };
        let got = usage(&[u("a", 1.0)], &[u("a", 1.25), u("b", 3.0)], 0.5);
        assert_eq!(got["a"], (2 << 20, Some(50.0)));
        assert_eq!(got["b"], (2 << 20, None), "no first sample");
    }

    #[test]
    fn the_picture_marks_each_instance_on_its_cell() {
        let cells = vec![CellResponse {
            cell_id: "cell-a".into(),
            ..Default::default()
        }];
        let a = |cell: &str, state: &str| ActualLrpResponse {
            cell_id: cell.into(),
            state: state.into(),
            ..Default::default()
        };
        let p = picture(
            &cells,
            &[
                a("cell-a", "RUNNING"),
                a("cell-a", "CLAIMED"),
                a("", "UNCLAIMED"),
            ],
            false,
        );
        assert!(
            p.starts_with("cell-a      ●◐  (2 instances)\nunplaced    ○  (1 waiting for a cell)\n"),
            "{p}"
        );
    }
}
