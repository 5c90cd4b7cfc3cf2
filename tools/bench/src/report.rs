//! The figures of one bench run: per-scenario results, the targets of issue 7 checked
//! against them, the table printed at the end, and the JSON written under target/bench/.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::baseline::Baseline;
use crate::procs::KubeWrites;

/// Calls allowed per lower bound (issue 7's target).
pub const TARGET_RATIO: f64 = 1.1;
/// Above this ratio the run fails (a gross regression, not noise: call counts are exact).
pub const GATE_RATIO: f64 = 1.5;
/// Seconds to all Ready for the large single-zone workload on the simulator without latency.
pub const TARGET_READY_SECS: f64 = 30.0;
/// Objects at which the seconds target applies (the zone maximum).
pub const TARGET_READY_OBJECTS: usize = 3500;
/// Finalizer + status writes per object.
pub const TARGET_WRITES_PER_OBJECT: f64 = 2.0;
/// Peak RSS of the operator.
pub const TARGET_RSS_MIB: f64 = 64.0;

/// Kubernetes writes divided by the number of objects.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerObject {
    /// Finalizer writes per object.
    pub finalizer: f64,
    /// Status writes per object.
    pub status: f64,
    /// Finalizer + status per object (the ≤ 2 target).
    pub finalizer_and_status: f64,
    /// Events per object (reported apart from the target).
    pub event: f64,
    /// Everything per object.
    pub total: f64,
}

impl PerObject {
    /// `w` spread over `n` objects.
    pub fn of(w: &KubeWrites, n: usize) -> PerObject {
        let n = n.max(1) as f64;
        PerObject {
            finalizer: w.finalizer as f64 / n,
            status: w.status as f64 / n,
            finalizer_and_status: (w.finalizer + w.status) as f64 / n,
            event: w.event as f64 / n,
            total: w.total() as f64 / n,
        }
    }
}

/// Cloudflare calls of one phase, from the simulator's counters.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Calls {
    /// Operation → requests.
    pub by_operation: BTreeMap<String, u64>,
    /// All requests.
    pub total: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Write requests (put, delete, batches, legacy writes).
    pub writes: u64,
}

/// From operator start until every object is Ready and the operator went quiet.
#[derive(Debug, Clone, Serialize)]
pub struct Apply {
    /// Seconds from spawning the operator to every object Ready at its generation.
    pub ready_secs: f64,
    /// Whether the operator went quiet (no write, request or reconcile for the quiet period)
    /// before the figures were taken; false means it was still busy at the settle limit.
    pub settled: bool,
    /// Cloudflare calls.
    pub calls: Calls,
    /// The lower bound: 2·⌈n/100⌉ per zone (one batch write and one list page per 100).
    pub lower_bound: u64,
    /// `calls.total / lower_bound`.
    pub ratio: f64,
    /// Mappings the simulator holds afterwards (must equal the objects).
    pub remote_mappings: usize,
    /// Kubernetes writes of the operator.
    pub kube_writes: KubeWrites,
    /// The same per object.
    pub per_object: PerObject,
    /// Zone reconciles.
    pub reconciles: u64,
    /// Waits on the operator's client-side Cloudflare rate limiter, and seconds waited.
    pub rate_limit_waits: (u64, f64),
    /// VmHWM when all were Ready, MiB.
    pub rss_at_ready_mib: f64,
}

/// The steady-state window: nothing changed, so nothing may be written.
#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    /// Length of the window.
    pub secs: f64,
    /// Cloudflare calls in it.
    pub calls: Calls,
    /// Kubernetes writes in it.
    pub kube_writes: KubeWrites,
}

/// Deleting every object until all are gone and every zone is empty.
#[derive(Debug, Clone, Serialize)]
pub struct Delete {
    /// Seconds from the first delete request to the last object gone and zones empty.
    pub secs: f64,
    /// Seconds the bench took to issue the deletes (the operator works meanwhile).
    pub issue_secs: f64,
    /// Cloudflare calls.
    pub calls: Calls,
    /// ⌈n/100⌉ per zone: one batch delete per 100 (the snapshot is cached, no list needed).
    pub lower_bound: u64,
    /// `calls.total / lower_bound`.
    pub ratio: f64,
    /// Kubernetes writes of the operator (finalizer removals, Events).
    pub kube_writes: KubeWrites,
    /// The same per object.
    pub per_object: PerObject,
    /// Zone reconciles.
    pub reconciles: u64,
}

/// One workload on one simulator profile.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Short name, e.g. `1x3500 lat0`.
    pub name: String,
    /// Zones.
    pub zones: usize,
    /// Objects in all zones.
    pub objects: usize,
    /// Simulator latency per request.
    pub latency_ms: u64,
    /// Simulator rate limit (`N/SECONDS`), if any.
    pub rate_limit: Option<String>,
    /// Seconds the bench took to create the objects (before the operator starts).
    pub create_secs: f64,
    /// Convergence.
    pub apply: Apply,
    /// Steady state.
    pub steady: Steady,
    /// Delete-all.
    pub delete: Delete,
    /// Peak RSS of the operator over the whole scenario (VmHWM at the end), MiB.
    pub peak_rss_mib: f64,
    /// WARN and ERROR lines in the operator's log (none expected in these workloads).
    pub operator_warnings: usize,
    /// Up to three distinct such lines, shortened, to say what went wrong.
    pub operator_warning_samples: Vec<String>,
    /// The naive per-object baseline, unless skipped.
    pub baseline: Option<Baseline>,
}

/// One target checked against one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Scenario name.
    pub scenario: String,
    /// What is checked, with its threshold.
    pub target: String,
    /// The measured value.
    pub value: String,
    /// Whether the target is met.
    pub met: bool,
    /// Whether missing it fails the run (call counts only, never seconds).
    pub gating: bool,
}

impl Scenario {
    /// The issue's targets for this scenario.
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let mut add = |target: String, value: String, met: bool, gating: bool| {
            out.push(Check {
                scenario: self.name.clone(),
                target,
                value,
                met,
                gating,
            })
        };
        let a = &self.apply;
        add(
            format!("Cloudflare calls ≤ {TARGET_RATIO} × lower bound"),
            format!("{} / {} = {:.2}", a.calls.total, a.lower_bound, a.ratio),
            a.ratio <= TARGET_RATIO,
            false,
        );
        add(
            format!("Cloudflare calls ≤ {GATE_RATIO} × lower bound (gate)"),
            format!("{:.2}", a.ratio),
            a.ratio <= GATE_RATIO,
            true,
        );
        if self.latency_ms == 0 && self.rate_limit.is_none() && self.objects >= TARGET_READY_OBJECTS
        {
            add(
                format!("all Ready ≤ {TARGET_READY_SECS} s ({TARGET_READY_OBJECTS} objects, no latency)"),
                format!("{:.1} s", a.ready_secs),
                a.ready_secs <= TARGET_READY_SECS,
                false,
            );
        }
        add(
            format!("finalizer + status writes ≤ {TARGET_WRITES_PER_OBJECT} per object"),
            format!("{:.2}", a.per_object.finalizer_and_status),
            a.per_object.finalizer_and_status <= TARGET_WRITES_PER_OBJECT,
            false,
        );
        add(
            "steady state: 0 Cloudflare writes".into(),
            self.steady.calls.writes.to_string(),
            self.steady.calls.writes == 0,
            true,
        );
        add(
            "steady state: 0 Kubernetes writes".into(),
            self.steady.kube_writes.total().to_string(),
            self.steady.kube_writes.total() == 0,
            true,
        );
        add(
            format!("peak RSS ≤ {TARGET_RSS_MIB} MiB"),
            format!("{:.1} MiB", self.peak_rss_mib),
            self.peak_rss_mib <= TARGET_RSS_MIB,
            false,
        );
        add(
            "every object applied remotely".into(),
            format!("{} / {}", a.remote_mappings, self.objects),
            a.remote_mappings == self.objects,
            true,
        );
        out
    }
}

/// The whole run, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started (UTC).
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
    /// CPUs available to the run (the machine is shared: figures are wall-clock).
    pub cpus: usize,
    /// The flags after `--ci` defaults were applied.
    pub settings: serde_json::Value,
    /// Results per scenario.
    pub scenarios: Vec<Scenario>,
    /// Targets checked.
    pub checks: Vec<Check>,
    /// No gating check failed.
    pub passed: bool,
}

fn secs(x: f64) -> String {
    format!("{x:.1}")
}

fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

/// The figures as one table: a row per figure, a column per scenario.
pub fn table(scenarios: &[Scenario]) -> String {
    type Cell = Box<dyn Fn(&Scenario) -> String>;
    let mut rows: Vec<(String, Cell)> = Vec::new();
    let mut row = |label: &str, f: Cell| rows.push((label.to_string(), f));
    row(
        "zones × objects per zone",
        Box::new(|s| format!("{} × {}", s.zones, s.objects / s.zones.max(1))),
    );
    row(
        "simulator",
        Box::new(|s| match &s.rate_limit {
            Some(r) => format!("{} ms, {r}", s.latency_ms),
            None => format!("{} ms, no limit", s.latency_ms),
        }),
    );
    row(
        "objects created before start (s)",
        Box::new(|s| secs(s.create_secs)),
    );
    row(
        "operator start → all Ready (s)",
        Box::new(|s| secs(s.apply.ready_secs)),
    );
    let apply_ops: BTreeSet<String> = scenarios
        .iter()
        .flat_map(|s| s.apply.calls.by_operation.keys().cloned())
        .collect();
    for op in apply_ops {
        let label = format!("  CF calls: {op}");
        row(
            &label,
            Box::new(move |s| {
                s.apply
                    .calls
                    .by_operation
                    .get(&op)
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }),
        );
    }
    row(
        "  CF calls: total (429s)",
        Box::new(|s| format!("{} ({})", s.apply.calls.total, s.apply.calls.throttled)),
    );
    row(
        "  lower bound 2·⌈n/100⌉ per zone",
        Box::new(|s| s.apply.lower_bound.to_string()),
    );
    row(
        "  ratio calls / lower bound",
        Box::new(|s| ratio(s.apply.ratio)),
    );
    row(
        "  operator rate-limiter waits (s)",
        Box::new(|s| {
            format!(
                "{} ({:.1})",
                s.apply.rate_limit_waits.0, s.apply.rate_limit_waits.1
            )
        }),
    );
    row(
        "  zone reconciles",
        Box::new(|s| s.apply.reconciles.to_string()),
    );
    row(
        "kube writes/object: finalizer",
        Box::new(|s| ratio(s.apply.per_object.finalizer)),
    );
    row("  status", Box::new(|s| ratio(s.apply.per_object.status)));
    row(
        "  finalizer + status",
        Box::new(|s| ratio(s.apply.per_object.finalizer_and_status)),
    );
    row("  event", Box::new(|s| ratio(s.apply.per_object.event)));
    row("  total", Box::new(|s| ratio(s.apply.per_object.total)));
    row(
        "peak RSS, MiB (at Ready / end)",
        Box::new(|s| format!("{:.1} / {:.1}", s.apply.rss_at_ready_mib, s.peak_rss_mib)),
    );
    row(
        "steady window (s)",
        Box::new(|s| format!("{:.0}", s.steady.secs)),
    );
    row(
        "  CF writes / all CF calls",
        Box::new(|s| format!("{} / {}", s.steady.calls.writes, s.steady.calls.total)),
    );
    row(
        "  kube writes",
        Box::new(|s| s.steady.kube_writes.total().to_string()),
    );
    row("delete-all: seconds", Box::new(|s| secs(s.delete.secs)));
    let delete_ops: BTreeSet<String> = scenarios
        .iter()
        .flat_map(|s| s.delete.calls.by_operation.keys().cloned())
        .collect();
    for op in delete_ops {
        let label = format!("  CF calls: {op}");
        row(
            &label,
            Box::new(move |s| {
                s.delete
                    .calls
                    .by_operation
                    .get(&op)
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }),
        );
    }
    row(
        "  CF calls: total (429s)",
        Box::new(|s| format!("{} ({})", s.delete.calls.total, s.delete.calls.throttled)),
    );
    row(
        "  ratio vs ⌈n/100⌉ per zone",
        Box::new(|s| {
            format!(
                "{} / {} = {}",
                s.delete.calls.total,
                s.delete.lower_bound,
                ratio(s.delete.ratio)
            )
        }),
    );
    row(
        "  kube writes/object (fin/status/event)",
        Box::new(|s| {
            let p = &s.delete.per_object;
            format!("{:.2}/{:.2}/{:.2}", p.finalizer, p.status, p.event)
        }),
    );
    row(
        "  zone reconciles",
        Box::new(|s| s.delete.reconciles.to_string()),
    );
    let b = |f: fn(&Baseline, &Scenario) -> String| -> Cell {
        Box::new(move |s: &Scenario| match &s.baseline {
            Some(b) => f(b, s),
            None => "skipped".into(),
        })
    };
    row(
        "naive baseline: objects run",
        b(|b, _| {
            if b.extrapolated {
                format!("{} of {} (*)", b.objects_run, b.objects)
            } else {
                b.objects_run.to_string()
            }
        }),
    );
    row(
        "  apply: seconds",
        b(|b, _| {
            let star = if b.extrapolated { "*" } else { "" };
            format!("{}{star}", secs(b.apply_secs_full))
        }),
    );
    row(
        "  apply: CF calls",
        b(|b, _| {
            let star = if b.extrapolated { "*" } else { "" };
            format!("{}{star}", b.apply_calls_full)
        }),
    );
    row(
        "  delete: seconds",
        b(|b, _| {
            let star = if b.extrapolated { "*" } else { "" };
            format!("{}{star}", secs(b.delete_secs_full))
        }),
    );
    row(
        "  delete: CF calls",
        b(|b, _| {
            let star = if b.extrapolated { "*" } else { "" };
            format!("{}{star}", b.delete_calls_full)
        }),
    );
    row(
        "  baseline / operator: apply calls",
        b(|b, s| {
            format!(
                "{:.0}×",
                b.apply_calls_full as f64 / s.apply.calls.total.max(1) as f64
            )
        }),
    );
    row(
        "  baseline / operator: delete calls",
        b(|b, s| {
            format!(
                "{:.0}×",
                b.delete_calls_full as f64 / s.delete.calls.total.max(1) as f64
            )
        }),
    );

    let header: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, f)| scenarios.iter().map(f).collect())
        .collect();
    let label_w = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        .max("figure".len());
    let col_w: Vec<usize> = (0..scenarios.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let lpad =
        |s: &str, w: usize| format!("{}{s}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut out = String::new();
    out.push_str(&pad("figure", label_w));
    for (h, w) in header.iter().zip(&col_w) {
        out.push_str(" | ");
        out.push_str(&lpad(h, *w));
    }
    out.push('\n');
    out.push_str(&"-".repeat(label_w));
    for w in &col_w {
        out.push_str("-+-");
        out.push_str(&"-".repeat(*w));
    }
    out.push('\n');
    for ((label, _), r) in rows.iter().zip(&cells) {
        out.push_str(&pad(label, label_w));
        for (c, w) in r.iter().zip(&col_w) {
            out.push_str(" | ");
            out.push_str(&lpad(c, *w));
        }
        out.push('\n');
    }
    if scenarios
        .iter()
        .any(|s| s.baseline.as_ref().is_some_and(|b| b.extrapolated))
    {
        out.push_str(
            "(*) extrapolated: the baseline ran on the first objects only (the simulator's rate \
             limit would make the full run take tens of minutes); calls scale linearly, seconds \
             linearly but never below what the rate limit's window allows.\n",
        );
    }
    out
}

/// The checks as lines, `met`/`MISSED` first.
pub fn checks_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match (c.met, c.gating) {
            (true, _) => "met   ",
            (false, true) => "FAILED",
            (false, false) => "MISSED",
        };
        out.push_str(&format!(
            "{mark}  {:<18} {:<58} {}\n",
            c.scenario, c.target, c.value
        ));
    }
    out
}
