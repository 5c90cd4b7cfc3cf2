//! Helpers of the chaos suite (tests/chaos.rs): a world with its *own* control plane (the
//! suite restarts its kube-apiserver, which would disrupt every other test on the shared one),
//! kube calls that ride out an apiserver outage, and a convergence check that compares the
//! simulator's zones with the desired state and summarises everything that is still off.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use origin_region_operator::crd::{OriginCloudRegionMapping, OriginCloudRegionMappingSpec};
use serde_json::json;
use testbed::ControlPlane;

use super::sim::Sim;

/// Name of the operator-wide credentials Secret.
pub const SECRET: &str = "cf-credentials";

/// What one object should look like: its spec, which is also what its zone should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Spec zone.
    pub zone: String,
    /// Spec IP as written in the object (maybe not canonical).
    pub ip: String,
    /// Spec vendor.
    pub vendor: String,
    /// Spec region.
    pub region: String,
}

impl Want {
    /// The IP as Cloudflare (and the simulator) spell it.
    pub fn canonical_ip(&self) -> String {
        origin_region_operator::ip::canonicalize(&self.ip).expect("test IPs are valid")
    }
}

/// Desired state: object name → spec. Objects not in it must not exist.
pub type Desired = BTreeMap<String, Want>;

/// One test's world: private control plane, namespace, simulator, admin client.
pub struct World {
    /// The control plane, owned by this test only.
    pub cp: ControlPlane,
    /// The test namespace (mappings, Secret, Lease, Events).
    pub ns: String,
    /// The simulator.
    pub sim: Sim,
    /// Admin client; it reconnects by itself after an apiserver restart.
    pub client: kube::Client,
}

impl World {
    /// Starts a control plane, installs the CRD, makes a namespace and a simulator that
    /// accepts only `token`, and stores `token` in the credentials Secret.
    pub async fn start(prefix: &str, token: &str) -> World {
        let cp = ControlPlane::start()
            .await
            .expect("start a private control plane");
        super::e2e::apply_crd(&cp).await;
        let ns = cp.create_namespace(prefix).await.expect("namespace");
        let sim = Sim::start(&[]);
        // Through the admin API rather than --token, so no credential sits in a command line.
        sim.set_auth(json!({ "tokens": [token] })).await;
        let client = cp.client();
        let world = World {
            cp,
            ns,
            sim,
            client,
        };
        world.put_token(token).await;
        world
    }

    /// Operator arguments: this namespace, the simulator, the Secret, a 200 ms debounce, plus
    /// `extra`.
    pub fn operator_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--namespace".into(),
            self.ns.clone(),
            "--cloudflare-api-url".into(),
            self.sim.base_url(),
            "--default-credentials-secret".into(),
            format!("{}/{SECRET}", self.ns),
            // Declared zones (the default mode): `create_all` declares each zone it uses.
            "--operator-namespace".into(),
            self.ns.clone(),
        ];
        // Short, so a test runs quickly, unless the test chooses its own.
        if !extra.contains(&"--debounce") {
            args.extend(["--debounce".into(), "200ms".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Mappings of this namespace.
    pub fn api(&self) -> Api<OriginCloudRegionMapping> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates or replaces the credentials Secret with `token` (retried through outages).
    pub async fn put_token(&self, token: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET},
            "stringData": {"apiToken": token},
        }))
        .expect("Secret JSON");
        retry_kube("apply the credentials Secret", || async {
            api.patch(
                SECRET,
                &PatchParams::apply("chaos-test").force(),
                &Patch::Apply(&secret),
            )
            .await
        })
        .await;
    }

    /// Creates every object of `desired`, `parallel` at a time.
    pub async fn create_all(&self, desired: &Desired, parallel: usize) {
        use futures::StreamExt;
        let zones: std::collections::BTreeSet<&String> =
            desired.values().map(|w| &w.zone).collect();
        for zone in zones {
            self.declare_zone(zone).await;
        }
        let api = self.api();
        futures::stream::iter(desired.iter())
            .for_each_concurrent(parallel, |(name, want)| {
                let api = api.clone();
                async move {
                    let obj = mapping(name, want);
                    retry_kube(&format!("create {name}"), || async {
                        match api.create(&PostParams::default(), &obj).await {
                            // A retry after a lost response finds the first attempt's object.
                            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                            other => other.map(|_| ()),
                        }
                    })
                    .await
                }
            })
            .await;
    }

    /// Declares `zone` with a CloudflareZone admitting this namespace (once; the operator-wide
    /// credentials; adoption Never), as a cluster admin would.
    pub async fn declare_zone(&self, zone: &str) {
        use origin_region_operator::zone::{CloudflareZone, CloudflareZoneSpec};
        let api: Api<CloudflareZone> = Api::all(self.client.clone());
        let z = CloudflareZone::new(
            &format!("chaos-{zone}"),
            CloudflareZoneSpec {
                zone_id: zone.to_string(),
                credentials_secret_ref: None,
                namespaces: vec![self.ns.clone()],
                namespace_selector: None,
                adoption: Default::default(),
                allow_namespace_credentials: false,
            },
        );
        retry_kube(&format!("declare zone {zone}"), || async {
            match api.create(&PostParams::default(), &z).await {
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
    }

    /// The holder of a Lease of this namespace, if any.
    pub async fn lease_holder(&self, name: &str) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty())
    }

    /// Compares Kubernetes and the simulator with `desired`; `None` when either cannot be
    /// read right now (e.g. the apiserver is restarting).
    pub async fn summary(&self, desired: &Desired) -> Option<Summary> {
        let objects = match self.api().list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                note_retry("list mappings", &e);
                return None;
            }
        };
        let zones: BTreeSet<&str> = desired.values().map(|w| w.zone.as_str()).collect();
        let mut remote = BTreeMap::new();
        for zone in zones {
            let entries: BTreeMap<String, (String, String)> = self
                .sim
                .dump_zone(zone)
                .await
                .into_iter()
                .map(|m| (m.origin_ip, (m.vendor, m.region)))
                .collect();
            remote.insert(zone.to_string(), entries);
        }
        Some(Summary::of(desired, &objects, &remote))
    }

    /// Polls until Kubernetes and the remote state equal `desired` exactly; returns the
    /// final summary and the time it took. Panics after `timeout` with the last summary.
    pub async fn wait_converged(
        &self,
        desired: &Desired,
        timeout: Duration,
        what: &str,
    ) -> (Summary, Duration) {
        let start = Instant::now();
        let mut last: Option<Summary> = None;
        loop {
            if let Some(s) = self.summary(desired).await {
                if s.converged() {
                    return (s, start.elapsed());
                }
                if verbose() {
                    eprintln!("chaos: {what}, {:.1}s:\n{s}", start.elapsed().as_secs_f64());
                }
                last = Some(s);
            }
            if start.elapsed() > timeout {
                let history = match &last {
                    Some(s) => self.history_of_differences(s).await,
                    None => String::new(),
                };
                panic!(
                    "{what}: not converged after {timeout:?}; last observed state:\n{}{history}",
                    last.map_or("(never readable)".to_string(), |s| s.to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// For every entry that differs from the desired state, when the simulator saw it change
    /// (UTC): tells an entry written again after its delete from one never deleted.
    async fn history_of_differences(&self, s: &Summary) -> String {
        let mut out = String::new();
        for (zone, d) in &s.zones {
            for ip in d.missing.iter().chain(&d.extra).chain(&d.wrong) {
                let h = self.sim.history(zone, ip).await;
                out += &format!("  history of {zone} {ip}: {}\n", h.join("; "));
            }
        }
        out
    }

    /// Everything a credential could leak into besides logs: Events (both APIs), the
    /// mappings' statuses, as one text.
    pub async fn observable_text(&self) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let core: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.ns);
        let mut text = String::new();
        let list = retry_kube("list events", || async {
            events.list(&ListParams::default()).await
        })
        .await;
        text += &serde_json::to_string(&list.items).unwrap();
        let list = retry_kube("list core events", || async {
            core.list(&ListParams::default()).await
        })
        .await;
        text += &serde_json::to_string(&list.items).unwrap();
        let api = self.api();
        let objs = retry_kube("list mappings", || async {
            api.list(&ListParams::default()).await
        })
        .await;
        for o in objs.items {
            text += &serde_json::to_string(&o.status).unwrap();
        }
        text
    }
}

/// A mapping object for `want`.
pub fn mapping(name: &str, want: &Want) -> OriginCloudRegionMapping {
    OriginCloudRegionMapping::new(
        name,
        OriginCloudRegionMappingSpec {
            zone_id: want.zone.clone(),
            origin_ip: want.ip.clone(),
            vendor: want.vendor.clone(),
            region: want.region.clone(),
            credentials_secret_ref: None,
            deletion_policy: Default::default(),
        },
    )
}

/// Runs a Kubernetes call until it succeeds: during an apiserver restart calls fail for a
/// few seconds, and a chaos test must not fail for its own traffic. Panics after 90 s.
pub async fn retry_kube<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                note_retry(what, &e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: still failing after 90 s: {e}"),
        }
    }
}

/// `CHAOS_VERBOSE=1` narrates retries and every convergence poll.
fn verbose() -> bool {
    std::env::var_os("CHAOS_VERBOSE").is_some()
}

fn note_retry(what: &str, e: &kube::Error) {
    if verbose() {
        eprintln!("chaos: {what} failed, retrying: {e}");
    }
}

/// How far Kubernetes and the remote state are from the desired state.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Objects that exist in Kubernetes.
    pub objects: usize,
    /// Objects Ready=True at their current generation with status matching the spec.
    pub ready: usize,
    /// Other live objects by Ready reason ("NoStatus", "StaleGeneration", "WrongStatus" are
    /// the test's own labels).
    pub not_ready: BTreeMap<String, usize>,
    /// Objects with a deletionTimestamp (held by the finalizer).
    pub terminating: Vec<String>,
    /// Objects that exist but should not (deleted by the test, maybe still terminating).
    pub unexpected: Vec<String>,
    /// Desired objects missing from Kubernetes.
    pub missing: Vec<String>,
    /// Live objects without the operator's finalizer.
    pub without_finalizer: usize,
    /// Objects whose spec differs from the desired one (a mutation that did not land).
    pub spec_mismatch: Vec<String>,
    /// Per zone: desired count, remote count, IPs missing remotely, extra remotely, wrong.
    pub zones: BTreeMap<String, ZoneDiff>,
}

/// Remote versus desired for one zone.
#[derive(Debug, Default, Clone)]
pub struct ZoneDiff {
    /// Entries the desired state has.
    pub desired: usize,
    /// Entries the simulator has.
    pub remote: usize,
    /// Desired IPs absent remotely (lost mappings).
    pub missing: Vec<String>,
    /// Remote IPs nobody wants (orphans).
    pub extra: Vec<String>,
    /// IPs present on both sides with another vendor/region.
    pub wrong: Vec<String>,
}

impl Summary {
    /// Builds the summary from listed objects and the remote zones (ip → (vendor, region)).
    pub fn of(
        desired: &Desired,
        objects: &[OriginCloudRegionMapping],
        remote: &BTreeMap<String, BTreeMap<String, (String, String)>>,
    ) -> Summary {
        let mut s = Summary {
            objects: objects.len(),
            ..Summary::default()
        };
        let mut seen = BTreeSet::new();
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            seen.insert(name.clone());
            if o.metadata.deletion_timestamp.is_some() {
                s.terminating.push(name.clone());
            }
            let Some(want) = desired.get(&name) else {
                s.unexpected.push(name);
                continue;
            };
            if o.metadata.deletion_timestamp.is_none() && !o.has_finalizer() {
                s.without_finalizer += 1;
            }
            let spec = &o.spec;
            if spec.zone_id != want.zone
                || spec.origin_ip != want.ip
                || spec.vendor != want.vendor
                || spec.region != want.region
            {
                s.spec_mismatch.push(name.clone());
            }
            let generation = o.metadata.generation;
            let status = o.status.as_ref();
            let reason = match (status, o.ready_condition()) {
                (None, _) | (_, None) => Some("NoStatus".to_string()),
                (Some(st), Some(c)) if c.status == "True" => {
                    if st.observed_generation != generation || c.observed_generation != generation {
                        Some("StaleGeneration".to_string())
                    } else if st.zone_id.as_deref() != Some(want.zone.as_str())
                        || st.origin_ip.as_deref() != Some(want.canonical_ip().as_str())
                    {
                        Some("WrongStatus".to_string())
                    } else {
                        None
                    }
                }
                (Some(_), Some(c)) => Some(c.reason.clone()),
            };
            match reason {
                None => s.ready += 1,
                Some(r) => *s.not_ready.entry(r).or_default() += 1,
            }
        }
        s.missing = desired
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();

        let mut by_zone: BTreeMap<&str, BTreeMap<String, (String, String)>> = BTreeMap::new();
        for w in desired.values() {
            by_zone
                .entry(w.zone.as_str())
                .or_default()
                .insert(w.canonical_ip(), (w.vendor.clone(), w.region.clone()));
        }
        for (zone, want) in by_zone {
            let empty = BTreeMap::new();
            let have = remote.get(zone).unwrap_or(&empty);
            let diff = ZoneDiff {
                desired: want.len(),
                remote: have.len(),
                missing: want
                    .keys()
                    .filter(|ip| !have.contains_key(*ip))
                    .cloned()
                    .collect(),
                extra: have
                    .keys()
                    .filter(|ip| !want.contains_key(*ip))
                    .cloned()
                    .collect(),
                wrong: want
                    .iter()
                    .filter(|(ip, v)| have.get(*ip).is_some_and(|h| h != *v))
                    .map(|(ip, _)| ip.clone())
                    .collect(),
            };
            s.zones.insert(zone.to_string(), diff);
        }
        s
    }

    /// Whether everything equals the desired state exactly.
    pub fn converged(&self) -> bool {
        self.remote_exact()
            && self.ready == self.objects
            && self.not_ready.is_empty()
            && self.terminating.is_empty()
            && self.unexpected.is_empty()
            && self.missing.is_empty()
            && self.spec_mismatch.is_empty()
            && self.without_finalizer == 0
    }

    /// Whether every zone holds exactly the desired entries.
    pub fn remote_exact(&self) -> bool {
        self.zones
            .values()
            .all(|z| z.missing.is_empty() && z.extra.is_empty() && z.wrong.is_empty())
    }
}

fn sample(v: &[String]) -> String {
    let head: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
    if v.len() > head.len() {
        format!("{head:?} and {} more", v.len() - head.len())
    } else {
        format!("{head:?}")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  objects {}: Ready(current generation) {}, not ready by reason {:?}, without finalizer {}",
            self.objects, self.ready, self.not_ready, self.without_finalizer
        )?;
        writeln!(
            f,
            "  terminating {}: {}; should not exist {}: {}; missing {}: {}; spec not as desired {}: {}",
            self.terminating.len(),
            sample(&self.terminating),
            self.unexpected.len(),
            sample(&self.unexpected),
            self.missing.len(),
            sample(&self.missing),
            self.spec_mismatch.len(),
            sample(&self.spec_mismatch),
        )?;
        for (zone, d) in &self.zones {
            writeln!(
                f,
                "  zone {zone}: desired {} remote {}; lost {} {}; orphaned {} {}; wrong {} {}",
                d.desired,
                d.remote,
                d.missing.len(),
                sample(&d.missing),
                d.extra.len(),
                sample(&d.extra),
                d.wrong.len(),
                sample(&d.wrong),
            )?;
        }
        Ok(())
    }
}

/// Sum of the Cloudflare write requests (any status) in an operator's /metrics text.
pub fn cloudflare_writes(metrics: &str) -> u64 {
    const NAME: &str = "origin_region_operator_cloudflare_requests_total{";
    metrics
        .lines()
        .filter(|l| l.starts_with(NAME))
        .filter(|l| {
            ["put", "batch_put", "delete", "batch_delete"]
                .iter()
                .any(|op| l.contains(&format!("operation=\"{op}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Sum of every Cloudflare request in an operator's /metrics text.
pub fn cloudflare_requests(metrics: &str) -> u64 {
    const NAME: &str = "origin_region_operator_cloudflare_requests_total{";
    metrics
        .lines()
        .filter(|l| l.starts_with(NAME))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Scrapes `http://{addr}/metrics`; `None` while the process is down or starting.
pub async fn scrape(addr: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

/// Panics if any of `secrets` occurs in `text`; `place` names where it was found.
pub fn assert_no_secret(place: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !text.contains(s),
            "a credential ({}…) appears in {place}",
            &s[..s.len().min(10)]
        );
    }
}
