//! The budget scenario: `--budget-zones` zones × `--budget-per-zone` objects on one token,
//! the simulator at the rate limit (1200/300 s) and the operator told the same, with a resync
//! so short that re-reading every zone wants more calls than the limit gives. After every
//! object is Ready, one object's region is edited per second (each in another zone) and the
//! simulator's zone is polled until it shows the edit: the latency of each edit's remote
//! write. Meanwhile the simulator logs every request, so the bench can tell which zones were
//! re-read after convergence and how long each went between reads.
//!
//! The zones' remote entries are seeded before the operator starts (unless
//! `--budget-no-seed`): it runs with `--allow-undeclared-zones`, where pre-existing entries
//! equal to the spec are adopted, so convergence costs a list per zone and no writes.

use std::time::{Duration, Instant};

use futures::{stream, StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::Api;
use origin_region_operator::crd::OriginCloudRegionMapping;
use serde_json::json;

use crate::cluster::{self, Tracker};
use crate::procs::{list_times, Operator, Result, Sim, SimAdmin};
use crate::report::{quantile, Budget};
use crate::{calls, log, metrics, mib, since, wait_until, warnings, Ctx};

/// The region each edit sets (in the simulator's default catalog, unlike the created one).
const EDITED_REGION: &str = "us-west-2";
/// The gauge the operator's scheduler exports: the resync interval it can afford.
const RESYNC_GAUGE: &str = "origin_region_operator_resync_interval_effective_seconds";
/// Longest the bench waits to see one edit applied remotely.
const EDIT_GIVE_UP: Duration = Duration::from_secs(600);

/// Runs the budget scenario.
pub async fn run(ctx: &Ctx) -> Result<Budget> {
    let args = &ctx.args;
    let ns = ctx
        .cp
        .create_namespace("bench-budget")
        .await
        .map_err(|e| e.to_string())?;
    let zones: Vec<String> = (0..args.budget_zones)
        .map(|_| cluster::random_zone())
        .collect();
    let items = cluster::items(&zones, args.budget_per_zone);
    let n = items.len();
    let api: Api<OriginCloudRegionMapping> = Api::namespaced(ctx.client.clone(), &ns);
    cluster::create_secret(&ctx.client, &ns).await?;
    let t = Instant::now();
    cluster::create_all(&api, &items, args.concurrency).await?;
    log(format!(
        "  created {n} objects in {:.1} s (namespace {ns})",
        since(t)
    ));
    let tracker = Tracker::start(api.clone()).await?;

    let mut sim_args = vec!["--latency-ms".to_string(), args.latency_ms.to_string()];
    sim_args.extend(["--rate-limit".to_string(), args.rate_limit.clone()]);
    let sim_log = ctx.logs.join("budget-sim.log");
    let sim = Sim::start_logging(
        &args.sim_bin,
        &sim_args,
        &sim_log,
        "warn,cf_origin_sim::routes=debug",
    )?;
    let seeded = !args.budget_no_seed;
    if seeded {
        let admin = &sim;
        let per_zone = cluster::per_zone(&items);
        stream::iter(per_zone.keys().map(|zone| {
            let entries: Vec<(String, String, String)> = items
                .iter()
                .filter(|it| &it.zone == zone)
                .map(|it| {
                    (
                        it.ip.clone(),
                        cluster::VENDOR.into(),
                        cluster::REGION.into(),
                    )
                })
                .collect();
            async move { admin.seed_zone(zone, &entries).await }
        }))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
        log(format!(
            "  seeded {n} remote entries in {} zones",
            zones.len()
        ));
    }

    let rate = crate::parse_rate_limit(&args.rate_limit)?;
    let resync = format!("{}s", args.budget_resync_secs);
    let (limit, period) = (
        rate.limit.to_string(),
        format!("{}s", rate.window.as_secs()),
    );
    let op_args = crate::operator_args(
        ctx,
        &ns,
        &sim,
        &[
            "--allow-undeclared-zones",
            "--resync-interval",
            &resync,
            "--rate-limit",
            &limit,
            "--rate-period",
            &period,
        ],
    );

    let s0 = sim.stats().await?;
    let t0 = Instant::now();
    let op_log = ctx.logs.join("budget-operator.log");
    let mut op = Operator::start(
        &args.operator_bin,
        &op_args,
        &op_log,
        &args
            .operator_wrapper
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>(),
    )?;
    let tracker_ref = &tracker;
    let mut last_log = Instant::now();
    wait_until(
        "budget: all Ready",
        Duration::from_secs(args.budget_timeout_secs),
        &mut op,
        async || {
            let c = tracker_ref.counts();
            if last_log.elapsed() > Duration::from_secs(60) {
                last_log = Instant::now();
                log(format!(
                    "  {} / {n} Ready after {:.0} s",
                    c.ready,
                    since(t0)
                ));
            }
            Ok(c.ready == n)
        },
    )
    .await?;
    let converge_secs = since(t0);
    let converged_at = jiff::Timestamp::now();
    let s1 = sim.stats().await?;
    let converge_calls = calls(&s1, &s0);
    log(format!(
        "  all {n} Ready in {converge_secs:.1} s ({} calls)",
        converge_calls.total
    ));

    // Edits: one per second, each to the first object of another zone.
    let observe_start = Instant::now();
    let edits = args.budget_edits.min(zones.len());
    let stride = (zones.len() / edits.max(1)).max(1);
    let mut pollers = Vec::new();
    for k in 0..edits {
        let due = observe_start + Duration::from_secs(k as u64);
        tokio::time::sleep_until(due.into()).await;
        op.check_alive()?;
        let it = &items[k * stride * args.budget_per_zone];
        let patch = json!({"spec": {"region": EDITED_REGION}});
        let sent = Instant::now();
        api.patch(&it.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("editing {}: {e}", it.name))?;
        pollers.push(tokio::spawn(watch_edit(
            sim.admin(),
            it.zone.clone(),
            it.ip.clone(),
            sent,
        )));
    }
    let mut latencies = Vec::new();
    for p in pollers {
        if let Some(l) = p.await.map_err(|e| format!("edit poller: {e}"))? {
            latencies.push(l);
        }
    }
    let edits_applied = latencies.len();
    log(format!(
        "  {edits_applied} / {edits} edits applied; p99 {:?} s",
        quantile(&latencies, 0.99)
    ));
    // An edit never seen counts as the longest wait.
    let mut for_p99 = latencies.clone();
    for_p99.extend(std::iter::repeat_n(
        EDIT_GIVE_UP.as_secs_f64(),
        edits - edits_applied,
    ));

    // The rest of the window: the stretched resync should come round every zone.
    let observe = Duration::from_secs(args.budget_observe_secs);
    if let Some(rest) = observe.checked_sub(observe_start.elapsed()) {
        log(format!(
            "  watching {:.0} s more for zones' re-reads",
            rest.as_secs_f64()
        ));
        let end = Instant::now() + rest;
        while Instant::now() < end {
            op.check_alive()?;
            tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        }
    }
    let observe_secs = since(observe_start);
    let s2 = sim.stats().await?;
    let m = metrics(&op).await?;
    let resync_effective = m.gauge(RESYNC_GAUGE);
    if resync_effective.is_none() {
        log(format!(
            "  the operator does not export {RESYNC_GAUGE}: recorded as null"
        ));
    }
    let (hwm, _) = op.rss_kib()?;
    let cpu_secs = op.cpu_secs()?;
    op.stop();
    drop(tracker);
    drop(sim);
    let total = calls(&s2, &s0);

    // Which zones were re-read after convergence, and the longest gap between reads per zone.
    let lists = list_times(&sim_log);
    let zones_checked = zones
        .iter()
        .filter(|z| {
            lists
                .get(*z)
                .is_some_and(|ts| ts.iter().any(|t| *t > converged_at))
        })
        .count();
    let gaps: Vec<f64> = zones
        .iter()
        .filter_map(|z| {
            let ts = lists.get(z)?;
            ts.windows(2)
                .map(|w| w[1].duration_since(w[0]).as_secs_f64())
                .reduce(f64::max)
        })
        .collect();
    let (operator_warnings, operator_warning_samples) = warnings(&op_log);

    Ok(Budget {
        name: "budget".into(),
        zones: zones.len(),
        objects: n,
        rate_limit: args.rate_limit.clone(),
        latency_ms: args.latency_ms,
        resync_interval_secs: args.budget_resync_secs,
        seeded,
        converge_secs,
        converge_calls,
        edits,
        edits_applied,
        edit_latency_p50_secs: quantile(&latencies, 0.5),
        edit_latency_p99_secs: quantile(&for_p99, 0.99),
        edit_latency_max_secs: quantile(&for_p99, 1.0),
        throttled: total.throttled,
        calls: total,
        resync_interval_effective_secs: resync_effective,
        observe_secs,
        zones_checked,
        check_gap_max_secs: gaps.iter().copied().reduce(f64::max),
        check_gap_p50_secs: quantile(&gaps, 0.5),
        peak_rss_mib: mib(hwm),
        cpu_secs,
        operator_warnings,
        operator_warning_samples,
    })
}

/// Polls the zone until the entry at `ip` has the edited region; seconds since `sent`, or
/// `None` after [`EDIT_GIVE_UP`]. Every 150 ms for the first 15 s (the target is 10 s), then
/// every 500 ms, so long waits do not load the machine being measured.
async fn watch_edit(admin: SimAdmin, zone: String, ip: String, sent: Instant) -> Option<f64> {
    while sent.elapsed() < EDIT_GIVE_UP {
        if let Ok(Some(region)) = admin.region_of(&zone, &ip).await {
            if region == EDITED_REGION {
                return Some(since(sent));
            }
        }
        let pause = if sent.elapsed() < Duration::from_secs(15) {
            150
        } else {
            500
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    None
}
