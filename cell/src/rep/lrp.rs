//! LRP instances: the container an instance runs in, claimed and created, then
//! supervised (the health checks of [`super::health`] driven against the container
//! and the BBS) until it crashes or is told to stop.

use super::health::{start_timeout, Health, Timing, Verdict};
use super::*;

impl<R: Runtime> Rep<R> {
    pub(super) fn lrp_request(
        &self,
        d: &models::DesiredLrp,
        index: i32,
        instance_guid: &str,
    ) -> ContainerRequest {
        let mut env: Vec<(String, String)> = vec![
            ("INSTANCE_INDEX".into(), index.to_string()),
            ("INSTANCE_GUID".into(), instance_guid.into()),
            ("PROCESS_GUID".into(), d.process_guid.clone()),
            ("CELL_ID".into(), self.cfg.cell_id.clone()),
        ];
        if let Some(p) = d.ports.first() {
            env.push(("PORT".into(), p.to_string()));
        }
        env.extend(d.env.iter().map(|e| (e.name.clone(), e.value.clone())));
        let action = match (&d.setup, &d.action) {
            (Some(setup), Some(action)) => models::Action {
                action: Some(A::Serial(models::SerialAction {
                    actions: vec![setup.clone(), action.clone()],
                    ..Default::default()
                })),
            },
            (None, Some(action)) => action.clone(),
            (Some(setup), None) => setup.clone(),
            (None, None) => models::Action::default(),
        };
        let source = if d.log_source.is_empty() {
            "APP"
        } else {
            &d.log_source
        };
        ContainerRequest {
            handle: instance_guid.into(),
            rootfs: d.rootfs.clone(),
            memory_mb: d.memory_mb,
            disk_mb: d.disk_mb,
            cpu_weight: d.cpu_weight,
            max_pids: d.max_pids,
            privileged: d.privileged,
            host_network: d.host_network,
            ports: d.ports.clone(),
            env,
            action,
            log_source: format!("{source}/{index}"),
            volume_mounts: d.volume_mounts.clone(),
            egress_rules: d.egress_rules.clone(),
            tags: [
                ("kind".to_string(), "lrp".to_string()),
                ("process_guid".to_string(), d.process_guid.clone()),
                ("index".to_string(), index.to_string()),
                (
                    "log_guid".to_string(),
                    log_guid_of(&d.log_guid, &d.process_guid),
                ),
                (
                    "desired".to_string(),
                    serde_json::to_string(d).unwrap_or_default(),
                ),
            ]
            .into(),
        }
    }

    #[tracing::instrument(skip(self, d, received), fields(process_guid = %d.process_guid))]
    pub(super) async fn start_lrp(
        self: Arc<Self>,
        d: models::DesiredLrp,
        index: i32,
        instance_guid: String,
        received: Instant,
    ) {
        // What runs is what the BBS stores, whatever the Perform carried.
        let Some(d) = self.stored_lrp(d).await else {
            self.release(&instance_guid);
            return;
        };
        let (key, ik) = self.keys(&d.process_guid, index, &instance_guid);
        let log_guid = log_guid_of(&d.log_guid, &d.process_guid);
        // The instance records the generation it runs: the stored one it starts.
        if let Err(e) = self.bbs.claim_actual_lrp(&key, &ik, d.generation).await {
            tracing::info!(index, "claim refused: {}", e.message);
            self.release(&instance_guid);
            return;
        }
        self.set_phase(&instance_guid, Phase::Claimed);
        self.logs.cell(
            &log_guid,
            format!("Creating container for instance {index}"),
        );
        self.logs.register(&instance_guid, &log_guid);
        let req = self.lrp_request(&d, index, &instance_guid);
        let progress = self.logs.progress(&log_guid);
        match self.exec.create_with_progress(req, &progress).await {
            Ok(info) => {
                self.metrics.starts.inc();
                self.logs.cell(&log_guid, "Successfully created container");
                self.supervise_lrp(info, d, index, false, received).await;
            }
            Err(e) => {
                let reason = format!("failed to create container: {e:#}");
                self.logs.cell(&log_guid, &reason);
                self.crash(&key, &ik, &reason).await;
                self.release(&instance_guid);
            }
        }
    }

    pub(super) async fn crash(
        &self,
        key: &api::ActualLrpRef,
        ik: &models::ActualLrpInstanceKey,
        reason: &str,
    ) {
        self.metrics.crashes.inc();
        tracing::info!(process_guid = %key.process_guid, index = key.index, reason, "instance crashed");
        if let Err(e) = self.bbs.crash_actual_lrp(key, ik, reason).await {
            tracing::info!("crash report refused: {}", e.message);
        }
    }

    /// Watches an LRP container: health checks until RUNNING, then monitoring until it
    /// exits, fails a check or is told to stop (the decisions are [`Health`]'s).
    pub(super) async fn supervise_lrp(
        self: &Arc<Self>,
        info: ContainerInfo,
        d: models::DesiredLrp,
        index: i32,
        already_running: bool,
        received: Instant,
    ) {
        let handle = info.handle().to_string();
        let (key, ik) = self.keys(&d.process_guid, index, &handle);
        let log_guid = log_guid_of(&d.log_guid, &d.process_guid);
        let checks = monitor::checks_for(&d);
        let timeout = start_timeout(d.start_timeout_ms, self.cfg.default_start_timeout);
        let stop = match self.slots.lock().unwrap().get(&handle) {
            Some(s) => s.stop.clone(),
            None => return,
        };
        let net = self.net_info(&info);
        let mut health = Health::new(
            Timing::of(&self.cfg),
            timeout,
            &checks,
            already_running,
            Instant::now(),
        );
        let mut offset = 0;
        let mut signal = self.exec.event_signal(&handle);
        let outcome: Option<String> = loop {
            // Woken by the shim's events; otherwise in time for the next health check.
            let tick = health.wait(Instant::now(), signal.is_live());
            tokio::select! {
                _ = stop.cancelled() => break None,
                _ = signal.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let (events, off) = self.exec.events(&handle, offset);
            offset = off;
            if let Some(reason) = health.on_events(events) {
                break Some(reason);
            }
            if !health.check_due(Instant::now()) {
                continue;
            }
            let result =
                monitor::healthy(&checks, info.ip(), |r| self.exec.command_check(&handle, r)).await;
            match health.on_check(result, Instant::now()) {
                Verdict::ReportRunning => {
                    if !self.report_running(&key, &ik, &net, received).await {
                        break None;
                    }
                    self.logs.cell(
                        &log_guid,
                        format!("Container became healthy (instance {index})"),
                    );
                }
                Verdict::KeepChecking => {}
                Verdict::Crash(reason) => break Some(reason),
            }
        };
        match outcome {
            Some(reason) => {
                self.logs
                    .cell(&log_guid, format!("Instance {index} crashed: {reason}"));
                self.crash(&key, &ik, &reason).await;
            }
            None => {
                // Told to stop (retired, scaled down, removed): make sure the record,
                // if still ours, goes too.
                let _ = self.bbs.remove_actual_lrp(&key, &ik).await;
                self.logs
                    .cell(&log_guid, format!("Stopping instance {index}"));
            }
        }
        self.exec.destroy(&handle).await;
        self.release(&handle);
    }

    /// Reports a newly healthy instance RUNNING; false when the BBS refuses (the
    /// container is then stopped).
    async fn report_running(
        &self,
        key: &api::ActualLrpRef,
        ik: &models::ActualLrpInstanceKey,
        net: &models::ActualLrpNetInfo,
        received: Instant,
    ) -> bool {
        if let Err(e) = self.bbs.start_actual_lrp(key, ik, net).await {
            tracing::info!(
                index = key.index,
                "start refused: {}; stopping the container",
                e.message
            );
            return false;
        }
        self.metrics
            .start_latency
            .observe(received.elapsed().as_secs_f64());
        {
            let mut slots = self.slots.lock().unwrap();
            if let Some(s) = slots.get_mut(&ik.instance_guid) {
                s.net_info = Some(net.clone());
            }
        }
        self.set_phase(&ik.instance_guid, Phase::Running);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{container, rep, Call, FakeRuntime};
    use super::super::fixtures::lrp_slot;
    use super::*;

    fn lrp(handle: &str) -> ContainerInfo {
        container(
            handle,
            &[("kind", "lrp"), ("process_guid", "web"), ("index", "0")],
        )
    }

    fn run_started() -> ShimEvent {
        ShimEvent::RunStarted {
            path: "/app".into(),
            pid: 7,
        }
    }

    #[tokio::test]
    async fn a_workload_s_egress_rules_reach_its_container_request() {
        let rules = vec![models::SecurityGroupRule {
            protocol: "tcp".into(),
            destinations: vec!["10.0.0.0/8".into()],
            ports: vec![5432],
            log: true,
            ..Default::default()
        }];
        let rep = rep(FakeRuntime::new());
        let d = models::DesiredLrp {
            process_guid: "web".into(),
            egress_rules: rules.clone(),
            ..Default::default()
        };
        assert_eq!(rep.lrp_request(&d, 0, "i-0").egress_rules, rules);
        let t = models::Task {
            task_guid: "t".into(),
            definition: Some(models::TaskDefinition {
                egress_rules: rules.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(rep.task_request(&t).egress_rules, rules);
    }

    #[tokio::test]
    async fn an_instance_whose_process_exits_is_crashed_and_destroyed() {
        let fake = FakeRuntime::new();
        let exited = ShimEvent::Exited {
            failed: true,
            reason: "exit status 1".into(),
            stopped: false,
            result: None,
        };
        fake.put(lrp("i-0"), true, vec![run_started(), exited]);
        let rep = rep(fake.clone());
        let (handle, slot) = lrp_slot("web", 0, "i-0", Phase::Claimed, Some(Instant::now()));
        rep.slots.lock().unwrap().insert(handle, slot);
        let d = models::DesiredLrp {
            process_guid: "web".into(),
            ..Default::default()
        };
        rep.supervise_lrp(lrp("i-0"), d, 0, false, Instant::now())
            .await;
        assert_eq!(fake.calls(), vec![Call::Destroy("i-0".into())]);
        assert_eq!(rep.metrics.crashes.get(), 1);
        assert!(rep.slots.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_healthy_instance_the_bbs_will_not_start_is_stopped_and_destroyed() {
        let fake = FakeRuntime::new();
        fake.put(lrp("i-0"), true, vec![run_started()]);
        let rep = rep(fake.clone());
        let (handle, slot) = lrp_slot("web", 0, "i-0", Phase::Claimed, Some(Instant::now()));
        rep.slots.lock().unwrap().insert(handle, slot);
        let check = models::Action {
            action: Some(A::Run(models::RunAction {
                path: "true".into(),
                ..Default::default()
            })),
        };
        let d = models::DesiredLrp {
            process_guid: "web".into(),
            monitor: Some(check),
            ..Default::default()
        };
        rep.supervise_lrp(lrp("i-0"), d, 0, false, Instant::now())
            .await;
        assert_eq!(
            fake.calls(),
            vec![Call::Check("i-0".into()), Call::Destroy("i-0".into())]
        );
        assert_eq!(rep.metrics.crashes.get(), 0);
        assert!(rep.slots.lock().unwrap().is_empty());
    }
}
