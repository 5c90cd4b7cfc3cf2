//! The naive baseline: what a per-object controller costs. For each object, one at a time,
//! a GET of its IP then a PUT; for deletion, a DELETE each. It runs against its own
//! simulator with the same flags as the operator's, so neither eats the other's rate-limit
//! budget and each simulator's counters belong to one side only.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::cluster::{Item, TOKEN};
use crate::procs::{Result, Sim};

/// What the baseline measured, and the same scaled to the full workload when it ran on a
/// prefix of the objects.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Objects actually driven through the simulator.
    pub objects_run: usize,
    /// Objects of the workload.
    pub objects: usize,
    /// Whether the `*_full` figures are extrapolated from `objects_run` < `objects`.
    pub extrapolated: bool,
    /// Seconds to apply `objects_run` objects.
    pub apply_secs: f64,
    /// Requests for that (429s included, as the simulator counts them).
    pub apply_calls: u64,
    /// Seconds to delete them.
    pub delete_secs: f64,
    /// Requests for that.
    pub delete_calls: u64,
    /// 429 answers seen (retried after Retry-After).
    pub throttled: u64,
    /// Apply seconds for the whole workload (measured, or extrapolated).
    pub apply_secs_full: f64,
    /// Apply requests for the whole workload.
    pub apply_calls_full: u64,
    /// Delete seconds for the whole workload.
    pub delete_secs_full: f64,
    /// Delete requests for the whole workload.
    pub delete_calls_full: u64,
}

/// A simulator rate limit: `limit` requests per sliding `window`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
}

/// Runs the baseline for `items` (all of them, or the first `cap` when given) on `sim`.
pub async fn run(
    sim: &Sim,
    items: &[Item],
    cap: Option<usize>,
    rate: Option<RateLimit>,
) -> Result<Baseline> {
    let run_items = &items[..cap.unwrap_or(items.len()).min(items.len())];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let base = sim.base_url();
    let mut throttled = 0;

    let before = sim.stats().await?;
    let start = Instant::now();
    for it in run_items {
        let url = format!("{base}/zones/{}/origin/cloud_regions/{}", it.zone, it.ip);
        // A per-object controller reads its entry, then writes it when it differs (here it is
        // always absent, so always written).
        let status = send(&http, reqwest::Method::GET, &url, None, &mut throttled).await?;
        if status != 200 && status != 404 {
            return Err(format!("baseline GET {url}: HTTP {status}"));
        }
        let body = json!({"origin_ip": it.ip, "vendor": "aws", "region": "us-east-1"});
        let status = send(
            &http,
            reqwest::Method::PUT,
            &url,
            Some(&body),
            &mut throttled,
        )
        .await?;
        if status != 200 {
            return Err(format!("baseline PUT {url}: HTTP {status}"));
        }
    }
    let apply_secs = start.elapsed().as_secs_f64();
    let mid = sim.stats().await?;

    let start = Instant::now();
    for it in run_items {
        let url = format!("{base}/zones/{}/origin/cloud_regions/{}", it.zone, it.ip);
        let status = send(&http, reqwest::Method::DELETE, &url, None, &mut throttled).await?;
        if status != 200 && status != 404 {
            return Err(format!("baseline DELETE {url}: HTTP {status}"));
        }
    }
    let delete_secs = start.elapsed().as_secs_f64();
    let after = sim.stats().await?;

    let apply_calls = mid.requests_total - before.requests_total;
    let delete_calls = after.requests_total - mid.requests_total;
    let (n, k) = (items.len() as f64, run_items.len().max(1) as f64);
    let extrapolated = run_items.len() < items.len();
    let scale = |x: f64| x * n / k;
    let apply_calls_full = scale(apply_calls as f64).round() as u64;
    let delete_calls_full = scale(delete_calls as f64).round() as u64;
    let (mut apply_secs_full, mut delete_secs_full) = (scale(apply_secs), scale(delete_secs));
    if extrapolated {
        // Linear scaling ignores the rate limit the prefix stayed under; the full run cannot
        // be faster than the sliding window allows: after the first `limit` requests, each
        // further `limit` needs another window. Apply comes first, so delete gets what is
        // left of the budget.
        if let Some(r) = rate {
            let floor = |calls: u64| -> f64 {
                (calls.saturating_sub(1) / r.limit) as f64 * r.window.as_secs_f64()
            };
            let apply_floor = floor(apply_calls_full);
            let total_floor = floor(apply_calls_full + delete_calls_full);
            apply_secs_full = apply_secs_full.max(apply_floor);
            delete_secs_full = delete_secs_full.max(total_floor - apply_floor);
        }
    }
    Ok(Baseline {
        objects_run: run_items.len(),
        objects: items.len(),
        extrapolated,
        apply_secs,
        apply_calls,
        delete_secs,
        delete_calls,
        throttled,
        apply_secs_full,
        apply_calls_full,
        delete_secs_full,
        delete_calls_full,
    })
}

/// One request; a 429 is waited out (Retry-After) and retried, as any client must.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&serde_json::Value>,
    throttled: &mut u64,
) -> Result<u16> {
    loop {
        let mut req = http.request(method.clone(), url).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("baseline {method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Drain the body so the connection is reused.
        let _ = resp.bytes().await;
        if status != 429 {
            return Ok(status);
        }
        *throttled += 1;
        tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).max(1))).await;
    }
}
