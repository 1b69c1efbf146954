//! Instances' resource use through the public API: `GET
//! /v1/actual_lrps/:process_guid/usage` asks the cells running them (each rep's
//! `/v1/containers`) and answers with one [`ContainerUsage`] per container found.

use std::collections::HashMap;
use std::time::Duration;

use lattice_specs::containers::CellContainer;
use lattice_specs::receptor::ContainerUsage;

/// Usage of the containers `instances` (instance guid → cell id), asking each cell at
/// its rep address (`reps`: cell id → address). Cells that do not answer within 2 s
/// are left out.
pub async fn gather(
    client: &reqwest::Client,
    reps: &HashMap<String, String>,
    instances: &HashMap<String, String>,
) -> Vec<ContainerUsage> {
    let mut cells: Vec<&String> = instances.values().collect();
    cells.sort();
    cells.dedup();
    let answers = futures::future::join_all(cells.into_iter().filter_map(|cell| {
        let rep = reps.get(cell)?;
        let url = format!("{}/v1/containers", lattice_specs::http_url(rep));
        Some(async move {
            let got = async {
                client
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Vec<CellContainer>>()
                    .await
            }
            .await;
            match got {
                Ok(list) => list
                    .into_iter()
                    .map(|c| (cell.clone(), c))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    tracing::debug!(%url, error = %e, "cell usage unavailable");
                    vec![]
                }
            }
        })
    }))
    .await;
    answers
        .into_iter()
        .flatten()
        .filter(|(cell, c)| instances.get(&c.handle) == Some(cell))
        .map(|(cell_id, c)| ContainerUsage {
            instance_guid: c.handle,
            cell_id,
            memory_bytes: c.memory_bytes,
            cpu_seconds: c.cpu_seconds,
            disk_bytes: c.disk_bytes,
        })
        .collect()
}
