use super::*;

fn cell(id: &str, zone: &str, mem: i32) -> CellView {
    let total = Resources {
        memory_mb: mem,
        disk_mb: 10_000,
        containers: 100,
    };
    CellView {
        cell_id: id.into(),
        zone: zone.into(),
        total,
        available: total,
        rootfs_providers: vec![
            ("preloaded".into(), vec!["busybox".into()]),
            ("docker".into(), vec![]),
        ],
        volume_drivers: vec!["local".into()],
        ..Default::default()
    }
}

fn constraints(rootfs: &str, tags: &[&str]) -> Arc<Constraints> {
    Arc::new(Constraints {
        rootfs: rootfs.into(),
        placement_tags: tags.iter().map(|t| t.to_string()).collect(),
        volume_drivers: vec![],
        ..Default::default()
    })
}

fn lrp(guid: &str, index: i32, mem: i32) -> WorkItem {
    WorkItem {
        kind: WorkKind::Lrp {
            process_guid: guid.into(),
            index,
        },
        memory_mb: mem,
        disk_mb: 10,
        constraints: constraints("preloaded:busybox", &[]),
        avoid: vec![],
    }
}

fn task(guid: &str, mem: i32) -> WorkItem {
    WorkItem {
        kind: WorkKind::Task {
            task_guid: guid.into(),
        },
        memory_mb: mem,
        disk_mb: 10,
        constraints: constraints("preloaded:busybox", &[]),
        avoid: vec![],
    }
}

fn cells_of(o: &Outcome, cells: &[CellView]) -> Vec<String> {
    let mut placed = o.placed.clone();
    placed.sort();
    placed
        .into_iter()
        .map(|(_, c)| cells[c].cell_id.clone())
        .collect()
}

#[test]
fn instances_of_one_process_spread_over_cells() {
    let cells = vec![
        cell("a", "z1", 1000),
        cell("b", "z1", 1000),
        cell("c", "z1", 1000),
    ];
    let work: Vec<_> = (0..3).map(|i| lrp("web", i, 100)).collect();
    let o = place(&cells, &work, &AuctionConfig::default());
    let mut got = cells_of(&o, &cells);
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
    // a 4th and 5th instance go to cells with the fewest instances
    let work: Vec<_> = (0..6).map(|i| lrp("web", i, 100)).collect();
    let o = place(&cells, &work, &AuctionConfig::default());
    let mut counts = HashMap::new();
    for c in cells_of(&o, &cells) {
        *counts.entry(c).or_insert(0) += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
}

#[test]
fn the_emptier_cell_wins() {
    let mut cells = vec![cell("busy", "z1", 1000), cell("free", "z1", 1000)];
    cells[0].available.memory_mb = 200;
    let o = place(&cells, &[lrp("web", 0, 100)], &AuctionConfig::default());
    assert_eq!(cells_of(&o, &cells), ["free"]);
}

#[test]
fn starting_containers_weigh_against_a_cell() {
    let mut cells = vec![cell("a", "z1", 1000), cell("b", "z1", 1000)];
    cells[1].available.memory_mb = 900; // b is slightly fuller…
    cells[0].starting = 2; // …but a is busy starting containers
    let o = place(&cells, &[task("t", 10)], &AuctionConfig::default());
    assert_eq!(cells_of(&o, &cells), ["b"]);
}

#[test]
fn existing_instances_of_the_process_count() {
    let mut cells = vec![cell("a", "z1", 1000), cell("b", "z1", 1000)];
    cells[1].lrps = vec!["web".into()];
    cells[0].available.memory_mb = 100; // a is nearly full, but b already runs web
    let o = place(&cells, &[lrp("web", 1, 50)], &AuctionConfig::default());
    assert_eq!(cells_of(&o, &cells), ["a"]);
}

#[test]
fn lrps_spread_across_zones_first() {
    // Zone z1 has two roomy cells, z2 one fuller cell: instances alternate zones.
    let mut cells = vec![
        cell("a1", "z1", 4000),
        cell("a2", "z1", 4000),
        cell("b1", "z2", 4000),
    ];
    cells[2].available.memory_mb = 1000;
    let work: Vec<_> = (0..4).map(|i| lrp("web", i, 100)).collect();
    let o = place(&cells, &work, &AuctionConfig::default());
    let zones: Vec<&str> = (0..4)
        .map(|w| cells[o.cell_of(w).unwrap()].zone.as_str())
        .collect();
    assert_eq!(zones.iter().filter(|z| **z == "z1").count(), 2, "{zones:?}");
    assert_eq!(zones.iter().filter(|z| **z == "z2").count(), 2, "{zones:?}");
}

#[test]
fn resources_are_reserved_as_work_is_placed() {
    let cells = vec![cell("a", "z1", 250)];
    let work: Vec<_> = (0..3).map(|i| task(&format!("t{i}"), 100)).collect();
    let o = place(&cells, &work, &AuctionConfig::default());
    assert_eq!(o.placed.len(), 2);
    assert_eq!(o.failed.len(), 1);
    assert_eq!(
        o.failed[0].1,
        Unplaced::NoRoom("insufficient resources: memory".into())
    );
}

#[test]
fn order_is_index_zero_then_tasks_then_other_indices_largest_first() {
    // Room for exactly two: index 0 of "small" and the task must win over index 1 of "big".
    let mut c = cell("a", "z1", 10_000);
    c.available.containers = 2;
    c.total.containers = 2;
    let work = vec![lrp("big", 1, 500), task("t", 10), lrp("small", 0, 10)];
    let o = place(&[c], &work, &AuctionConfig::default());
    assert!(o.cell_of(1).is_some() && o.cell_of(2).is_some(), "{o:?}");
    assert_eq!(o.reason_of(0), Some("insufficient resources: containers"));
    // larger memory first within a group
    let cells = vec![cell("a", "z1", 600)];
    let work = vec![task("small", 200), task("large", 500)];
    let o = place(&cells, &work, &AuctionConfig::default());
    assert_eq!(o.cell_of(1), Some(0));
    assert_eq!(o.reason_of(0), Some("insufficient resources: memory"));
}

#[test]
fn placement_tags_follow_required_and_optional() {
    let mut cells = vec![
        cell("plain", "z1", 1000),
        cell("gpu", "z1", 1000),
        cell("ssd-opt", "z1", 1000),
    ];
    cells[1].placement_tags = vec!["gpu".into()];
    cells[2].optional_placement_tags = vec!["ssd".into()];
    let mk = |tags: &[&str]| WorkItem {
        constraints: constraints("preloaded:busybox", tags),
        ..task("t", 10)
    };
    let cases: Vec<(&[&str], Result<&str, &str>)> = vec![
        (&[], Ok("plain")), // gpu requires its tag; plain is emptier than nothing else… all equal: first best
        (&["gpu"], Ok("gpu")),
        (&["ssd"], Ok("ssd-opt")),
        (
            &["gpu", "ssd"],
            Err("found no compatible cell with placement tags \"gpu\", \"ssd\""),
        ),
        (
            &["nvme"],
            Err("found no compatible cell with placement tag \"nvme\""),
        ),
    ];
    for (tags, want) in cases {
        let o = place(&cells, &[mk(tags)], &AuctionConfig::default());
        match want {
            Ok(id) if !tags.is_empty() => {
                assert_eq!(cells[o.cell_of(0).unwrap()].cell_id, id, "{tags:?}")
            }
            Ok(_) => assert_ne!(
                cells[o.cell_of(0).unwrap()].cell_id,
                "gpu",
                "untagged work never lands on a cell that requires tags"
            ),
            Err(r) => assert_eq!(o.reason_of(0), Some(r), "{tags:?}"),
        }
    }
}

#[test]
fn rootfs_and_volume_driver_compatibility() {
    let mut cells = vec![cell("a", "z1", 1000)];
    let mk = |rootfs: &str, drivers: &[&str]| WorkItem {
        constraints: Arc::new(Constraints {
            rootfs: rootfs.into(),
            placement_tags: vec![],
            volume_drivers: drivers.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }),
        ..task("t", 10)
    };
    let cases = vec![
        (mk("preloaded:busybox", &[]), None),
        (mk("docker://127.0.0.1:5000/app:1", &[]), None),
        (
            mk("preloaded:ubuntu", &[]),
            Some("found no compatible cell for required rootfs"),
        ),
        (
            mk("oci:/images/app", &[]),
            Some("found no compatible cell for required rootfs"),
        ),
        (mk("preloaded:busybox", &["local"]), None),
        (
            mk("preloaded:busybox", &["nfs"]),
            Some("found no compatible cell with volume driver \"nfs\""),
        ),
    ];
    for (w, want) in cases {
        let o = place(&cells, std::slice::from_ref(&w), &AuctionConfig::default());
        assert_eq!(o.reason_of(0), want, "{:?}", w.constraints);
    }
    cells[0].evacuating = true;
    let o = place(&cells, &[task("t", 1)], &AuctionConfig::default());
    assert_eq!(
        o.reason_of(0),
        Some("found no compatible cell: every cell is evacuating")
    );
    let o = place(&[], &[task("t", 1)], &AuctionConfig::default());
    assert_eq!(
        o.reason_of(0),
        Some("found no compatible cell: no cell is registered")
    );
}

#[test]
fn insufficient_resources_name_what_is_missing() {
    let mut cells = vec![cell("a", "z1", 1000), cell("b", "z1", 100)];
    cells[0].available.disk_mb = 5;
    let mut w = task("t", 500);
    w.disk_mb = 50;
    // a has memory but no disk, b has disk but no memory: neither fits.
    let o = place(&cells, &[w.clone()], &AuctionConfig::default());
    assert_eq!(o.reason_of(0), Some("insufficient resources: memory, disk"));
    w.memory_mb = 5000;
    let o = place(&cells, &[w], &AuctionConfig::default());
    assert_eq!(o.reason_of(0), Some("insufficient resources: memory"));
}

#[test]
fn cells_that_refused_work_are_avoided() {
    let cells = vec![cell("a", "z1", 1000), cell("b", "z1", 1000)];
    let mut w = task("t", 10);
    w.avoid = vec![0];
    let o = place(&cells, &[w.clone()], &AuctionConfig::default());
    assert_eq!(cells_of(&o, &cells), ["b"]);
    w.avoid = vec![0, 1];
    let o = place(&cells, &[w], &AuctionConfig::default());
    assert_eq!(o.reason_of(0), Some("cells a, b refused the work"));
}

#[test]
fn bin_pack_weight_packs_instead_of_spreading() {
    let cells = vec![
        cell("a", "z1", 10_000),
        cell("b", "z1", 10_000),
        cell("c", "z1", 10_000),
    ];
    let work: Vec<_> = (0..5).map(|i| task(&format!("t{i}"), 100)).collect();
    let cfg = AuctionConfig {
        bin_pack_weight: 10.0,
        ..Default::default()
    };
    let o = place(&cells, &work, &cfg);
    assert!(
        o.placed.iter().all(|(_, c)| *c == 0),
        "all on the first cell: {o:?}"
    );
}

#[test]
fn work_with_a_volume_goes_to_the_volumes_cell_or_says_why_not() {
    let mut cells = vec![
        cell("a", "z1", 1000),
        cell("b", "z1", 1000),
        cell("c", "z2", 1000),
    ];
    for c in &mut cells {
        c.volume_drivers = vec!["local".into()];
    }
    let on = |cell: &str, mem: i32| WorkItem {
        constraints: Arc::new(Constraints {
            rootfs: "preloaded:busybox".into(),
            volume_drivers: vec!["local".into()],
            volume_cell: Some((cell.into(), "volume pg".into())),
            ..Default::default()
        }),
        ..task("t", mem)
    };
    let cfg = AuctionConfig::default();
    for _ in 0..5 {
        let o = place(&cells, &[on("b", 10)], &cfg);
        assert_eq!(o.placed[0].1, 1, "always cell b");
    }
    // Its cell gone (or evacuating): the work waits for the cell or the volume to move.
    let o = place(&cells, &[on("gone", 10)], &cfg);
    match &o.failed[0].1 {
        Unplaced::NoRoom(why) => assert!(why.contains("volume pg lives on cell gone"), "{why}"),
        other => panic!("a volume whose cell is gone was given up on: {other:?}"),
    }
    cells[1].evacuating = true;
    let o = place(&cells, &[on("b", 10)], &cfg);
    assert!(matches!(&o.failed[0].1, Unplaced::NoRoom(_)), "{o:?}");
    cells[1].evacuating = false;
    // Its cell there but unable to run it: waiting would not help.
    let providers = std::mem::take(&mut cells[1].rootfs_providers);
    let o = place(&cells, &[on("b", 10)], &cfg);
    match &o.failed[0].1 {
        Unplaced::Incompatible(why) => assert!(why.contains("lacks the rootfs"), "{why}"),
        other => panic!("{other:?}"),
    }
    cells[1].rootfs_providers = providers;
    // Its volume being refilled after a failover: the work waits.
    let mut refilling = on("b", 10);
    refilling.constraints = Arc::new(Constraints {
        volume_wait: Some("volume pg is being refilled".into()),
        ..(*refilling.constraints).clone()
    });
    let o = place(&cells, &[refilling], &cfg);
    assert!(
        matches!(&o.failed[0].1, Unplaced::NoRoom(w) if w.contains("refilled")),
        "{o:?}"
    );
    let o = place(&cells, &[on("b", 5000)], &cfg);
    let why = o.reason_of(0).unwrap();
    assert!(
        why.starts_with("insufficient resources: memory on cell b, which holds volume pg"),
        "{why}"
    );
    let split = WorkItem {
        constraints: Arc::new(Constraints {
            rootfs: "preloaded:busybox".into(),
            volume_drivers: vec!["local".into()],
            volume_cell: Some((
                String::new(),
                "volumes x and y live on different cells".into(),
            )),
            ..Default::default()
        }),
        ..task("t", 10)
    };
    assert_eq!(
        place(&cells, &[split], &cfg).reason_of(0),
        Some("volumes x and y live on different cells")
    );
}

/// Lack of room now means waiting; only what no cell could ever run is refused.
#[test]
fn work_without_room_now_waits_and_work_no_cell_could_run_does_not() {
    let mut c = cell("a", "z1", 1000);
    c.total.containers = 2;
    c.available.containers = 0;
    let o = place(
        std::slice::from_ref(&c),
        &[task("t", 10)],
        &AuctionConfig::default(),
    );
    assert_eq!(
        o.failed,
        [(
            0,
            Unplaced::NoRoom("insufficient resources: containers".into())
        )]
    );
    // Bigger than the cell even empty: waiting would not help.
    let o = place(
        &[c.clone()],
        &[task("big", 5000)],
        &AuctionConfig::default(),
    );
    assert_eq!(
        o.failed,
        [(
            0,
            Unplaced::Incompatible("insufficient resources: memory, containers".into())
        )]
    );
    c.available.containers = 2;
    c.available.memory_mb = 100;
    let o = place(&[c.clone()], &[task("t", 500)], &AuctionConfig::default());
    assert_eq!(
        o.failed,
        [(0, Unplaced::NoRoom("insufficient resources: memory".into()))]
    );
    // No cell at the moment (a cell whose lease lapsed comes back): waiting.
    let o = place(&[], &[task("t", 1)], &AuctionConfig::default());
    assert!(matches!(o.failed[0].1, Unplaced::NoRoom(_)), "{o:?}");
    // Only cells that refused it could take it: waiting too.
    let mut w = task("t", 1);
    w.avoid = vec![0];
    let o = place(&[c.clone()], &[w], &AuctionConfig::default());
    assert_eq!(
        o.failed,
        [(0, Unplaced::NoRoom("cell a refused the work".into()))]
    );
    // No cell offers what it needs: refused.
    let o = place(
        &[c],
        &[WorkItem {
            constraints: constraints("preloaded:ubuntu", &[]),
            ..task("t", 1)
        }],
        &AuctionConfig::default(),
    );
    assert!(matches!(o.failed[0].1, Unplaced::Incompatible(_)), "{o:?}");
}

#[test]
fn among_equals_earlier_work_is_placed_first() {
    let mut c = cell("a", "z1", 1000);
    c.available.containers = 1;
    let work = vec![task("older", 10), task("newer", 10)];
    let o = place(&[c], &work, &AuctionConfig::default());
    assert_eq!(o.cell_of(0), Some(0));
    assert!(o.reason_of(1).is_some());
}
