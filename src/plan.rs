//! The `plan` subcommand: reads the objects and each zone's remote state and prints what `run`
//! would change, without writing anything anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use kube::Api;
use kube::ResourceExt;
use serde::Serialize;

use crate::cached::CachedMapping;
use crate::cli::PlanArgs;
use crate::crd::OriginCloudRegionMapping;
use crate::credentials::CredentialSource;
use crate::ownership::{self, ObjectKey};
use crate::planner::{plan_zone, Release, Step, UpsertKind, ZonePlan};
use crate::reconciler::{credentials_for, read_zone, views, Member};
use crate::zone::{self, AdoptionPolicy, CloudflareZone};
use crate::zone_state::ZoneState;

/// One planned change, as printed.
#[derive(Debug, Serialize)]
pub struct Change {
    /// create, update, adopt, correct-drift, delete, forget, in-sync, blocked, wait, finalize.
    pub action: String,
    /// Object `namespace/name`.
    pub object: String,
    /// Canonical IP concerned.
    pub ip: String,
    /// Detail: vendor and region, or the problem.
    pub detail: String,
}

/// The plan of one zone, as printed.
#[derive(Debug, Serialize)]
pub struct ZoneReport {
    /// Zone identifier.
    pub zone: String,
    /// Remote mappings found, or why they could not be read.
    pub remote: Result<usize, String>,
    /// Planned changes and no-ops.
    pub changes: Vec<Change>,
}

/// Runs `plan`.
pub async fn run(args: PlanArgs) -> Result<(), String> {
    let kube = args.kube.client().await?;
    let api: Api<OriginCloudRegionMapping> = match &args.kube.namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    let objects: Vec<Arc<OriginCloudRegionMapping>> = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing OriginCloudRegionMappings: {e}"))?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();

    // Fetch just the Secrets the objects use, into the same caches `run` reads.
    let default_store = secrets_store(
        &kube,
        args.cloudflare.default_credentials_secret.iter().cloned(),
    )
    .await;
    let refs = objects.iter().filter_map(|o| {
        let r = o.spec.credentials_secret_ref.as_ref()?;
        Some((
            o.metadata.namespace.clone().unwrap_or_default(),
            r.name.clone(),
        ))
    });
    let ref_store = secrets_store(&kube, refs).await;
    // Declared zones: the CloudflareZones, the namespaces' labels and the zones' Secrets.
    let governed = !args.zones.allow_undeclared_zones;
    let operator_namespace = args.zones.namespace();
    let (declarations, namespace_labels) = if governed {
        let zones: Api<CloudflareZone> = Api::all(kube.clone());
        let zones = zones
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing CloudflareZones: {e}"))?
            .items;
        let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(kube.clone());
        let labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing Namespaces: {e}"))?
            .items
            .into_iter()
            .map(|n| (n.name_any(), n.metadata.labels.unwrap_or_default()))
            .collect();
        (zones, labels)
    } else {
        (vec![], BTreeMap::new())
    };
    let zone_refs = declarations.iter().filter_map(|z| {
        let r = z.spec.credentials_secret_ref.as_ref()?;
        Some((operator_namespace.clone(), r.name.clone()))
    });
    let zone_store = secrets_store(&kube, zone_refs).await;
    let creds = CredentialSource {
        default_secret: args.cloudflare.default_credentials_secret.clone(),
        default_store: Some(default_store),
        ref_store: args.cloudflare.watch_secret_refs.then_some(ref_store),
        zone_secrets: governed.then(|| (operator_namespace.clone(), zone_store)),
    };
    let clients = args.cloudflare.clients(None);

    let zones: BTreeSet<String> = objects
        .iter()
        .flat_map(|o| {
            let mut z = ownership::owned_zones(o);
            z.insert(o.spec.zone_id.clone());
            z
        })
        .chain(declarations.iter().map(|d| d.spec.zone_id.clone()))
        .collect();
    let mut reports = Vec::new();
    for zone in zones {
        let declaration = zone::declared(&declarations, &zone);
        let no_labels = BTreeMap::new();
        let members: Vec<Member> = objects
            .iter()
            .filter(|o| o.spec.zone_id == zone || ownership::owned_zones(o).contains(&zone))
            .map(|o| {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let labels = namespace_labels.get(&ns).unwrap_or(&no_labels);
                Member {
                    obj: Arc::new(CachedMapping::from(&**o)),
                    key: ObjectKey::of(o),
                    cred: credentials_for(&creds, governed, declaration, &zone, o, labels),
                }
            })
            .collect();
        let lead = declaration.map(|d| creds.resolve_zone(d));
        let lead = lead.as_ref().and_then(|l| l.as_ref().ok());
        // The same read and the same planning as `run`, from an empty memory, so the two
        // cannot disagree; only reads are made.
        let mut state = ZoneState::default();
        let ttl = std::time::Duration::ZERO;
        let read = read_zone(&clients, &zone, &mut state, &members, lead, true, ttl).await;
        let mut snap = match read {
            Ok(snap) => snap,
            Err(failure) => {
                reports.push(ZoneReport {
                    zone,
                    remote: Err(failure.problem.to_string()),
                    changes: vec![],
                });
                continue;
            }
        };
        snap.adopt = declaration.is_none_or(|d| d.spec.adoption == AdoptionPolicy::Adopt);
        let views = views(&members, &snap, |_| None);
        let plan = plan_zone(&zone, &views, snap.facts());
        reports.push(ZoneReport {
            remote: Ok(snap.remote.len()),
            changes: changes(&zone, &members, &plan),
            zone,
        });
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?
        );
    } else {
        print_text(&reports);
    }
    Ok(())
}

/// The printed changes of one zone's plan (pure, so tests compare it with what `run` writes).
pub fn changes(zone: &str, members: &[Member], plan: &ZonePlan) -> Vec<Change> {
    let mut changes = Vec::new();
    for (p, m) in plan.objects.iter().zip(members) {
        let object = m.key.to_string();
        for release in &p.releases {
            let (action, ip) = match release {
                Release::Delete(ip) => ("delete", ip),
                Release::Forget(ip) => ("forget", ip),
            };
            changes.push(Change {
                action: action.into(),
                object: object.clone(),
                ip: ip.clone(),
                detail: format!("zone {zone}"),
            });
        }
        let o = &m.obj.to_full();
        let ip =
            crate::ip::canonicalize(&o.spec.origin_ip).unwrap_or_else(|_| o.spec.origin_ip.clone());
        let target = format!("{} {}", o.spec.vendor, o.spec.region);
        let (action, detail) = match &p.step {
            Step::InSync { adopted: true } => ("adopt", target),
            Step::InSync { adopted: false } => ("in-sync", target),
            Step::Upsert(_, UpsertKind::Create) => ("create", target),
            Step::Upsert(_, UpsertKind::Update) => ("update", target),
            Step::Upsert(_, UpsertKind::Adopt) => ("adopt-update", target),
            Step::Upsert(_, UpsertKind::DriftCorrect) => ("correct-drift", target),
            Step::Blocked(problem) => ("blocked", format!("{}: {problem}", problem.reason())),
            Step::WaitForRelease => (
                "wait",
                "the previous zone releases the old entry first".into(),
            ),
            Step::Finalize => ("finalize", String::new()),
            Step::MoveOut | Step::Skip => continue,
        };
        changes.push(Change {
            action: action.into(),
            object,
            ip,
            detail,
        });
    }
    changes
}

fn print_text(reports: &[ZoneReport]) {
    if reports.is_empty() {
        println!("no OriginCloudRegionMapping objects found");
    }
    for r in reports {
        match &r.remote {
            Ok(n) => println!("zone {} ({n} remote mappings)", r.zone),
            Err(e) => println!("zone {}: cannot plan: {e}", r.zone),
        }
        for c in &r.changes {
            let sign = match c.action.as_str() {
                "create" => "+",
                "delete" => "-",
                "in-sync" | "adopt" => "=",
                "blocked" | "wait" => "!",
                _ => "~",
            };
            println!(
                "  {sign} {:<14} {:<40} {:<20} {}",
                c.action, c.ip, c.object, c.detail
            );
        }
        let writes = r
            .changes
            .iter()
            .filter(|c| {
                matches!(
                    c.action.as_str(),
                    "create" | "update" | "adopt-update" | "correct-drift" | "delete"
                )
            })
            .count();
        println!("  {writes} write(s) planned");
    }
}

async fn secrets_store(
    kube: &kube::Client,
    wanted: impl Iterator<Item = (String, String)>,
) -> Store<Secret> {
    let (store, mut writer) = reflector::store();
    let wanted: BTreeSet<(String, String)> = wanted.collect();
    for (ns, name) in wanted {
        let api: Api<Secret> = Api::namespaced(kube.clone(), &ns);
        match api.get_opt(&name).await {
            Ok(Some(s)) => writer.apply_watcher_event(&Event::Apply(s)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(secret = %format!("{ns}/{name}"), error = %e, "reading Secret failed")
            }
        }
    }
    store
}
