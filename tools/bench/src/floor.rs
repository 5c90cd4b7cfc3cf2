//! The floor: the Kubernetes writes the operator cannot avoid for N new objects, made with
//! the operator's concurrency and no Cloudflare at all. Per object, as the operator makes
//! them (src/reconciler.rs): a server-side apply of its metadata (the finalizer and the
//! ownership annotation), a server-side apply of its status (Ready, observedGeneration,
//! zoneId/originIp/vendor/region) and one events.k8s.io/v1 Event through a fresh `Recorder`.
//! Zones go through [`WORKERS`] at a time, like the operator's workers; within a zone the
//! metadata patches run first, then status + Event, each phase [`KUBE_CONCURRENCY`] in flight,
//! like the reconciler's `bounded(…, kube_concurrency)`.
//!
//! `operator ready_secs / floor_secs` says how close the operator comes to what the
//! apiserver allows on this machine.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::stream::{self, FuturesUnordered};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use origin_region_operator::crd::{OriginCloudRegionMapping, OriginCloudRegionMappingStatus};
use origin_region_operator::crd::{FINALIZER, READY};
use origin_region_operator::ownership::ENTRIES_ANNOTATION;
use origin_region_operator::reconciler::MANAGER;
use serde::Serialize;
use serde_json::json;

use crate::procs::{KubeWrites, Result};

/// Kubernetes writes the operator keeps in flight per zone (its `Settings::kube_concurrency`).
pub const KUBE_CONCURRENCY: usize = 32;
/// Zones the operator reconciles at once (the bench runs it with `--workers 4`).
pub const WORKERS: usize = 4;

/// What the floor writer measured.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Seconds from the first read (one list of the namespace, for the UIDs the applies
    /// name) to the last write.
    pub secs: f64,
    /// Writes made, by kind (each must equal the objects).
    pub writes: KubeWrites,
    /// Writes that failed (none expected).
    pub failed: u64,
}

/// Runs the floor on every mapping of `api`'s namespace, then removes its finalizers and
/// deletes them (not timed).
pub async fn run(client: &kube::Client, api: &Api<OriginCloudRegionMapping>) -> Result<Floor> {
    let start = Instant::now();
    let objects = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("floor: listing mappings: {e}"))?
        .items;
    let mut by_zone: BTreeMap<String, Vec<OriginCloudRegionMapping>> = BTreeMap::new();
    for o in objects {
        by_zone.entry(o.spec.zone_id.clone()).or_default().push(o);
    }
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some("bench-floor".into()),
    };
    let results: Vec<(KubeWrites, u64)> = stream::iter(by_zone.values())
        .map(|objs| zone(client, api, &reporter, objs))
        .buffer_unordered(WORKERS)
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    let mut writes = KubeWrites::default();
    let mut failed = 0;
    for (w, f) in results {
        writes.finalizer += w.finalizer;
        writes.status += w.status;
        writes.event += w.event;
        failed += f;
    }
    cleanup(api).await?;
    Ok(Floor {
        secs,
        writes,
        failed,
    })
}

/// One zone: every metadata patch, then every status patch with its Event.
async fn zone(
    client: &kube::Client,
    api: &Api<OriginCloudRegionMapping>,
    reporter: &Reporter,
    objs: &[OriginCloudRegionMapping],
) -> (KubeWrites, u64) {
    let mut writes = KubeWrites::default();
    let mut failed = 0;
    let params = PatchParams::apply(MANAGER).force();
    let meta = objs.iter().map(|o| {
        let params = &params;
        async move {
            let body = json!({
                "apiVersion": OriginCloudRegionMapping::api_version(&()),
                "kind": OriginCloudRegionMapping::kind(&()),
                "metadata": {
                    "name": o.name_any(),
                    "uid": o.uid(),
                    "finalizers": [FINALIZER],
                    "annotations": {
                        ENTRIES_ANNOTATION: format!("{}/{}", o.spec.zone_id, o.spec.origin_ip),
                    },
                },
            });
            api.patch(&o.name_any(), params, &Patch::Apply(&body))
                .await
                .is_ok()
        }
    });
    for ok in bounded(meta, KUBE_CONCURRENCY).await {
        if ok {
            writes.finalizer += 1;
        } else {
            failed += 1;
        }
    }
    let now = Time(jiff::Timestamp::now());
    let publish = objs.iter().map(|o| {
        let (params, now) = (&params, &now);
        async move {
            let generation = o.metadata.generation.unwrap_or_default();
            let message = format!(
                "{} {} is mapped to {} {}",
                o.spec.zone_id, o.spec.origin_ip, o.spec.vendor, o.spec.region
            );
            let status = OriginCloudRegionMappingStatus {
                observed_generation: Some(generation),
                zone_id: Some(o.spec.zone_id.clone()),
                origin_ip: Some(o.spec.origin_ip.clone()),
                vendor: Some(o.spec.vendor.clone()),
                region: Some(o.spec.region.clone()),
                upper_tier_colos: Some(vec!["IAD".into(), "EWR".into()]),
                last_sync_time: Some(now.clone()),
                conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: READY.into(),
                    status: "True".into(),
                    reason: "Synced".into(),
                    message,
                    observed_generation: Some(generation),
                    last_transition_time: now.clone(),
                }],
            };
            let body = json!({
                "apiVersion": OriginCloudRegionMapping::api_version(&()),
                "kind": OriginCloudRegionMapping::kind(&()),
                "status": status,
            });
            let status_ok = api
                .patch_status(&o.name_any(), params, &Patch::Apply(&body))
                .await
                .is_ok();
            let event = Event {
                type_: EventType::Normal,
                reason: "Created".into(),
                note: Some(format!(
                    "created remote mapping {} → {} {}",
                    o.spec.origin_ip, o.spec.vendor, o.spec.region
                )),
                action: "Reconcile".into(),
                secondary: None,
            };
            // A Recorder per Event, as the operator does.
            let recorder = Recorder::new(client.clone(), reporter.clone());
            let event_ok = recorder.publish(&event, &o.object_ref(&())).await.is_ok();
            (status_ok, event_ok)
        }
    });
    for (status_ok, event_ok) in bounded(publish, KUBE_CONCURRENCY).await {
        for (ok, n) in [
            (status_ok, &mut writes.status),
            (event_ok, &mut writes.event),
        ] {
            if ok {
                *n += 1;
            } else {
                failed += 1;
            }
        }
    }
    (writes, failed)
}

/// Takes the floor's finalizer off every object of the namespace, then deletes them all.
async fn cleanup(api: &Api<OriginCloudRegionMapping>) -> Result<()> {
    let names: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| format!("floor cleanup: listing: {e}"))?
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    let patch = json!({"metadata": {"finalizers": null}});
    let results = bounded(
        names.iter().map(|n| {
            let patch = &patch;
            async move {
                api.patch(n, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("floor cleanup: {n}: {e}"))
            }
        }),
        KUBE_CONCURRENCY,
    )
    .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    // Deleting 35,000 objects in one request can outlast the connection; what is left is
    // deleted by the next try.
    let mut tries = 0;
    loop {
        tries += 1;
        match api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tries < 3 => eprintln!("bench:   floor cleanup: deleting: {e}; again"),
            Err(e) => return Err(format!("floor cleanup: deleting: {e}")),
        }
    }
}

/// At most `limit` of `futures` in flight, each made only when a slot frees (the operator's
/// `bounded`); outputs in completion order.
async fn bounded<F: std::future::Future>(
    mut futures: impl Iterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    let mut out = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < limit.max(1) {
            let Some(f) = futures.next() else { break };
            in_flight.push(f);
        }
        match in_flight.next().await {
            Some(x) => out.push(x),
            None => return out,
        }
    }
}
