//! Re-adoption: a restarted rep takes back the containers its predecessor left
//! running and destroys the dead ones. [`kind_of`], [`adoption`] and [`running_here`]
//! decide; [`Rep::readopt`] reads the containers and the BBS and acts.

use super::*;

/// What becomes of a container found on disk after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Adoption {
    /// Not one the rep made (no kind it knows): destroyed.
    Unknown,
    /// Its shim is gone and it says nothing of how it ended: destroyed.
    Reap,
    /// Taken back and supervised again.
    Adopt(Kind),
}

/// What a container was made for, from the tags the rep left on it.
pub(super) fn kind_of(handle: &str, tags: &BTreeMap<String, String>) -> Option<Kind> {
    match tags.get("kind").map(String::as_str) {
        Some("lrp") => Some(Kind::Lrp {
            process_guid: tags.get("process_guid").cloned().unwrap_or_default(),
            index: tags.get("index").and_then(|i| i.parse().ok()).unwrap_or(0),
            instance_guid: handle.into(),
        }),
        Some("task") => Some(Kind::Task {
            task_guid: handle.into(),
        }),
        _ => None,
    }
}

/// Whether a container's events say its work ended on its own (not stopped).
pub(super) fn ended_on_its_own(events: &[ShimEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            ShimEvent::Exited { stopped: false, .. } | ShimEvent::CreateFailed { .. }
        )
    })
}

/// The fate of a container of `kind` whose shim is `alive` or not. A Task that
/// `ended` while no rep was there says how in its events: it is supervised to its end
/// (its result reported) like a live one.
pub(super) fn adoption(kind: Option<Kind>, alive: bool, ended: bool) -> Adoption {
    match kind {
        None => Adoption::Unknown,
        Some(kind) => {
            let ended_task = ended && matches!(kind, Kind::Task { .. });
            if alive || ended_task {
                Adoption::Adopt(kind)
            } else {
                Adoption::Reap
            }
        }
    }
}

/// Whether the BBS has instance `instance_guid` RUNNING among `actuals`.
pub(super) fn running_here(actuals: &[models::ActualLrp], instance_guid: &str) -> bool {
    actuals.iter().any(|a| {
        a.state() == LrpState::Running
            && a.instance_key
                .as_ref()
                .is_some_and(|k| k.instance_guid == instance_guid)
    })
}

impl<R: Runtime> Rep<R> {
    /// Takes back the containers a previous rep left running; destroys the dead ones.
    pub(super) async fn readopt(self: &Arc<Self>) {
        for info in self.exec.on_disk() {
            let handle = info.handle().to_string();
            let alive = self.exec.shim_pid(&handle).is_some();
            let kind = kind_of(&handle, &info.request.tags);
            let ended = matches!(kind, Some(Kind::Task { .. }))
                && ended_on_its_own(&self.exec.events(&handle, 0).0);
            let kind = match adoption(kind, alive, ended) {
                Adoption::Adopt(kind) => kind,
                Adoption::Unknown => {
                    self.exec.destroy(&handle).await;
                    continue;
                }
                Adoption::Reap => {
                    tracing::info!(handle, "reaping a container whose shim is gone");
                    self.exec.destroy(&handle).await;
                    continue;
                }
            };
            if let Err(e) = self.exec.adopt(&info).await {
                tracing::warn!(handle, "cannot re-adopt: {e:#}; destroying it");
                self.exec.destroy(&handle).await;
                continue;
            }
            self.supervise_adopted(info, kind).await;
        }
    }

    /// Holds a slot for an adopted container and supervises it again.
    async fn supervise_adopted(self: &Arc<Self>, info: ContainerInfo, kind: Kind) {
        let handle = info.handle().to_string();
        let tags = &info.request.tags;
        let log_guid = tags.get("log_guid").cloned().unwrap_or_default();
        self.logs.register(&handle, &log_guid);
        let slot = Slot {
            kind: kind.clone(),
            memory_mb: info.request.memory_mb,
            disk_mb: info.request.disk_mb,
            phase: Phase::Claimed,
            owned_since: Some(Instant::now()),
            stop: CancellationToken::new(),
            net_info: Some(self.net_info(&info)),
        };
        self.slots.lock().unwrap().insert(handle.clone(), slot);
        tracing::info!(handle, "re-adopted a running container");
        let rep = self.clone();
        match kind {
            Kind::Lrp {
                process_guid,
                index,
                ..
            } => {
                let d: models::DesiredLrp = tags
                    .get("desired")
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default();
                let running = self.is_running_here(&process_guid, index, &handle).await;
                if running {
                    self.set_phase(&handle, Phase::Running);
                }
                tokio::spawn(async move {
                    rep.supervise_lrp(info, d, index, running, Instant::now())
                        .await
                });
            }
            Kind::Task { .. } => {
                tokio::spawn(async move { rep.supervise_task(info).await });
            }
        }
    }

    /// Whether the BBS has this instance RUNNING (false when it cannot be asked).
    pub(super) async fn is_running_here(
        &self,
        process_guid: &str,
        index: i32,
        instance_guid: &str,
    ) -> bool {
        let Ok(actuals) = self.bbs.actual_lrps("", process_guid, Some(index)).await else {
            return false;
        };
        running_here(&actuals, instance_guid)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_kind_comes_from_the_tags_the_rep_left() {
        let lrp = tags(&[("kind", "lrp"), ("process_guid", "web"), ("index", "3")]);
        assert_eq!(
            kind_of("i-3", &lrp),
            Some(Kind::Lrp {
                process_guid: "web".into(),
                index: 3,
                instance_guid: "i-3".into()
            })
        );
        assert_eq!(
            kind_of("t-1", &tags(&[("kind", "task"), ("task_guid", "x")])),
            Some(Kind::Task {
                task_guid: "t-1".into()
            })
        );
        assert_eq!(kind_of("c", &tags(&[])), None);
        assert_eq!(kind_of("c", &tags(&[("kind", "sidecar")])), None);
        let bad_index = tags(&[("kind", "lrp"), ("process_guid", "web"), ("index", "x")]);
        assert!(matches!(
            kind_of("i-0", &bad_index),
            Some(Kind::Lrp { index: 0, .. })
        ));
    }

    #[test]
    fn live_containers_are_adopted_dead_ones_reaped_unknown_ones_destroyed() {
        let lrp = Kind::Lrp {
            process_guid: "web".into(),
            index: 0,
            instance_guid: "i-0".into(),
        };
        let task = Kind::Task {
            task_guid: "t-1".into(),
        };
        assert_eq!(
            adoption(Some(lrp.clone()), true, false),
            Adoption::Adopt(lrp.clone())
        );
        assert_eq!(adoption(Some(lrp.clone()), false, false), Adoption::Reap);
        // An LRP that ended is reaped all the same: its instance is restarted elsewhere.
        assert_eq!(adoption(Some(lrp), false, true), Adoption::Reap);
        assert_eq!(
            adoption(Some(task.clone()), true, false),
            Adoption::Adopt(task.clone())
        );
        // A Task that ended while no rep was there is adopted to report its result.
        assert_eq!(
            adoption(Some(task.clone()), false, true),
            Adoption::Adopt(task.clone())
        );
        assert_eq!(adoption(Some(task), false, false), Adoption::Reap);
        assert_eq!(adoption(None, true, false), Adoption::Unknown);
    }

    #[test]
    fn only_work_that_ended_on_its_own_counts_as_ended() {
        assert!(!ended_on_its_own(&[]));
        assert!(ended_on_its_own(&[clean_exit(false)]));
        assert!(!ended_on_its_own(&[clean_exit(true), ShimEvent::Destroyed]));
        assert!(ended_on_its_own(&[ShimEvent::CreateFailed {
            reason: "no image".into()
        }]));
    }

    #[test]
    fn an_instance_is_running_here_only_if_the_bbs_says_so_for_its_guid() {
        let actuals = vec![
            actual("web", 0, "i-old", CELL, LrpState::Running),
            actual("web", 0, "i-claimed", CELL, LrpState::Claimed),
        ];
        assert!(running_here(&actuals, "i-old"));
        assert!(!running_here(&actuals, "i-claimed"));
        assert!(!running_here(&actuals, "i-unknown"));
        assert!(!running_here(&[], "i-old"));
    }
}

#[cfg(test)]
mod runner_tests {
    use super::super::fake::{container, eventually, rep, Call, FakeRuntime};
    use super::*;

    #[tokio::test]
    async fn readopt_takes_back_live_containers_and_destroys_the_rest() {
        let fake = FakeRuntime::new();
        fn lrp(i: &'static str) -> [(&'static str, &'static str); 3] {
            [("kind", "lrp"), ("process_guid", "web"), ("index", i)]
        }
        let task = [("kind", "task"), ("log_guid", "t")];
        fake.put(container("c-unknown", &[]), true, vec![]);
        fake.put(container("i-dead", &lrp("0")), false, vec![]);
        fake.put(container("i-refused", &lrp("1")), true, vec![]);
        fake.refuse_adopt("i-refused");
        fake.put(container("i-live", &lrp("2")), true, vec![]);
        fake.put(container("t-live", &task), true, vec![]);
        let ended = ShimEvent::Exited {
            failed: false,
            reason: String::new(),
            stopped: false,
            result: Some("42".into()),
        };
        fake.put(container("t-ended", &task), false, vec![ended]);
        let rep = rep(fake.clone());
        rep.readopt().await;

        let calls = fake.calls();
        for destroyed in ["c-unknown", "i-dead", "i-refused"] {
            assert!(
                calls.contains(&Call::Destroy(destroyed.into())),
                "{calls:?}"
            );
        }
        for adopted in ["i-refused", "i-live", "t-live", "t-ended"] {
            assert!(calls.contains(&Call::Adopt(adopted.into())), "{calls:?}");
        }
        assert!(!calls.contains(&Call::Adopt("c-unknown".into())));
        assert!(!calls.contains(&Call::Adopt("i-dead".into())));
        {
            let slots = rep.slots.lock().unwrap();
            let live = &slots["i-live"];
            // The BBS could not say it runs: supervised as a starting instance.
            assert_eq!(live.phase, Phase::Claimed);
            assert_eq!(
                live.kind,
                Kind::Lrp {
                    process_guid: "web".into(),
                    index: 2,
                    instance_guid: "i-live".into()
                }
            );
            assert!(slots.contains_key("t-live"));
            assert!(!slots.contains_key("i-refused"));
            assert!(!slots.contains_key("i-dead"));
        }
        // The Task that ended while no rep was there is supervised to its end: its
        // result (from the shim, no file read) reported, its container destroyed.
        assert!(eventually(|| !rep.slots.lock().unwrap().contains_key("t-ended")).await);
        let calls = fake.calls();
        assert!(calls.contains(&Call::Destroy("t-ended".into())));
        assert!(!calls.iter().any(|c| matches!(c, Call::ReadFile(..))));
        assert!(!calls.contains(&Call::Destroy("t-live".into())));
        assert!(!calls.contains(&Call::Destroy("i-live".into())));
    }
}
