//! The Kubernetes side of a scenario: the CRD, the credentials Secret, creating and deleting
//! the objects, and a watch that tells when all are Ready or all are gone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use origin_region_operator::crd::{OriginCloudRegionMapping, OriginCloudRegionMappingSpec};
use serde_json::json;
use testbed::ControlPlane;

use crate::procs::Result;

/// Name of the credentials Secret the operator is pointed at.
pub const SECRET: &str = "cf-credentials";
/// The simulator's default token.
pub const TOKEN: &str = "dev-token";

/// One object of a workload: its name and what it maps.
#[derive(Debug, Clone)]
pub struct Item {
    /// Object name.
    pub name: String,
    /// Zone id.
    pub zone: String,
    /// Origin IP (canonical IPv4).
    pub ip: String,
}

/// The objects of a workload: `per_zone` objects in each of `zones` random zones.
pub fn items(zones: &[String], per_zone: usize) -> Vec<Item> {
    // Zone-major with distinct IPs per zone (entries are per zone, so zones may repeat
    // them); 10.Z.H.L with Z = zone mod 256 leaves room for 256 × 250 per zone.
    zones
        .iter()
        .enumerate()
        .flat_map(|(z, zone)| {
            (0..per_zone).map(move |i| Item {
                name: format!("m-{z:02}-{i:05}"),
                zone: zone.clone(),
                ip: format!("10.{}.{}.{}", z % 256, i / 250, i % 250 + 1),
            })
        })
        .collect()
}

/// A random 32-hex-digit zone id.
pub fn random_zone() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Vendor of every object: in the simulator's default catalog.
pub const VENDOR: &str = "aws";
/// Region of every object when created.
pub const REGION: &str = "us-east-1";

/// Installs the CRD the operator binary prints (so it always matches the binary under test)
/// and waits until it is served.
pub async fn install_crd(cp: &ControlPlane, operator_bin: &Path) -> Result<()> {
    let out = tokio::process::Command::new(operator_bin)
        .arg("crd")
        .output()
        .await
        .map_err(|e| format!("{} crd: {e}", operator_bin.display()))?;
    if !out.status.success() {
        return Err(format!("{} crd: {}", operator_bin.display(), out.status));
    }
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    cp.kubectl_with_stdin(&["apply", "--server-side", "-f", "-"], Some(&yaml))
        .await
        .map_err(|e| e.to_string())?;
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/origincloudregionmappings.originregions.io",
        "crd/cloudflarezones.originregions.io",
        "--timeout=120s",
    ])
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Creates the operator-wide credentials Secret in `ns`.
pub async fn create_secret(client: &kube::Client, ns: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": {"apiToken": TOKEN},
    }))
    .map_err(|e| e.to_string())?;
    api.patch(
        SECRET,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|e| format!("creating Secret {ns}/{SECRET}: {e}"))?;
    Ok(())
}

/// Declares each zone with a CloudflareZone admitting `ns` (operator-wide credentials).
pub async fn declare_zones(client: &kube::Client, ns: &str, zones: &[String]) -> Result<()> {
    use origin_region_operator::zone::{CloudflareZone, CloudflareZoneSpec};
    let api: Api<CloudflareZone> = Api::all(client.clone());
    for zone in zones {
        let z = CloudflareZone::new(
            &format!("bench-{zone}"),
            CloudflareZoneSpec {
                zone_id: zone.clone(),
                credentials_secret_ref: None,
                namespaces: vec![ns.to_string()],
                namespace_selector: None,
                adoption: Default::default(),
                allow_namespace_credentials: false,
            },
        );
        api.create(&Default::default(), &z)
            .await
            .map_err(|e| format!("declaring zone {zone}: {e}"))?;
    }
    Ok(())
}

/// Creates every object, `concurrency` requests in flight.
pub async fn create_all(
    api: &Api<OriginCloudRegionMapping>,
    items: &[Item],
    concurrency: usize,
) -> Result<()> {
    stream::iter(items.iter().map(|it| async move {
        let obj = OriginCloudRegionMapping::new(
            &it.name,
            OriginCloudRegionMappingSpec {
                zone_id: it.zone.clone(),
                origin_ip: it.ip.clone(),
                vendor: VENDOR.into(),
                region: REGION.into(),
                credentials_secret_ref: None,
                deletion_policy: Default::default(),
            },
        );
        api.create(&PostParams::default(), &obj)
            .await
            .map(|_| ())
            .map_err(|e| format!("creating {}: {e}", it.name))
    }))
    .buffer_unordered(concurrency)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Deletes every object (returns once the API accepted each delete; finalizers keep them
/// until the operator releases them).
pub async fn delete_all(
    api: &Api<OriginCloudRegionMapping>,
    items: &[Item],
    concurrency: usize,
) -> Result<()> {
    stream::iter(items.iter().map(|it| async move {
        match api.delete(&it.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("deleting {}: {e}", it.name)),
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// What the watch has seen of each object: whether it is Ready at its generation.
#[derive(Debug, Default)]
struct Seen {
    objects: HashMap<String, bool>,
    synced: bool,
    /// Objects being relisted after a watch restart; swapped in when the list is done.
    relist: HashMap<String, bool>,
}

/// Ready=True for the current generation, as the e2e tests define it.
fn is_ready(o: &OriginCloudRegionMapping) -> bool {
    o.ready_condition().is_some_and(|c| c.status == "True")
        && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
}

/// A watch of one namespace's mappings, kept in memory as name → ready. A watch rather than
/// repeated lists: a list of 3,500 objects every poll would load the apiserver the operator
/// is being measured on.
pub struct Tracker {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts the tracker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Objects that exist.
    pub existing: usize,
    /// Of those, Ready at their generation.
    pub ready: usize,
}

impl Tracker {
    /// Starts watching `api` and waits until the initial list is in.
    pub async fn start(api: Api<OriginCloudRegionMapping>) -> Result<Tracker> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(ev) = events.next().await {
                let mut seen = s.lock().expect("tracker lock");
                match ev {
                    Ok(Event::Apply(o)) => {
                        seen.objects.insert(o.name_any(), is_ready(&o));
                    }
                    Ok(Event::Delete(o)) => {
                        seen.objects.remove(&o.name_any());
                    }
                    Ok(Event::Init) => seen.relist.clear(),
                    Ok(Event::InitApply(o)) => {
                        seen.relist.insert(o.name_any(), is_ready(&o));
                    }
                    Ok(Event::InitDone) => {
                        seen.objects = std::mem::take(&mut seen.relist);
                        seen.synced = true;
                    }
                    // The watcher retries by itself; back off a little so a broken watch
                    // cannot spin on the CPU the measurement shares.
                    Err(_) => {
                        drop(seen);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let t = Tracker { seen, task };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !t.seen.lock().expect("tracker lock").synced {
            if Instant::now() > deadline {
                return Err("the bench's watch of the mappings did not sync in 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(t)
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        let seen = self.seen.lock().expect("tracker lock");
        Counts {
            existing: seen.objects.len(),
            ready: seen.objects.values().filter(|r| **r).count(),
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Objects per zone, for the per-zone lower bound.
pub fn per_zone(items: &[Item]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for it in items {
        *m.entry(it.zone.clone()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_have_unique_names_and_ips_per_zone() {
        let zones = vec![random_zone(), random_zone()];
        let all = items(&zones, 3500);
        assert_eq!(all.len(), 7000);
        let names: std::collections::HashSet<_> = all.iter().map(|i| &i.name).collect();
        assert_eq!(names.len(), 7000);
        let ips: std::collections::HashSet<_> = all.iter().map(|i| (&i.zone, &i.ip)).collect();
        assert_eq!(ips.len(), 7000);
        assert!(all
            .iter()
            .all(|i| i.ip.parse::<std::net::Ipv4Addr>().is_ok()));
        assert_eq!(
            per_zone(&all).values().copied().collect::<Vec<_>>(),
            [3500, 3500]
        );
    }
}
