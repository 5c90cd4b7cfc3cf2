//! The two processes under measurement: the simulator (`cf-origin-sim`) and the operator
//! (`origin-region-operator run`), plus what the bench reads from them: the simulator's
//! request counters, the operator's Prometheus metrics and its peak RSS.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Result type of the bench: errors are reported as text and end the run.
pub type Result<T, E = String> = std::result::Result<T, E>;

/// A free loopback port (bound then released; the race is acceptable on a bench host).
pub fn free_port() -> Result<u16> {
    testbed::launch::free_port().map_err(|e| format!("free port: {e}"))
}

/// Spawns `cmd` so that the kernel kills it if the bench dies (even by SIGKILL): a stray
/// operator or simulator would otherwise keep loading a machine shared with others.
///
/// Linux ties the parent-death signal to the thread that forked, so callers spawn only from
/// the main future (polled on the process's main thread by `#[tokio::main]`).
fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: runs between fork and exec and calls only async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to `pid`, or to its whole process group when `group`.
fn signal(pid: u32, signal: libc::c_int, group: bool) {
    let target = if group {
        -(pid as libc::pid_t)
    } else {
        pid as libc::pid_t
    };
    // SAFETY: kill(2) with a PID (or the group it leads) that we spawned and have not reaped.
    unsafe {
        libc::kill(target, signal);
    }
}

/// Stops a child: SIGTERM, up to `grace` for a clean exit, then SIGKILL. With `group`, the
/// signals go to the child's process group, so what a profiling wrapper started dies too.
fn stop(child: &mut Child, grace: Duration, group: bool) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM, group);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            if group {
                // The wrapper may exit before what it started.
                signal(child.id(), libc::SIGKILL, true);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(child.id(), libc::SIGKILL, group);
    let _ = child.wait();
}

/// Counters of one simulator operation (`GET /__sim/stats`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct OpStats {
    /// Requests of the operation.
    pub total: u64,
    /// Requests by HTTP status, or "dropped" / "truncated".
    #[serde(default)]
    pub by_status: BTreeMap<String, u64>,
}

/// The simulator's counters at one moment.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct SimStats {
    /// API requests of every operation.
    pub requests_total: u64,
    /// Operation → counters.
    pub operations: BTreeMap<String, OpStats>,
}

/// Operations that change remote state; a steady state must make none of them.
pub const WRITE_OPS: [&str; 8] = [
    "put",
    "delete",
    "batch_put",
    "batch_delete",
    "legacy_create",
    "legacy_edit",
    "legacy_batch_edit",
    "legacy_delete",
];

impl SimStats {
    /// Counts accrued since `earlier`, by operation, omitting operations with none.
    pub fn since(&self, earlier: &SimStats) -> BTreeMap<String, u64> {
        self.operations
            .iter()
            .filter_map(|(op, s)| {
                let before = earlier.operations.get(op).map_or(0, |b| b.total);
                let n = s.total.saturating_sub(before);
                (n > 0).then(|| (op.clone(), n))
            })
            .collect()
    }

    /// Requests answered with `status` since `earlier`, over all operations.
    pub fn status_since(&self, earlier: &SimStats, status: &str) -> u64 {
        let count = |s: &SimStats| -> u64 {
            s.operations
                .values()
                .filter_map(|o| o.by_status.get(status))
                .sum()
        };
        count(self).saturating_sub(count(earlier))
    }
}

/// Sum of the write operations in a per-operation count map.
pub fn writes_in(ops: &BTreeMap<String, u64>) -> u64 {
    ops.iter()
        .filter(|(op, _)| WRITE_OPS.contains(&op.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// A running simulator; killed when dropped.
pub struct Sim {
    child: Child,
    origin: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts `bin` on a free loopback port with `extra` flags; its stderr goes to `log`.
    pub fn start(bin: &Path, extra: &[String], log: &Path) -> Result<Sim> {
        Sim::start_logging(bin, extra, log, "warn")
    }

    /// [`Sim::start`] with the log filter `rust_log` (e.g. one that logs every API request).
    pub fn start_logging(bin: &Path, extra: &[String], log: &Path, rust_log: &str) -> Result<Sim> {
        let log_file =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = spawn_tied(cmd).map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let origin = testbed::launch::await_listening(&mut child, Duration::from_secs(30))
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Sim {
            origin,
            child,
            http,
        })
    }

    /// The API base the operator is given, `http://127.0.0.1:PORT/client/v4`.
    pub fn base_url(&self) -> String {
        format!("{}/client/v4", self.origin)
    }

    /// A handle on the admin routes that tasks can own.
    pub fn admin(&self) -> SimAdmin {
        SimAdmin {
            origin: self.origin.clone(),
            http: self.http.clone(),
        }
    }

    /// The counters now.
    pub async fn stats(&self) -> Result<SimStats> {
        self.admin_get("/stats").await
    }

    /// Number of mappings the zone holds now (admin dump, not counted in the stats).
    pub async fn zone_len(&self, zone: &str) -> Result<usize> {
        #[derive(Deserialize)]
        struct Dump {
            mappings: Vec<serde_json::Value>,
        }
        let dump: Dump = self.admin_get(&format!("/zones/{zone}")).await?;
        Ok(dump.mappings.len())
    }

    /// Replaces the zone's mappings with `(origin_ip, vendor, region)` entries (admin seed,
    /// not counted in the stats), as if made before the operator ran.
    pub async fn seed_zone(&self, zone: &str, entries: &[(String, String, String)]) -> Result<()> {
        let mappings: Vec<serde_json::Value> = entries
            .iter()
            .map(|(ip, vendor, region)| {
                serde_json::json!({"origin_ip": ip, "vendor": vendor, "region": region})
            })
            .collect();
        let url = format!("{}/__sim/zones/{zone}", self.origin);
        let resp = self
            .http
            .put(&url)
            .json(&serde_json::json!({ "mappings": mappings }))
            .send()
            .await
            .map_err(|e| format!("PUT {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("PUT {url}: HTTP {}", resp.status()));
        }
        Ok(())
    }

    async fn admin_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}/__sim{path}", self.origin);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("GET {url}: {e}"))
    }
}

/// The simulator's admin routes, without owning the process.
#[derive(Clone)]
pub struct SimAdmin {
    origin: String,
    http: reqwest::Client,
}

impl SimAdmin {
    /// Region of the zone's entry at `ip` now, if it exists (admin dump, not counted).
    pub async fn region_of(&self, zone: &str, ip: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct Entry {
            origin_ip: String,
            region: String,
        }
        #[derive(Deserialize)]
        struct Dump {
            mappings: Vec<Entry>,
        }
        let url = format!("{}/__sim/zones/{zone}", self.origin);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let dump: Dump = resp.json().await.map_err(|e| format!("GET {url}: {e}"))?;
        Ok(dump
            .mappings
            .into_iter()
            .find(|e| e.origin_ip == ip)
            .map(|e| e.region))
    }
}

/// Per zone, the wall-clock times of the answered (200) list requests in a simulator log written with
/// `cf_origin_sim=debug` (one "api request" line per request).
pub fn list_times(log: &Path) -> BTreeMap<String, Vec<jiff::Timestamp>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: BTreeMap<String, Vec<jiff::Timestamp>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("api request")) {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(|v| v.trim_matches('"'))
        };
        // A throttled list read nothing: only answered ones count as a check of the zone.
        if field("op=") != Some("list") || field("outcome=") != Some("200") {
            continue;
        }
        let Some(zone) = field("path=")
            .and_then(|p| p.split_once("/zones/"))
            .and_then(|(_, rest)| rest.split('/').next())
        else {
            continue;
        };
        let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        out.entry(zone.to_string()).or_default().push(at);
    }
    out
}

impl Drop for Sim {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(2), false);
    }
}

/// A running operator; stopped when dropped.
pub struct Operator {
    child: Child,
    metrics_url: String,
    http: reqwest::Client,
}

impl Operator {
    /// Starts `bin run` with `args` (the caller passes everything but the metrics address);
    /// stdout and stderr go to `log`. A non-empty `wrapper` (e.g. `heaptrack -o FILE`) is
    /// put in front of the command for profiling; the RSS figures are then the wrapper's.
    pub fn start(bin: &Path, args: &[String], log: &Path, wrapper: &[String]) -> Result<Operator> {
        let log_file =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("log {}: {e}", log.display()))?;
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // Its own process group, so `stop` reaches a wrapper's children as well.
        cmd.process_group(0);
        cmd.arg("run")
            .args(args)
            .arg("--metrics-addr")
            .arg(&metrics_addr)
            .env("RUST_LOG", "info")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        let child = spawn_tied(cmd).map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Operator {
            child,
            metrics_url: format!("http://{metrics_addr}/metrics"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("http client: {e}"))?,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the operator exited: {status}")),
            Err(e) => Err(format!("checking the operator: {e}")),
        }
    }

    /// The operator's metrics now; `None` until its server answers.
    pub async fn metrics(&self) -> Option<Metrics> {
        let resp = self.http.get(&self.metrics_url).send().await.ok()?;
        let text = resp.text().await.ok()?;
        Some(Metrics::parse(&text))
    }

    /// Peak and current resident set size in KiB (`VmHWM`, `VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> Result<(u64, u64)> {
        let path = PathBuf::from(format!("/proc/{}/status", self.pid()));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("no {name} in {}", path.display()))
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// CPU seconds the process has used so far, user + system (`utime + stime` of
    /// /proc/PID/stat, in clock ticks of `sysconf(_SC_CLK_TCK)`).
    pub fn cpu_secs(&self) -> Result<f64> {
        cpu_secs_of(self.pid())
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10), true);
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_secs_of(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| format!("{path}: no utime/stime"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// `utime + stime` (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is the 12th of those, stime the 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One Prometheus sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The operator's metrics at one moment.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus/OpenMetrics text format (the subset prometheus-client writes:
    /// no escaped quotes or commas inside label values, which our labels never contain).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (head, value) = line.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match head.split_once('{') {
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}')?;
                        let labels = body
                            .split(',')
                            .filter(|p| !p.is_empty())
                            .filter_map(|p| {
                                let (k, v) = p.split_once('=')?;
                                Some((k.to_string(), v.trim_matches('"').to_string()))
                            })
                            .collect();
                        (name.to_string(), labels)
                    }
                    None => (head.to_string(), BTreeMap::new()),
                };
                Some(Sample {
                    name,
                    labels,
                    value,
                })
            })
            .collect();
        Metrics { samples }
    }

    /// Sum of `name`'s samples whose labels include every `(key, value)` of `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Writes to Kubernetes by kind (finalizer, status, event).
    pub fn kube_writes(&self) -> KubeWrites {
        let w = |kind: &str| self.sum(KUBE_WRITES, &[("kind", kind)]) as u64;
        KubeWrites {
            finalizer: w("finalizer"),
            status: w("status"),
            event: w("event"),
        }
    }

    /// Everything the bench watches for quiescence: Kubernetes writes, Cloudflare requests
    /// and zone reconciles.
    pub fn activity(&self) -> u64 {
        (self.sum(KUBE_WRITES, &[])
            + self.sum(CF_REQUESTS, &[])
            + self.sum("origin_region_operator_zone_reconciles_total", &[])) as u64
    }

    /// Client-side rate-limiter waits and the seconds spent in them.
    pub fn rate_limit_waits(&self) -> (u64, f64) {
        (
            self.sum(
                "origin_region_operator_cloudflare_rate_limit_waits_total",
                &[],
            ) as u64,
            self.sum(
                "origin_region_operator_cloudflare_rate_limit_wait_seconds_total",
                &[],
            ),
        )
    }

    /// The value of a metric without labels, `None` when the operator does not export it.
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }

    /// Zone reconciles so far.
    pub fn reconciles(&self) -> u64 {
        self.sum("origin_region_operator_zone_reconciles_total", &[]) as u64
    }
}

/// Name of the operator's Kubernetes-write counter.
const KUBE_WRITES: &str = "origin_region_operator_kube_writes_total";
/// Name of the operator's Cloudflare-request counter.
const CF_REQUESTS: &str = "origin_region_operator_cloudflare_requests_total";

/// Kubernetes writes of the operator by kind.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct KubeWrites {
    /// Finalizer added or removed.
    pub finalizer: u64,
    /// Status written.
    pub status: u64,
    /// Event published.
    pub event: u64,
}

impl KubeWrites {
    /// Writes since `earlier`.
    pub fn since(&self, earlier: &KubeWrites) -> KubeWrites {
        KubeWrites {
            finalizer: self.finalizer.saturating_sub(earlier.finalizer),
            status: self.status.saturating_sub(earlier.status),
            event: self.event.saturating_sub(earlier.event),
        }
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.finalizer + self.status + self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_metrics() {
        let text = "# HELP x\n\
            origin_region_operator_kube_writes_total{kind=\"status\"} 7\n\
            origin_region_operator_kube_writes_total{kind=\"finalizer\"} 3\n\
            origin_region_operator_cloudflare_requests_total{operation=\"list\",status=\"200\"} 2\n\
            origin_region_operator_cloudflare_rate_limit_wait_seconds_total 1.5\n\
            # EOF\n";
        let m = Metrics::parse(text);
        assert_eq!(
            m.kube_writes(),
            KubeWrites {
                finalizer: 3,
                status: 7,
                event: 0
            }
        );
        assert_eq!(m.sum(CF_REQUESTS, &[("operation", "list")]), 2.0);
        assert_eq!(m.activity(), 12);
        assert_eq!(m.rate_limit_waits(), (0, 1.5));
    }

    #[test]
    fn parses_proc_stat_cpu_ticks() {
        let stat = "1234 (origin (x) op) S 1 1234 1234 0 -1 4194560 2048 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert!(cpu_secs_of(std::process::id()).is_ok());
    }

    #[test]
    fn list_times_from_sim_log() {
        let dir = std::env::temp_dir().join(format!("bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sim.log");
        std::fs::write(
            &log,
            "2026-12-01T12:00:00.5Z DEBUG cf_origin_sim::routes: api request method=GET \
             path=/client/v4/zones/abc/origin/cloud_regions op=\"list\" outcome=200\n\
             2026-12-01T12:00:01Z DEBUG cf_origin_sim::routes: api request method=PUT \
             path=/client/v4/zones/abc/origin/cloud_regions op=\"batch_put\" outcome=200\n\
             2026-12-01T12:01:00.5Z DEBUG cf_origin_sim::routes: api request method=GET \
             path=/client/v4/zones/abc/origin/cloud_regions op=\"list\" outcome=429\n",
        )
        .unwrap();
        let t = list_times(&log);
        assert_eq!(t.len(), 1);
        assert_eq!(t["abc"].len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gauge_absent_is_none() {
        let m = Metrics::parse("a_b 3\n# EOF\n");
        assert_eq!(m.gauge("a_b"), Some(3.0));
        assert_eq!(m.gauge("c"), None);
    }

    #[test]
    fn sim_stats_differences() {
        let mk = |put: u64, list: u64, r429: u64| SimStats {
            requests_total: put + list,
            operations: [
                (
                    "batch_put".to_string(),
                    OpStats {
                        total: put,
                        by_status: [("429".to_string(), r429)].into(),
                    },
                ),
                (
                    "list".to_string(),
                    OpStats {
                        total: list,
                        by_status: BTreeMap::new(),
                    },
                ),
            ]
            .into(),
        };
        let (a, b) = (mk(1, 2, 0), mk(36, 2, 4));
        let d = b.since(&a);
        assert_eq!(d, [("batch_put".to_string(), 35)].into());
        assert_eq!(writes_in(&d), 35);
        assert_eq!(b.status_since(&a, "429"), 4);
    }
}
