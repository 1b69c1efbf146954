//! The placement core: a pure function of (cell states, work) → (placements,
//! failures). No I/O; the auction runner fetches states and sends work.
//!
//! For each piece of work, in order (index-0 LRP instances, then tasks, then
//! the other LRP indices; larger memory first within each group):
//! 1. keep the cells that can run it: not evacuating, offering its rootfs,
//!    with compatible placement tags (cell's required ⊆ work's tags ⊆ cell's
//!    required ∪ optional) and its volume drivers;
//! 2. keep those with room (memory, disk, a container slot);
//! 3. score each, lowest wins (Diego's function, below), an LRP going first
//!    to the zone holding the fewest of its instances;
//! 4. reserve the resources in this in-memory view before the next decision.
//!
//! ```text
//! score = ((1−mem'/mem) + (1−disk'/disk) + (1−slots'/slots)) / 3
//!       + 0.25 × containers starting on the cell
//!       + 1000 × instances of the same process on the cell
//!       + bin_pack_weight × cell ordinal
//! ```
//! where `x'` is what remains of `x` after placing. Work that fits nowhere
//! gets a precise reason. Where new volumes go is decided in [`volumes`].

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use lattice_specs::rootfs::RootFs;

pub mod volumes;

/// Memory (MB), disk (MB) and container slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
}

/// What the auction knows of a cell.
#[derive(Debug, Clone, Default)]
pub struct CellView {
    pub cell_id: String,
    pub zone: String,
    pub total: Resources,
    pub available: Resources,
    /// Provider name → properties (e.g. "preloaded" → ["busybox"]).
    pub rootfs_providers: Vec<(String, Vec<String>)>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    pub volume_drivers: Vec<String>,
    /// Process guids of the LRP instances on the cell (one entry per instance).
    pub lrps: Vec<Arc<str>>,
    pub starting: u32,
    pub evacuating: bool,
}

/// What a piece of work needs from a cell besides resources. Shared between
/// work with the same needs, so compatibility is computed once per auction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Constraints {
    pub rootfs: String,
    pub placement_tags: Vec<String>,
    pub volume_drivers: Vec<String>,
    /// The cell holding the work's volumes, and the volumes (for messages). An empty
    /// cell id: the volumes live on different cells, the message says which.
    pub volume_cell: Option<(String, String)>,
    /// Why the work's volume cannot be mounted yet (a failover refills it from its
    /// backup, and only the refilling task mounts it meanwhile): the work waits.
    pub volume_wait: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkKind {
    Lrp { process_guid: Arc<str>, index: i32 },
    Task { task_guid: String },
}

#[derive(Debug, Clone)]
pub struct WorkItem {
    pub kind: WorkKind,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub constraints: Arc<Constraints>,
    /// Cells (by index into the auction's cells) that refused this work before.
    pub avoid: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuctionConfig {
    /// Weight of containers already starting on a cell (Diego: 0.25).
    pub starting_weight: f64,
    /// Penalty per instance of the same process already on a cell (Diego: 1000).
    pub same_process_weight: f64,
    /// Added per cell ordinal: > 0 packs work onto the first cells instead of spreading.
    pub bin_pack_weight: f64,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        AuctionConfig {
            starting_weight: 0.25,
            same_process_weight: 1000.0,
            bin_pack_weight: 0.0,
        }
    }
}

/// Why a piece of work was not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaced {
    /// Some cell could run it, but none has room for it now (or only cells that
    /// refused it do, or no cell is there to take it at the moment): it waits and is
    /// tried again later.
    NoRoom(String),
    /// No cell could ever run it as the cells are: none offers its rootfs, placement
    /// tags or volume drivers, or none is big enough even when empty.
    Incompatible(String),
}

impl Unplaced {
    /// What the user is told.
    pub fn reason(&self) -> &str {
        match self {
            Unplaced::NoRoom(r) | Unplaced::Incompatible(r) => r,
        }
    }
}

impl std::fmt::Display for Unplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Work placed and work refused, by index into the input work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub placed: Vec<(usize, usize)>,
    pub failed: Vec<(usize, Unplaced)>,
}

impl Outcome {
    pub fn cell_of(&self, work: usize) -> Option<usize> {
        self.placed
            .iter()
            .find(|(w, _)| *w == work)
            .map(|(_, c)| *c)
    }
    pub fn reason_of(&self, work: usize) -> Option<&str> {
        self.failed
            .iter()
            .find(|(w, _)| *w == work)
            .map(|(_, r)| r.reason())
    }
}

fn offers_rootfs(cell: &CellView, rootfs: &RootFs) -> bool {
    let provider = rootfs.provider();
    cell.rootfs_providers.iter().any(|(name, props)| {
        name == provider
            && match rootfs {
                RootFs::Preloaded { name } => props.iter().any(|p| p == name),
                _ => true,
            }
    })
}

/// required ⊆ work ⊆ required ∪ optional
fn tags_fit(cell: &CellView, tags: &[String]) -> bool {
    cell.placement_tags.iter().all(|t| tags.contains(t))
        && tags
            .iter()
            .all(|t| cell.placement_tags.contains(t) || cell.optional_placement_tags.contains(t))
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which cells can run work with these constraints, or why none can. No cell at all
/// (none registered, or every one evacuating), or no live cell where the work's volume
/// lives, is a matter of waiting, like no room: a cell whose lease lapsed registers
/// again, an evacuated one is replaced, a volume with failover moves.
fn compatible(cells: &[CellView], c: &Constraints) -> Result<Vec<bool>, Unplaced> {
    if let Some(why) = &c.volume_wait {
        return Err(Unplaced::NoRoom(why.clone()));
    }
    if cells.is_empty() {
        return Err(Unplaced::NoRoom(
            "found no compatible cell: no cell is registered".into(),
        ));
    }
    let live: Vec<bool> = cells.iter().map(|cell| !cell.evacuating).collect();
    if !live.iter().any(|x| *x) {
        return Err(Unplaced::NoRoom(
            "found no compatible cell: every cell is evacuating".into(),
        ));
    }
    if let Some((cell_id, volumes)) = &c.volume_cell {
        let here = |cell: &CellView| &cell.cell_id == cell_id && !cell.evacuating;
        if !cell_id.is_empty() && !cells.iter().any(here) {
            // A cell comes back once its lease is renewed; a volume with failover
            // moves: waiting helps, so the work is tried again, not given up.
            return Err(Unplaced::NoRoom(format!(
                "{volumes} lives on cell {cell_id}, which is gone or evacuating: the work waits for the cell to return or the volume to move"
            )));
        }
    }
    compatible_live(cells, &live, c).map_err(Unplaced::Incompatible)
}

/// [`compatible`] past the live cells (`live`): rootfs, tags, drivers, volumes.
fn compatible_live(
    cells: &[CellView],
    live: &[bool],
    c: &Constraints,
) -> Result<Vec<bool>, String> {
    let rootfs = RootFs::parse(&c.rootfs).map_err(|e| e.to_string())?;
    let by_rootfs: Vec<bool> = cells
        .iter()
        .zip(live)
        .map(|(cell, l)| *l && offers_rootfs(cell, &rootfs))
        .collect();
    if !by_rootfs.iter().any(|x| *x) {
        return Err("found no compatible cell for required rootfs".into());
    }
    let by_tags: Vec<bool> = cells
        .iter()
        .zip(&by_rootfs)
        .map(|(cell, ok)| *ok && tags_fit(cell, &c.placement_tags))
        .collect();
    if !by_tags.iter().any(|x| *x) {
        return Err(match c.placement_tags.len() {
            0 => {
                "found no compatible cell without placement tags (every cell requires some)".into()
            }
            1 => format!(
                "found no compatible cell with placement tag {:?}",
                c.placement_tags[0]
            ),
            _ => format!(
                "found no compatible cell with placement tags {}",
                quote_list(&c.placement_tags)
            ),
        });
    }
    let all: Vec<bool> = cells
        .iter()
        .zip(&by_tags)
        .map(|(cell, ok)| {
            *ok && c
                .volume_drivers
                .iter()
                .all(|d| cell.volume_drivers.contains(d))
        })
        .collect();
    if !all.iter().any(|x| *x) {
        let missing: Vec<String> = c
            .volume_drivers
            .iter()
            .filter(|d| !cells.iter().any(|cell| cell.volume_drivers.contains(d)))
            .cloned()
            .collect();
        let named = if missing.is_empty() {
            c.volume_drivers.clone()
        } else {
            missing
        };
        return Err(format!(
            "found no compatible cell with volume driver {}",
            quote_list(&named)
        ));
    }
    if let Some((cell_id, volumes)) = &c.volume_cell {
        if cell_id.is_empty() {
            return Err(volumes.clone());
        }
        let on: Vec<bool> = cells
            .iter()
            .zip(&all)
            .map(|(cell, ok)| *ok && &cell.cell_id == cell_id)
            .collect();
        if !on.iter().any(|x| *x) {
            return Err(format!(
                "{volumes} lives on cell {cell_id}, which lacks the rootfs or placement tags this work needs"
            ));
        }
        return Ok(on);
    }
    Ok(all)
}

fn group(w: &WorkItem) -> u8 {
    match &w.kind {
        WorkKind::Lrp { index: 0, .. } => 0,
        WorkKind::Task { .. } => 1,
        WorkKind::Lrp { .. } => 2,
    }
}

/// Whether some compatible cell (not avoided) had each resource the work needs.
#[derive(Debug, Clone, Copy)]
struct Fits {
    memory: bool,
    disk: bool,
    slot: bool,
}

/// Why `w` went nowhere: only cells that refused it could take it; or resources
/// ran short now (work waits: [`Unplaced::NoRoom`]); or no compatible cell is big
/// enough even empty ([`Unplaced::Incompatible`]: waiting would not help).
fn why_not(
    cells: &[CellView],
    avail: &[Resources],
    compat: &[bool],
    w: &WorkItem,
    avoided: &[usize],
    fits: Fits,
) -> Unplaced {
    if !avoided.is_empty() && !fits.memory && !fits.disk && !fits.slot {
        // Nothing else was even a candidate: only the cells that refused it could take it.
        let names: Vec<&str> = avoided.iter().map(|c| cells[*c].cell_id.as_str()).collect();
        return Unplaced::NoRoom(format!(
            "{} {} refused the work",
            if names.len() == 1 { "cell" } else { "cells" },
            names.join(", ")
        ));
    }
    let mut short: Vec<&str> = vec![];
    if !fits.memory {
        short.push("memory");
    }
    if !fits.disk {
        short.push("disk");
    }
    if !fits.slot {
        short.push("containers");
    }
    if short.is_empty() {
        // Each resource exists somewhere, but never all together.
        short = vec!["memory", "disk", "containers"]
            .into_iter()
            .filter(|r| {
                (0..cells.len()).any(|c| {
                    compat[c]
                        && match *r {
                            "memory" => avail[c].memory_mb < w.memory_mb,
                            "disk" => avail[c].disk_mb < w.disk_mb,
                            _ => avail[c].containers < 1,
                        }
                })
            })
            .collect();
    }
    let mut why = format!("insufficient resources: {}", short.join(", "));
    if let Some((cell_id, volumes)) = &w.constraints.volume_cell {
        why.push_str(&format!(
            " on cell {cell_id}, which holds {volumes} (a volume stays on its cell: free room there, or restore a backup into a volume on another cell)"
        ));
    }
    // Room that frees up can only help if some compatible cell is big enough at all.
    let could_ever_fit = (0..cells.len()).any(|c| {
        let t = cells[c].total;
        compat[c] && t.memory_mb >= w.memory_mb && t.disk_mb >= w.disk_mb && t.containers >= 1
    });
    if could_ever_fit {
        Unplaced::NoRoom(why)
    } else {
        Unplaced::Incompatible(why)
    }
}

/// The placement's view while it decides: what remains of each cell, and where
/// each process of the batch runs, updated as work is placed.
struct Placement<'a> {
    cells: &'a [CellView],
    cfg: &'a AuctionConfig,
    /// What each cell has left.
    avail: Vec<Resources>,
    /// 1 / total memory, disk and slots of each cell (0 for a total of 0).
    inv_total: Vec<[f64; 3]>,
    /// Containers starting on each cell, the work placed so far included.
    starting: Vec<f64>,
    /// Each cell's zone, numbered from 0.
    cell_zone: Vec<usize>,
    zone_count: usize,
    /// Where each process of this batch runs: (cell, instances).
    hosts: HashMap<Arc<str>, Vec<(usize, u32)>>,
    /// Scratch for one decision: instances of its process per cell and per zone,
    /// and each zone's best (score, cell).
    same_process: Vec<u32>,
    per_zone: Vec<u32>,
    best: Vec<(f64, usize)>,
}

impl<'a> Placement<'a> {
    fn new(cells: &'a [CellView], work: &[WorkItem], cfg: &'a AuctionConfig) -> Placement<'a> {
        let inv = |t: i32| if t > 0 { 1.0 / t as f64 } else { 0.0 };
        let inv_total = cells
            .iter()
            .map(|c| {
                [
                    inv(c.total.memory_mb),
                    inv(c.total.disk_mb),
                    inv(c.total.containers),
                ]
            })
            .collect();
        let mut zones: HashMap<&str, usize> = HashMap::new();
        let cell_zone: Vec<usize> = cells
            .iter()
            .map(|c| {
                let next = zones.len();
                *zones.entry(c.zone.as_str()).or_insert(next)
            })
            .collect();
        let zone_count = zones.len().max(1);
        let mut hosts: HashMap<Arc<str>, Vec<(usize, u32)>> = HashMap::new();
        for w in work {
            if let WorkKind::Lrp { process_guid, .. } = &w.kind {
                hosts.entry(process_guid.clone()).or_default();
            }
        }
        for (ci, cell) in cells.iter().enumerate() {
            for p in &cell.lrps {
                if let Some(h) = hosts.get_mut(p) {
                    match h.iter_mut().find(|(c, _)| *c == ci) {
                        Some((_, k)) => *k += 1,
                        None => h.push((ci, 1)),
                    }
                }
            }
        }
        Placement {
            cells,
            cfg,
            avail: cells.iter().map(|c| c.available).collect(),
            inv_total,
            starting: cells.iter().map(|c| c.starting as f64).collect(),
            cell_zone,
            zone_count,
            hosts,
            same_process: vec![0; cells.len()],
            per_zone: vec![0; zone_count],
            best: vec![(f64::INFINITY, usize::MAX); zone_count],
        }
    }

    /// The cell for `w` among the `compat`ible ones (lowest score, in the zone
    /// holding the fewest instances of its process), or why there is none.
    fn choose(&mut self, w: &WorkItem, compat: &[bool]) -> Result<usize, Unplaced> {
        let process_hosts = match &w.kind {
            WorkKind::Lrp { process_guid, .. } => self.hosts.get(process_guid),
            WorkKind::Task { .. } => None,
        };
        self.per_zone.iter_mut().for_each(|z| *z = 0);
        if let Some(h) = process_hosts {
            for &(c, k) in h {
                self.same_process[c] = k;
                self.per_zone[self.cell_zone[c]] += k;
            }
        }
        self.best
            .iter_mut()
            .for_each(|b| *b = (f64::INFINITY, usize::MAX));
        let mut fits = Fits {
            memory: false,
            disk: false,
            slot: false,
        };
        let mut avoided: Vec<usize> = vec![];
        // One entry per cell.
        for (c, &ok) in compat.iter().enumerate() {
            if !ok {
                continue;
            }
            if w.avoid.contains(&c) {
                avoided.push(c);
                continue;
            }
            let a = self.avail[c];
            let (mem, disk, slots) = (
                a.memory_mb - w.memory_mb,
                a.disk_mb - w.disk_mb,
                a.containers - 1,
            );
            fits.memory |= mem >= 0;
            fits.disk |= disk >= 0;
            fits.slot |= slots >= 0;
            if mem < 0 || disk < 0 || slots < 0 {
                continue;
            }
            let score = self.score(c, [mem, disk, slots]);
            let z = self.cell_zone[c];
            if score < self.best[z].0 {
                self.best[z] = (score, c);
            }
        }
        if let Some(h) = process_hosts {
            for &(c, _) in h {
                self.same_process[c] = 0;
            }
        }
        // The zone with the fewest instances of this process, then the best score.
        let (best, per_zone) = (&self.best, &self.per_zone);
        let chosen = (0..self.zone_count)
            .filter(|&z| best[z].1 != usize::MAX)
            .min_by(|&a, &b| {
                per_zone[a]
                    .cmp(&per_zone[b])
                    .then(best[a].0.total_cmp(&best[b].0))
            })
            .map(|z| best[z].1);
        chosen.ok_or_else(|| why_not(self.cells, &self.avail, compat, w, &avoided, fits))
    }

    /// Cell `c`'s score (lower is better) with `remaining` memory, disk and slots
    /// after the work is placed on it (Diego's function, see the module's doc).
    fn score(&self, c: usize, remaining: [i32; 3]) -> f64 {
        let t = &self.inv_total[c];
        let [mem, disk, slots] = remaining;
        let resources =
            ((1.0 - mem as f64 * t[0]) + (1.0 - disk as f64 * t[1]) + (1.0 - slots as f64 * t[2]))
                / 3.0;
        resources
            + self.cfg.starting_weight * self.starting[c]
            + self.cfg.same_process_weight * self.same_process[c] as f64
            + self.cfg.bin_pack_weight * c as f64
    }

    /// Reserve `w`'s resources on cell `c` before the next decision.
    fn reserve(&mut self, w: &WorkItem, c: usize) {
        self.avail[c].memory_mb -= w.memory_mb;
        self.avail[c].disk_mb -= w.disk_mb;
        self.avail[c].containers -= 1;
        self.starting[c] += 1.0;
        if let WorkKind::Lrp { process_guid, .. } = &w.kind {
            let h = self
                .hosts
                .get_mut(process_guid)
                .expect("every batch process has an entry");
            match h.iter_mut().find(|(hc, _)| *hc == c) {
                Some((_, k)) => *k += 1,
                None => h.push((c, 1)),
            }
        }
    }
}

/// Place `work` on `cells`.
pub fn place(cells: &[CellView], work: &[WorkItem], cfg: &AuctionConfig) -> Outcome {
    let mut out = Outcome::default();
    let mut placement = Placement::new(cells, work, cfg);
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|&i| (group(&work[i]), Reverse(work[i].memory_mb)));
    let mut compat_cache: HashMap<Arc<Constraints>, Result<Vec<bool>, Unplaced>> = HashMap::new();
    for i in order {
        let w = &work[i];
        let compat = compat_cache
            .entry(w.constraints.clone())
            .or_insert_with(|| compatible(cells, &w.constraints));
        let compat = match compat {
            Ok(c) => c,
            Err(reason) => {
                out.failed.push((i, reason.clone()));
                continue;
            }
        };
        match placement.choose(w, compat) {
            Ok(c) => {
                placement.reserve(w, c);
                out.placed.push((i, c));
            }
            Err(why) => out.failed.push((i, why)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
