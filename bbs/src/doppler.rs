//! Doppler's container metrics (`GET /apps/GUID/containermetrics`, what the original
//! `ltc status` shows as CPU and memory): one latest metric per running instance of an
//! app, from the cells' container usage (`crate::usage`).
//!
//! Cells report CPU as seconds used so far; doppler reports a percentage of one core.
//! It is the CPU time used between two samples of the same container over the time
//! between them: the previous request's sample when it is at most
//! [`SAMPLE_REUSE`] old (so `ltc status --rate 2s` shows each interval's use), else
//! a second sample taken [`SECOND_SAMPLE`] after the first. The samples kept are
//! bounded ([`MAX_SAMPLES`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_specs::dropsonde::{cpu_percentage, CpuSample, InstanceMetric};
use lattice_specs::receptor::ContainerUsage;

/// Wait before the second sample of an instance with no usable earlier one.
pub const SECOND_SAMPLE: Duration = Duration::from_millis(500);
/// How old a kept sample may be and still be the start of the interval measured.
pub const SAMPLE_REUSE: Duration = Duration::from_secs(60);
/// Samples kept (one per instance asked about); past it the stale ones go, then all.
pub const MAX_SAMPLES: usize = 10_000;

/// The latest CPU sample of each instance asked about (instance guid → sample).
#[derive(Clone, Default)]
pub struct CpuSamples(Arc<Mutex<HashMap<String, CpuSample>>>);

impl CpuSamples {
    /// The usable earlier samples of `guids` at time `now` (Unix nanoseconds).
    fn recent(&self, guids: impl Iterator<Item = String>, now: i64) -> HashMap<String, CpuSample> {
        let kept = self.0.lock().unwrap();
        guids
            .filter_map(|g| {
                let s = *kept.get(&g)?;
                (now - s.0 <= SAMPLE_REUSE.as_nanos() as i64).then_some((g, s))
            })
            .collect()
    }

    fn record(&self, usage: &[ContainerUsage], at: i64) {
        let mut kept = self.0.lock().unwrap();
        for u in usage {
            kept.insert(u.instance_guid.clone(), (at, u.cpu_seconds));
        }
        if kept.len() > MAX_SAMPLES {
            let horizon = at - SAMPLE_REUSE.as_nanos() as i64;
            kept.retain(|_, s| s.0 >= horizon);
        }
        if kept.len() > MAX_SAMPLES {
            kept.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The metrics of `instances` (instance guid → index) from `usage` sampled at `at`,
/// CPU measured from `before`'s samples (0 where there is none to measure from),
/// ordered by index. Containers that are not among `instances` are left out.
pub fn metrics(
    application_id: &str,
    instances: &HashMap<String, i32>,
    usage: &[ContainerUsage],
    at: i64,
    before: &HashMap<String, CpuSample>,
) -> Vec<InstanceMetric> {
    let mut out: Vec<InstanceMetric> = usage
        .iter()
        .filter_map(|u| {
            let index = *instances.get(&u.instance_guid)?;
            let cpu = before
                .get(&u.instance_guid)
                .and_then(|b| cpu_percentage(*b, (at, u.cpu_seconds)))
                .unwrap_or(0.0);
            Some(InstanceMetric {
                application_id: application_id.to_string(),
                index,
                cpu_percentage: cpu,
                memory_bytes: u.memory_bytes,
                disk_bytes: u.disk_bytes,
                timestamp: at,
            })
        })
        .collect();
    out.sort_by_key(|m| m.index);
    out.dedup_by_key(|m| m.index);
    out
}

/// Whether every instance in `usage` has an earlier sample to measure CPU from.
fn measurable(usage: &[ContainerUsage], at: i64, before: &HashMap<String, CpuSample>) -> bool {
    usage.iter().all(|u| {
        before
            .get(&u.instance_guid)
            .and_then(|b| cpu_percentage(*b, (at, u.cpu_seconds)))
            .is_some()
    })
}

/// Samples the cells (`sample`, once or twice) and answers with the metrics of
/// `instances`, keeping the samples in `kept` for the next request.
pub async fn container_metrics<F, Fut>(
    application_id: &str,
    instances: &HashMap<String, i32>,
    kept: &CpuSamples,
    second_after: Duration,
    sample: F,
) -> Vec<InstanceMetric>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<ContainerUsage>>,
{
    if instances.is_empty() {
        return vec![];
    }
    let mut usage = sample().await;
    let mut at = lattice_specs::now_nanos();
    let mut before = kept.recent(instances.keys().cloned(), at);
    if !measurable(&usage, at, &before) {
        // Where nothing earlier is kept, this first sample starts the interval.
        for u in &usage {
            before
                .entry(u.instance_guid.clone())
                .or_insert((at, u.cpu_seconds));
        }
        tokio::time::sleep(second_after).await;
        usage = sample().await;
        at = lattice_specs::now_nanos();
    }
    kept.record(&usage, at);
    metrics(application_id, instances, &usage, at, &before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(guid: &str, cpu: f64) -> ContainerUsage {
        ContainerUsage {
            instance_guid: guid.into(),
            cell_id: "cell-1".into(),
            memory_bytes: 10,
            cpu_seconds: cpu,
            disk_bytes: 20,
        }
    }

    #[test]
    fn metrics_are_per_known_instance_in_index_order() {
        let instances = HashMap::from([("b".to_string(), 1), ("a".to_string(), 0)]);
        let usage = [used("b", 3.0), used("stranger", 1.0), used("a", 1.0)];
        let before = HashMap::from([("b".to_string(), (0, 1.0))]);
        let m = metrics("web", &instances, &usage, 4_000_000_000, &before);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].index, m[0].cpu_percentage), (0, 0.0));
        assert_eq!((m[1].index, m[1].cpu_percentage), (1, 50.0));
        assert_eq!((m[1].memory_bytes, m[1].disk_bytes), (10, 20));
        assert!(m.iter().all(|x| x.application_id == "web"));
    }

    #[tokio::test]
    async fn a_second_sample_only_without_a_recent_first() {
        let instances = HashMap::from([("a".to_string(), 0)]);
        let kept = CpuSamples::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let sample = || {
            // Each sample has used 0.1 s more CPU.
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { vec![used("a", 1.0 + 0.1 * f64::from(n))] }
        };
        let m =
            container_metrics("web", &instances, &kept, Duration::from_millis(200), sample).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(m.len(), 1);
        // 0.1 s of CPU over at least 200 ms: at most 50 %.
        assert!(m[0].cpu_percentage > 0.0 && m[0].cpu_percentage <= 50.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again =
            container_metrics("web", &instances, &kept, Duration::from_millis(200), sample).await;
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the kept sample starts the interval"
        );
        assert!(again[0].cpu_percentage > 0.0);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn kept_samples_are_bounded() {
        let kept = CpuSamples::default();
        let many: Vec<_> = (0..MAX_SAMPLES + 1)
            .map(|i| used(&i.to_string(), 0.0))
            .collect();
        kept.record(&many, 0);
        assert!(kept.is_empty(), "all at once over the bound: none kept");
        kept.record(&many[..10], 0);
        let later = SAMPLE_REUSE.as_nanos() as i64 + 1;
        kept.record(&many[10..MAX_SAMPLES + 1], later);
        assert_eq!(kept.len(), MAX_SAMPLES - 9, "the stale ones went");
    }
}
