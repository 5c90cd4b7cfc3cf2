//! The `plan` subcommand: reads the objects and each zone's remote state and prints what `run`
//! would change, without writing anything anywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use kube::Api;
use serde::Serialize;

use crate::cli::PlanArgs;
use crate::crd::OriginCloudRegionMapping;
use crate::credentials::CredentialSource;
use crate::planner::{plan_zone, Release, Step, UpsertKind};
use crate::reconciler::{claim_ip, key_of, owned_entry, view_of};

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
    let creds = CredentialSource {
        default_secret: args.cloudflare.default_credentials_secret.clone(),
        default_store: Some(default_store),
        ref_store: args.cloudflare.watch_secret_refs.then_some(ref_store),
    };
    let clients = args.cloudflare.clients(None);

    let zones: BTreeSet<String> = objects
        .iter()
        .flat_map(|o| [Some(o.spec.zone_id.clone()), owned_entry(o).map(|(z, _)| z)])
        .flatten()
        .collect();
    let mut reports = Vec::new();
    for zone in zones {
        let in_zone: Vec<_> = objects
            .iter()
            .filter(|o| o.spec.zone_id == zone || owned_entry(o).is_some_and(|(z, _)| z == zone))
            .collect();
        let resolved: Vec<_> = in_zone.iter().map(|o| creds.resolve(o)).collect();
        let Some(cred) = resolved.iter().find_map(|r| r.as_ref().ok()) else {
            reports.push(ZoneReport {
                zone,
                remote: Err("no usable credentials for any object of the zone".into()),
                changes: vec![],
            });
            continue;
        };
        let client = clients.client(cred.credentials.clone());
        let remote = match client.list_all(&zone).await {
            Ok(list) => list.into_iter().map(|m| (m.origin_ip.clone(), m)).collect(),
            Err(e) => {
                reports.push(ZoneReport {
                    zone,
                    remote: Err(e.to_string()),
                    changes: vec![],
                });
                continue;
            }
        };
        let catalog = client.supported_regions(&zone).await.ok();
        let views: Vec<_> = in_zone
            .iter()
            .zip(&resolved)
            .map(|(o, r)| view_of(o, r.as_ref().err().cloned()))
            .collect();
        let plan = plan_zone(&zone, &views, &remote, catalog.as_ref());
        let mut changes = Vec::new();
        for (p, o) in plan.objects.iter().zip(&in_zone) {
            let object = key_of(o);
            if let Some(release) = &p.release {
                let (_, ip) = owned_entry(o).unwrap_or_default();
                let (action, ip) = match release {
                    Release::Delete(ip) => ("delete", ip.clone()),
                    Release::Forget => ("forget", ip),
                };
                changes.push(Change {
                    action: action.into(),
                    object: object.clone(),
                    ip,
                    detail: String::new(),
                });
            }
            let ip = claim_ip(o);
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
                Step::Skip => continue,
            };
            changes.push(Change {
                action: action.into(),
                object,
                ip,
                detail,
            });
        }
        reports.push(ZoneReport {
            zone,
            remote: Ok(remote.len()),
            changes,
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
