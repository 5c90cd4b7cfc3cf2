//! `bench`: issue 7's benchmark of origin-region-operator on the real control plane
//! (`testbed`: etcd + kube-apiserver on loopback) and the simulator (`cf-origin-sim`).
//!
//! For each workload (N objects in one zone; the same N spread over several zones) and each
//! simulator profile (no latency; latency plus Cloudflare's rate limit), in its own namespace:
//!
//! 0. the floor (`floor.rs`): in a namespace of its own, the same objects get the Kubernetes
//!    writes the operator must make (finalizer, status, one Event each) with the operator's
//!    concurrency and no Cloudflare; timed, then removed;
//! 1. create the credentials Secret and all objects, before the operator starts;
//! 2. start the operator (`--resync-interval 1h --workers 4 --debounce 200ms`) and time it
//!    until every object is Ready; count Cloudflare calls by operation (the simulator's
//!    counters), the operator's Kubernetes writes (its `kube_writes_total`), its peak RSS and
//!    CPU seconds, and its time against the floor's;
//! 3. watch a steady-state window in which nothing may be written, on either side;
//! 4. delete every object and time it until all are gone and every zone is empty;
//! 5. run a naive per-object controller (GET + PUT, then DELETE, one object at a time) against
//!    a second simulator with the same flags, for comparison.
//!
//! Prints one table, checks the issue's targets, writes JSON to `<out>/<UTC time>.json` and
//! `<out>/latest.json`, and exits non-zero when a call-count gate fails (never on seconds).
//! `hack/bench` builds the release binaries and runs this; `hack/bench --ci` is the small
//! variant that `hack/test` runs; `hack/bench --scale` runs the cost curve (up to 35,000
//! objects) and the budget scenario (`budget.rs`) instead.

mod baseline;
mod budget;
mod cluster;
mod floor;
mod procs;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use kube::Api;
use origin_region_operator::crd::OriginCloudRegionMapping;
use serde::Serialize;
use testbed::ControlPlane;

use crate::baseline::RateLimit;
use crate::cluster::Tracker;
use crate::procs::{writes_in, Metrics, Operator, Result, Sim, SimStats};
use crate::report::{Apply, Calls, Cost, Delete, PerObject, Report, Scenario, Steady};

/// Benchmark of origin-region-operator on the real control plane and the simulator.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "bench", about, long_about = None)]
struct Args {
    /// Objects per workload: all in one zone for the single-zone workload, split evenly over
    /// --zones zones for the multi-zone one. 3,500 is the zone maximum.
    #[arg(long, default_value_t = 3500)]
    objects: usize,
    /// Zones of the multi-zone workload; 1 runs the single-zone workload only.
    #[arg(long, default_value_t = 10)]
    zones: usize,
    /// Simulator latency per request of the "slow" profile, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Simulator rate limit of the "slow" profile, N/SECONDS (Cloudflare's is 1200/300).
    #[arg(long, default_value = "1200/300", value_parser = parse_rate)]
    rate_limit: String,
    /// Simulator profiles to run: fast (no latency, no limit), slow (--latency-ms and
    /// --rate-limit).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fast,slow")]
    profiles: Vec<Profile>,
    /// Length of the steady-state window, in seconds.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    /// The small variant for CI: 300 objects in one zone, fast profile, 10 s steady window
    /// (flags given explicitly still win).
    #[arg(long)]
    ci: bool,
    /// Do not run the naive per-object baseline.
    #[arg(long)]
    skip_baseline: bool,
    /// Objects the baseline drives on a rate-limited simulator; the rest is extrapolated
    /// (the whole of 3,500 at 1200/300 would take over 30 minutes).
    #[arg(long, default_value_t = 300)]
    baseline_cap: usize,
    /// The operator binary (release build).
    #[arg(long, default_value = "target/release/origin-region-operator")]
    operator_bin: PathBuf,
    /// The simulator binary (release build).
    #[arg(long, default_value = "target/release/cf-origin-sim")]
    sim_bin: PathBuf,
    /// Directory of the JSON results and the processes' logs.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Kubernetes requests the bench keeps in flight when creating and deleting objects.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Command put in front of the operator, split on spaces, for profiling (e.g.
    /// "heaptrack -o /tmp/op"); RSS figures are then the wrapper process's.
    #[arg(long, default_value = "")]
    operator_wrapper: String,
    /// Give up on a phase (all Ready, all gone) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// The scale workloads instead of the default ones: the cost curve --zones × 35 / 350 /
    /// 3,500 (the last is 35,000 objects, every zone at the maximum) on the simulator without
    /// latency, then the budget scenario. Defaults: no baseline, 20 s steady window, 1,800 s
    /// timeout (flags given explicitly still win). Up to an hour.
    #[arg(long, conflicts_with = "ci")]
    scale: bool,
    /// Objects per zone of the cost curve's points with --scale (e.g. 3500 for the 35,000
    /// point alone, to profile it).
    #[arg(long, value_delimiter = ',', default_values_t = SCALE_PER_ZONE)]
    scale_points: Vec<usize>,
    /// With --scale, skip the budget scenario.
    #[arg(long)]
    skip_budget: bool,
    /// Run the budget scenario (--scale does).
    #[arg(long)]
    budget: bool,
    /// Run only the budget scenario (no other workload).
    #[arg(long)]
    budget_only: bool,
    /// Zones of the budget scenario.
    #[arg(long, default_value_t = 2000)]
    budget_zones: usize,
    /// Objects per zone of the budget scenario.
    #[arg(long, default_value_t = 3)]
    budget_per_zone: usize,
    /// The operator's --resync-interval in the budget scenario, seconds (short enough that
    /// re-reading every zone wants more calls than the rate limit gives).
    #[arg(long, default_value_t = 60)]
    budget_resync_secs: u64,
    /// Edits in the budget scenario, one per second, each to one object of another zone.
    #[arg(long, default_value_t = 120)]
    budget_edits: usize,
    /// Seconds watched after convergence in the budget scenario (the edits, then the rest):
    /// long enough for the stretched resync to come round every zone.
    #[arg(long, default_value_t = 600)]
    budget_observe_secs: u64,
    /// Do not seed the budget zones' remote entries before the operator starts (it then
    /// creates all of them, about 2,000 more calls under the limit).
    #[arg(long)]
    budget_no_seed: bool,
    /// Give up on the budget scenario's convergence after this many seconds.
    #[arg(long, default_value_t = 2700)]
    budget_timeout_secs: u64,
}

/// A simulator profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Profile {
    /// No latency, no rate limit.
    Fast,
    /// --latency-ms and --rate-limit.
    Slow,
}

fn parse_rate(s: &str) -> Result<String> {
    parse_rate_limit(s).map(|_| s.to_string())
}

fn parse_rate_limit(s: &str) -> Result<RateLimit> {
    let (n, w) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not N/SECONDS"))?;
    let limit: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a count"))?;
    let window: u64 = w
        .trim()
        .parse()
        .map_err(|_| format!("{w:?} is not seconds"))?;
    if limit == 0 || window == 0 {
        return Err("rate limit count and window must be positive".into());
    }
    Ok(RateLimit {
        limit,
        window: Duration::from_secs(window),
    })
}

impl Args {
    /// Parses the command line; `--ci` replaces the defaults of the flags not given.
    fn parse_with_ci() -> Args {
        let matches: ArgMatches = Args::command().get_matches();
        let mut args = match Args::from_arg_matches(&matches) {
            Ok(a) => a,
            Err(e) => e.exit(),
        };
        if args.ci {
            let defaulted = |id: &str| matches.value_source(id) != Some(ValueSource::CommandLine);
            if defaulted("objects") {
                args.objects = 300;
            }
            if defaulted("zones") {
                args.zones = 1;
            }
            if defaulted("profiles") {
                args.profiles = vec![Profile::Fast];
            }
            if defaulted("steady_secs") {
                args.steady_secs = 10;
            }
        }
        if args.scale {
            let defaulted = |id: &str| matches.value_source(id) != Some(ValueSource::CommandLine);
            if defaulted("profiles") {
                args.profiles = vec![Profile::Fast];
            }
            if defaulted("steady_secs") {
                args.steady_secs = 20;
            }
            if defaulted("skip_baseline") {
                args.skip_baseline = true;
            }
            if defaulted("timeout_secs") {
                args.timeout_secs = 1800;
            }
            args.budget = !args.skip_budget;
        }
        if args.budget_only {
            args.budget = true;
        }
        args
    }

    /// The scenarios to run, in order: per profile, the single-zone then the multi-zone
    /// workload.
    fn scenarios(&self) -> Vec<Plan> {
        let mut out = Vec::new();
        if self.budget_only {
            return out;
        }
        if self.scale {
            // The cost curve: N = zones × 35 / 350 / 3,500 in the same zones' shape.
            for p in &self.profiles {
                for &per_zone in &self.scale_points {
                    let (latency_ms, rate_limit) = match p {
                        Profile::Fast => (0, None),
                        Profile::Slow => (self.latency_ms, Some(self.rate_limit.clone())),
                    };
                    out.push(Plan {
                        zones: self.zones,
                        per_zone,
                        latency_ms,
                        rate_limit,
                    });
                }
            }
            return out;
        }
        for p in &self.profiles {
            let mut shapes = vec![1];
            if self.zones > 1 {
                shapes.push(self.zones);
            }
            for zones in shapes {
                let (latency_ms, rate_limit) = match p {
                    Profile::Fast => (0, None),
                    Profile::Slow => (self.latency_ms, Some(self.rate_limit.clone())),
                };
                out.push(Plan {
                    zones,
                    per_zone: self.objects / zones,
                    latency_ms,
                    rate_limit,
                });
            }
        }
        out
    }
}

/// The operator's arguments every run shares (this run's namespace, simulator and Secret,
/// the operator's namespace for declared zones, 4 workers, 200 ms debounce), plus `extra`.
fn operator_args(ctx: &Ctx, ns: &str, sim: &Sim, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--kubeconfig",
        &ctx.cp.kubeconfig_path().display().to_string(),
        "--namespace",
        ns,
        "--cloudflare-api-url",
        &sim.base_url(),
        "--default-credentials-secret",
        &format!("{ns}/{}", cluster::SECRET),
        "--operator-namespace",
        ns,
        "--workers",
        "4",
        "--debounce",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Objects per zone of the cost curve's points (`--scale`); 3,500 is the zone maximum.
const SCALE_PER_ZONE: [usize; 3] = [35, 350, 3500];

/// One scenario to run.
#[derive(Debug, Clone)]
struct Plan {
    zones: usize,
    per_zone: usize,
    latency_ms: u64,
    rate_limit: Option<String>,
}

impl Plan {
    fn objects(&self) -> usize {
        self.zones * self.per_zone
    }

    fn name(&self) -> String {
        let sim = match &self.rate_limit {
            Some(r) => format!("lat{} rl{r}", self.latency_ms),
            None => format!("lat{}", self.latency_ms),
        };
        format!("{}x{} {sim}", self.zones, self.per_zone)
    }

    /// A file-name-safe form of the name.
    fn slug(&self) -> String {
        self.name()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }

    fn sim_args(&self) -> Vec<String> {
        let mut a = vec!["--latency-ms".to_string(), self.latency_ms.to_string()];
        if let Some(r) = &self.rate_limit {
            a.extend(["--rate-limit".to_string(), r.clone()]);
        }
        a
    }
}

/// What every scenario shares.
struct Ctx {
    args: Args,
    cp: ControlPlane,
    client: kube::Client,
    logs: PathBuf,
}

pub(crate) fn log(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse_with_ci();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            log("a call-count gate failed, or the budget scenario did not finish (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            log(format!("error: {e}"));
            ExitCode::from(2)
        }
    }
}

fn now_utc() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

async fn run(args: Args) -> Result<bool> {
    for bin in [&args.operator_bin, &args.sim_bin] {
        if !bin.is_file() {
            return Err(format!(
                "{} not found: build it with `cargo build --release` (hack/bench does)",
                bin.display()
            ));
        }
    }
    let started = now_utc();
    let stamp = started.strftime("%Y%m%dT%H%M%SZ").to_string();
    let logs = args.out.join("logs").join(&stamp);
    std::fs::create_dir_all(&logs).map_err(|e| format!("creating {}: {e}", logs.display()))?;

    log("starting the control plane (etcd + kube-apiserver)");
    let t = Instant::now();
    let cp = ControlPlane::start().await.map_err(|e| e.to_string())?;
    cluster::install_crd(&cp, &args.operator_bin).await?;
    log(format!(
        "control plane and CRD ready in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let client = cp.client();
    let ctx = Ctx {
        args: args.clone(),
        cp,
        client,
        logs: logs.clone(),
    };

    let mut scenarios = Vec::new();
    for plan in args.scenarios() {
        log(format!("scenario {}", plan.name()));
        scenarios.push(run_scenario(&ctx, &plan).await?);
    }
    let mut budget_error = None;
    let budget = if args.budget {
        log(format!(
            "scenario budget ({} zones × {})",
            args.budget_zones, args.budget_per_zone
        ));
        // A failed budget scenario (e.g. no convergence in its timeout) must not lose the
        // other workloads' figures: it is reported, and fails the run, but they are written.
        match budget::run(&ctx).await {
            Ok(b) => Some(b),
            Err(e) => {
                log(format!("budget scenario failed: {e}"));
                budget_error = Some(e);
                None
            }
        }
    } else {
        None
    };

    let mut checks: Vec<_> = scenarios.iter().flat_map(|s| s.checks()).collect();
    checks.extend(budget.iter().flat_map(|b| b.checks()));
    let passed = checks.iter().all(|c| c.met || !c.gating) && budget_error.is_none();
    let report = Report {
        started_at: started.to_string(),
        finished_at: now_utc().to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings: serde_json::to_value(&args).map_err(|e| e.to_string())?,
        scenarios,
        budget,
        budget_error,
        checks,
        passed,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    let file = args.out.join(format!("{stamp}.json"));
    for path in [&file, &args.out.join("latest.json")] {
        std::fs::write(path, &json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }

    println!();
    if !report.scenarios.is_empty() {
        println!("{}", report::table(&report.scenarios));
    }
    if let Some(b) = &report.budget {
        println!("{}", report::budget_table(b));
    }
    println!("targets:");
    print!("{}", report::checks_text(&report.checks));
    for s in report.scenarios.iter().filter(|s| s.operator_warnings > 0) {
        println!(
            "operator log of {}: {} WARN/ERROR lines, e.g.",
            s.name, s.operator_warnings
        );
        for w in &s.operator_warning_samples {
            println!("  {w}");
        }
    }
    println!();
    println!(
        "figures: {} (and latest.json); logs: {}",
        file.display(),
        logs.display()
    );
    Ok(passed)
}

/// Seconds since `t`.
pub(crate) fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Polls `done` every 50 ms until it holds; fails after `timeout` or if the operator exits.
pub(crate) async fn wait_until(
    what: &str,
    timeout: Duration,
    op: &mut Operator,
    mut done: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done().await? {
            return Ok(());
        }
        op.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!("{what}: not reached in {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long the operator must make no request, write or reconcile to count as quiet.
const QUIET: Duration = Duration::from_secs(3);
/// Longest wait for quiet; past it the figures are taken anyway and flagged unsettled.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the operator's activity counters and the simulator's request count stop
/// moving for [`QUIET`], so trailing writes (Events, a follow-up reconcile triggered by the
/// operator's own status writes) land in the phase that caused them, not in the steady
/// window. Returns whether it went quiet before [`SETTLE_LIMIT`].
pub(crate) async fn settle(op: &Operator, sim: &Sim) -> Result<bool> {
    let start = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    let mut quiet_since = Instant::now();
    while start.elapsed() < SETTLE_LIMIT {
        let m = op.metrics().await.map_or(0, |m| m.activity());
        let s = sim.stats().await?.requests_total;
        if (m, s) != last {
            last = (m, s);
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= QUIET {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(false)
}

pub(crate) fn calls(after: &SimStats, before: &SimStats) -> Calls {
    let by_operation = after.since(before);
    Calls {
        total: by_operation.values().sum(),
        writes: writes_in(&by_operation),
        throttled: after.status_since(before, "429"),
        by_operation,
    }
}

pub(crate) async fn metrics(op: &Operator) -> Result<Metrics> {
    op.metrics()
        .await
        .ok_or_else(|| "the operator's /metrics did not answer".to_string())
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// WARN and ERROR lines of a log, and up to three distinct ones (object names and the
/// timestamp cut, so repeats of one problem count once), shortened.
pub(crate) fn warnings(log: &std::path::Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut count = 0;
    let mut samples: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        count += 1;
        let short: String = line[at + 1..]
            .split_whitespace()
            .filter(|w| !w.starts_with("object="))
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(240)
            .collect();
        // Compare without the digits, which carry object names and numbers.
        let shape = |s: &str| {
            s.chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>()
        };
        if samples.len() < 3 && !samples.iter().any(|x| shape(x) == shape(&short)) {
            samples.push(short);
        }
    }
    (count, samples)
}

async fn run_scenario(ctx: &Ctx, plan: &Plan) -> Result<Scenario> {
    let args = &ctx.args;
    let timeout = Duration::from_secs(args.timeout_secs);
    let n = plan.objects();
    let ns = ctx
        .cp
        .create_namespace("bench")
        .await
        .map_err(|e| e.to_string())?;
    let zones: Vec<String> = (0..plan.zones).map(|_| cluster::random_zone()).collect();
    let items = cluster::items(&zones, plan.per_zone);
    let api: Api<OriginCloudRegionMapping> = Api::namespaced(ctx.client.clone(), &ns);

    // The floor first, in its own namespace, with nothing else running: the same objects,
    // the Kubernetes writes the operator must make for them, no Cloudflare.
    let floor_ns = ctx
        .cp
        .create_namespace("bench-floor")
        .await
        .map_err(|e| e.to_string())?;
    let floor_api: Api<OriginCloudRegionMapping> = Api::namespaced(ctx.client.clone(), &floor_ns);
    cluster::create_all(&floor_api, &items, args.concurrency).await?;
    let floor = floor::run(&ctx.client, &floor_api).await?;
    log(format!(
        "  floor writer: {} writes for {n} objects in {:.1} s ({} failed)",
        floor.writes.total(),
        floor.secs,
        floor.failed
    ));

    // Everything exists before the operator starts, so its first plan sees the whole zone.
    cluster::create_secret(&ctx.client, &ns).await?;
    cluster::declare_zones(&ctx.client, &ns, &zones).await?;
    let t = Instant::now();
    cluster::create_all(&api, &items, args.concurrency).await?;
    let create_secs = since(t);
    log(format!(
        "  created {n} objects in {create_secs:.1} s (namespace {ns})"
    ));
    let tracker = Tracker::start(api.clone()).await?;

    let slug = plan.slug();
    let sim = Sim::start(
        &args.sim_bin,
        &plan.sim_args(),
        &ctx.logs.join(format!("{slug}-sim.log")),
    )?;
    // Declared zones, the default mode: one CloudflareZone per zone, made above.
    let op_args = operator_args(ctx, &ns, &sim, &["--resync-interval", "1h"]);

    // Apply: operator start → all Ready.
    let s0 = sim.stats().await?;
    let t0 = Instant::now();
    let mut op = Operator::start(
        &args.operator_bin,
        &op_args,
        &ctx.logs.join(format!("{slug}-operator.log")),
        &args
            .operator_wrapper
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>(),
    )?;
    wait_until("all Ready", timeout, &mut op, async || {
        Ok(tracker.counts().ready == n)
    })
    .await?;
    let ready_secs = since(t0);
    let (hwm_ready, _) = op.rss_kib()?;
    let cpu_ready = op.cpu_secs()?;
    log(format!("  all {n} Ready in {ready_secs:.1} s"));
    let settled = settle(&op, &sim).await?;
    let s1 = sim.stats().await?;
    let m1 = metrics(&op).await?;
    let mut remote_mappings = 0;
    for z in &zones {
        remote_mappings += sim.zone_len(z).await?;
    }
    let per_zone = cluster::per_zone(&items);
    let lower_bound: u64 = per_zone
        .values()
        .map(|k| 2 * (*k as u64).div_ceil(100))
        .sum();
    let apply_calls = calls(&s1, &s0);
    let apply_kube = m1.kube_writes();
    let call_floor: u64 = per_zone
        .values()
        .map(|k| (*k as u64).div_ceil(100) + 1)
        .sum::<u64>()
        + 1;
    let per = |x: f64| x / n.max(1) as f64;
    let cost = Cost {
        ready_ms: per(ready_secs * 1000.0),
        calls: per(apply_calls.total as f64),
        kube_writes: per(apply_kube.total() as f64),
        rss_kib: per(hwm_ready as f64),
        cpu_ms: per(cpu_ready * 1000.0),
    };
    let apply = Apply {
        cpu_secs: cpu_ready,
        call_floor,
        call_floor_ratio: apply_calls.total as f64 / call_floor.max(1) as f64,
        floor_secs: floor.secs,
        floor_ratio: ready_secs / floor.secs.max(1e-9),
        floor_writes: (floor.writes, floor.failed),
        cost,
        ready_secs,
        settled,
        ratio: apply_calls.total as f64 / lower_bound.max(1) as f64,
        calls: apply_calls,
        lower_bound,
        remote_mappings,
        kube_writes: apply_kube,
        per_object: PerObject::of(&apply_kube, n),
        reconciles: m1.reconciles(),
        rate_limit_waits: m1.rate_limit_waits(),
        rss_at_ready_mib: mib(hwm_ready),
    };

    // Steady state: nothing changes, so nothing may be written.
    log(format!("  steady-state window of {} s", args.steady_secs));
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let steady_secs = since(t);
    let s2 = sim.stats().await?;
    let m2 = metrics(&op).await?;
    let steady = Steady {
        secs: steady_secs,
        calls: calls(&s2, &s1),
        kube_writes: m2.kube_writes().since(&apply_kube),
    };

    // Delete-all: until every object is gone and every zone is empty.
    log("  deleting every object");
    let cpu_before_delete = op.cpu_secs()?;
    let t = Instant::now();
    cluster::delete_all(&api, &items, args.concurrency).await?;
    let issue_secs = since(t);
    let sim_ref = &sim;
    let zones_ref = &zones;
    let tracker_ref = &tracker;
    let mut last_zone_check = Instant::now() - Duration::from_secs(1);
    wait_until("all deleted", timeout, &mut op, async || {
        if tracker_ref.counts().existing > 0 {
            return Ok(false);
        }
        // The admin dump is cheap but not free: look at most every 100 ms.
        if last_zone_check.elapsed() < Duration::from_millis(100) {
            return Ok(false);
        }
        last_zone_check = Instant::now();
        for z in zones_ref {
            if sim_ref.zone_len(z).await? > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let delete_secs = since(t);
    log(format!("  all deleted in {delete_secs:.1} s"));
    settle(&op, &sim).await?;
    let s3 = sim.stats().await?;
    let m3 = metrics(&op).await?;
    let (hwm_end, _) = op.rss_kib()?;
    let cpu_delete = op.cpu_secs()? - cpu_before_delete;
    op.stop();
    let (operator_warnings, operator_warning_samples) =
        warnings(&ctx.logs.join(format!("{slug}-operator.log")));
    drop(sim);
    drop(tracker);
    let delete_calls = calls(&s3, &s2);
    let delete_lb: u64 = per_zone.values().map(|k| (*k as u64).div_ceil(100)).sum();
    let delete_kube = m3.kube_writes().since(&m2.kube_writes());
    let delete_lists = delete_calls.by_operation.get("list").copied().unwrap_or(0);
    let delete = Delete {
        cpu_secs: cpu_delete,
        lists: delete_lists,
        call_floor_ratio: (delete_calls.total - delete_lists) as f64 / delete_lb.max(1) as f64,
        secs: delete_secs,
        issue_secs,
        ratio: delete_calls.total as f64 / delete_lb.max(1) as f64,
        calls: delete_calls,
        lower_bound: delete_lb,
        kube_writes: delete_kube,
        per_object: PerObject::of(&delete_kube, n),
        reconciles: m3.reconciles() - m2.reconciles(),
    };

    let baseline = if args.skip_baseline {
        None
    } else {
        let rate = plan
            .rate_limit
            .as_deref()
            .map(parse_rate_limit)
            .transpose()?;
        // Under a rate limit the full per-object run would take tens of minutes.
        let cap = rate.map(|_| args.baseline_cap);
        log(format!(
            "  naive baseline ({} objects, one at a time)",
            cap.map_or(n, |c| c.min(n))
        ));
        let sim = Sim::start(
            &args.sim_bin,
            &plan.sim_args(),
            &ctx.logs.join(format!("{slug}-baseline-sim.log")),
        )?;
        Some(baseline::run(&sim, &items, cap, rate).await?)
    };

    Ok(Scenario {
        name: plan.name(),
        zones: plan.zones,
        objects: n,
        latency_ms: plan.latency_ms,
        rate_limit: plan.rate_limit.clone(),
        create_secs,
        apply,
        steady,
        delete,
        peak_rss_mib: mib(hwm_end),
        operator_warnings,
        operator_warning_samples,
        baseline,
    })
}
