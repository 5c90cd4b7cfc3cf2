//! `cf-origin-sim`: a local, stateful Cloudflare Origin Cloud Regions API.
//!
//! Serves both path families of shared/seeds under `/client/v4` from one in-memory store,
//! plus admin routes under `/__sim` (stats, reset, faults, seed/dump, Tiered Cache flags,
//! credential rotation). It is the tests', demo's and benchmarks' Cloudflare. On start it
//! prints exactly one stdout line, `listening on http://ADDR:PORT`; logs go to stderr
//! (`RUST_LOG`, default `info`; per-request lines at `debug`).
//!
//! # Choices where the seeds are silent
//!
//! Pipeline and envelopes
//! - Order per API request: latency (`--latency-ms` + fault `latency_ms`) → injected faults
//!   (drop, 429, 500/10002, 500/1140, each an independent draw) → routing errors → auth →
//!   `--rate-limit` → handler (→ `refuse_deletes`) → `truncate_body_rate`.
//! - Unknown path: 404 / 7000 "No route for that URI". Known path, wrong method: 405 / 7001
//!   with an `Allow` header. Zone id not 32 lowercase hex: 404 / 7003 "Could not route to
//!   /zones/<id>/..., perhaps your object identifier is invalid?". All three are answered
//!   before auth, as Cloudflare's router does. A trailing slash or empty segment is an
//!   unknown path. Path segments are percent-decoded (`2001%3Adb8%3A%3A1` works).
//! - Body that is not JSON, or of the wrong JSON shape (object vs array, non-object batch
//!   item): 400 / 10001. Bodies are read whatever the `Content-Type`; over 1 MiB → 400/10001.
//! - Auth: `Authorization: Bearer` wins when present (unknown token → 403 / 10000); else
//!   the `X-Auth-Email` + `X-Auth-Key` pair (wrong or lone header → 403 / 10000); no
//!   credentials → 401 / 10000 "Authentication error". No credential flags = token
//!   `dev-token`; with only the legacy pair given, no token is accepted.
//! - `--rate-limit N/S`: sliding window over authenticated API requests; rejected requests
//!   do not use up budget; 429 / 10013 with `Retry-After` = whole seconds until a slot
//!   frees (≥ 1). Injected 429s use the same envelope with `retry_after_secs`.
//! - Injected 500: code 10002 "Internal Server Error"; injected 1140: HTTP 500, seed 004's
//!   text. Drop: the connection closes before any byte of the response. Truncate: the full
//!   `Content-Length` is announced, half the body is sent, then the connection closes; the
//!   request itself took effect. Stats count these as "dropped" and "truncated".
//! - `refuse_deletes`: every delete (single, batch, legacy) → 403 / 9109 "Unauthorized to
//!   access requested resource", even for absent IPs.
//!
//! Validation and codes
//! - Item validation order: IP (1146 "Invalid or missing origin IP address."), then
//!   vendor/region, then the zone limit (403 / 1164). Unknown vendor, missing vendor or
//!   region, or a region no vendor offers → 400 / 1157; a region that exists only under
//!   another vendor (aws + `us-central1`) → 400 / 1156 "Failed to validate region against
//!   cloud vendor".
//! - 1142 (404) text: "No origin cloud region mapping exists for the specified IP."
//! - IPs: `origin_region_operator::ip::canonicalize` (rejects CIDR, zone suffixes, leading
//!   zero octets, whitespace); stored and returned canonical.
//! - Tiered Cache: on by default per zone. When off, only `supported_regions` (both
//!   families) fails: 400 / 1155 "Tiered Cache is not enabled for this zone; ...". PUT and
//!   the batches still validate against the catalog (the seeds name the precondition only
//!   on supported_regions).
//!
//! Current family `/zones/{z}/origin/cloud_regions`
//! - list: ordered by canonical IP string (byte order, so `10.0.0.10` < `10.0.0.2` and
//!   IPv4 before most IPv6); `page` ≥ 1 else 400 / 1146 "invalid page parameter, must be a
//!   positive integer"; `per_page` 1..=100 (default 20) else 400 / 1146 (seed 001 text);
//!   a page past the end is an empty `result` with true `total_count`/`total_pages`
//!   (`total_pages` = 0 for an empty zone). Unknown query parameters are ignored.
//! - put: path IP invalid → 400 / 1146; body `origin_ip` missing/invalid → 400 / 1146;
//!   body IP ≠ path IP after canonicalisation → 400 / 1146 "The origin_ip in the request
//!   body does not match the origin IP in the URL path."; new IP at the limit → 403 / 1164;
//!   replacing an existing IP at the limit is allowed. A PUT with the stored vendor and
//!   region is a no-op: `modified_on` stays unchanged.
//! - delete: 404 / 1142 when absent; result `{origin_ip}` (canonical).
//! - batch put: JSON array of ≤ 100 objects (more → 400 / 10001, nothing applied); items
//!   apply in order, so duplicates are all reported in `succeeded` and the last one wins;
//!   failed items carry Cloudflare's text for their code in `error` and `origin_ip` as
//!   sent (canonical when it parses, `""` when missing); items over the zone limit fail
//!   one by one with the 1164 text while earlier ones are kept.
//! - batch delete: body = JSON array of ≤ 100 `{origin_ip}`; an empty, whitespace or
//!   `null` body (the Python SDK sends none) deletes nothing and succeeds; succeeded items
//!   carry the deleted vendor/region; invalid IPs fail with the 1146 text, absent ones
//!   (including a repeat within the batch) with the 1142 text.
//!
//! Older family `/zones/{z}/cache/origin_cloud_regions` (same store)
//! - Every result is `{id: "origin_public_cloud_region", editable: true, modified_on,
//!   value}`; mappings spell the IP `origin-ip`; request bodies use `ip`.
//! - POST create: 400 / 1145 if the IP exists; `value` = the mapping, `modified_on` its time.
//! - PATCH edit: upsert; `value` = the whole list after the upsert (IP order);
//!   `modified_on` = last change of the zone's set.
//! - PATCH `/batch`: ≤ 100 items; if the distinct valid new IPs would exceed the limit,
//!   the whole request fails 403 / 1164 (seed 004) and nothing is applied; otherwise like
//!   batch put; `modified_on` null when nothing succeeded.
//! - GET (list, unpaginated), GET `{ip}` (`value` = mapping), DELETE `{ip}` (`value` =
//!   `{origin-ip}`, `modified_on` = the set's time after the delete, null once empty),
//!   GET `/supported_regions` (plain `{obtained_codes, vendors}`, not wrapped).
//!
//! State and admin
//! - `modified_on`: RFC 3339 UTC with milliseconds; the zone's set time goes null when its
//!   last mapping is deleted (the "rule record" is gone).
//! - `--state-file`: JSON `{version: 1, zones: {id: {tiered_cache, modified_on,
//!   mappings}}}`, written (temp file + rename) before the answer of every change; a
//!   missing file starts empty; an unreadable one stops the start-up.
//! - `POST /__sim/reset` empties mappings and Tiered Cache flags (the state file too) and
//!   restores faults, stats, the rate-limit window and the start-up credentials.
//! - `PUT /__sim/zones/{z}`: replaces mappings without catalog or limit checks (IPs are
//!   canonicalised; invalid → 400, nothing applied); items may carry `modified_on`.
//! - `DELETE /__sim/zones/{z}`: deletes the zone (as its owner removing it from the account):
//!   mappings go and the API answers 404 / 7003 for it until it is seeded again or reset.
//! - `GET /__sim/zones/{z}/history`: per IP its last 16 changes made through the API, with
//!   their times (`created`/`updated` vendor/region, `removed`), not persisted.
//! - Admin routes validate the zone id (400) and answer plain JSON, not envelopes.

mod admin;
mod app;
mod auth;
mod body;
mod catalog;
mod cli;
mod envelope;
mod faults;
mod legacy;
mod routes;
mod state;
mod stats;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use axum::serve::ListenerExt;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::auth::AuthConfig;
use crate::catalog::Catalog;
use crate::cli::Args;
use crate::faults::RateLimiter;
use crate::state::{Persister, Store};

/// The token accepted when no credential flag is given.
const DEV_TOKEN: &str = "dev-token";

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the tokio runtime failed");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let catalog = match &args.regions {
        Some(path) => Catalog::load(path)?,
        None => Catalog::default(),
    };
    let store = match &args.state_file {
        Some(path) => crate::state::load(path)?,
        None => Store::default(),
    };
    let auth = if args.tokens.is_empty() && args.auth_email.is_none() {
        AuthConfig {
            tokens: vec![DEV_TOKEN.to_string()],
            ..AuthConfig::default()
        }
    } else {
        AuthConfig {
            tokens: args.tokens.clone(),
            auth_email: args.auth_email.clone(),
            auth_key: args.auth_key.clone(),
        }
    };
    let limiter = args
        .rate_limit
        .map(|spec| RateLimiter::new(spec.limit, spec.window));
    let app = Arc::new(App::new(
        catalog,
        args.max_mappings,
        args.latency_ms,
        auth,
        limiter,
        store,
        args.state_file.clone().map(Persister::new),
    ));
    let router = admin::router().fallback(routes::handle).with_state(app);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    tracing::info!(
        %addr,
        max_mappings = args.max_mappings,
        latency_ms = args.latency_ms,
        rate_limit = ?args.rate_limit,
        state_file = ?args.state_file,
        "cf-origin-sim ready"
    );
    {
        // Tests and scripts wait for exactly this line, so flush it at once.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    // Small JSON answers on keep-alive connections: without TCP_NODELAY, Nagle plus delayed
    // ACKs can add ~40 ms to a request.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("serving: {e}"))
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
