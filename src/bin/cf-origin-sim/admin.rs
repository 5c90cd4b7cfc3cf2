//! Admin routes under `/__sim` (no auth, not counted in stats): stats, reset, faults,
//! zone dump/seed, Tiered Cache flags and credential rotation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use origin_region_operator::ip;
use origin_region_operator::wire::Mapping;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::AuthConfig;
use crate::envelope::json;
use crate::faults::Faults;
use crate::routes::valid_zone_id;
use crate::state::{now, to_mapping, Stored};

/// The admin router; merged beside the API fallback.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/__sim/stats", get(stats).delete(clear_stats))
        .route("/__sim/reset", post(reset))
        .route("/__sim/faults", get(get_faults).put(put_faults))
        .route(
            "/__sim/zones/{zone_id}",
            get(dump_zone).put(seed_zone).delete(delete_zone),
        )
        .route("/__sim/zones/{zone_id}/tiered-cache", put(tiered_cache))
        .route("/__sim/zones/{zone_id}/history", get(zone_history))
        .route("/__sim/auth", put(put_auth))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &json!({ "error": message.into() }))
}

/// A rejected admin request; kept small so `Result`s stay cheap to move.
struct Rejected(String);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

fn done() -> Response {
    json(StatusCode::OK, &json!({ "ok": true }))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejected> {
    serde_json::from_slice(body).map_err(|e| Rejected(format!("invalid JSON body: {e}")))
}

fn check_zone(zone: &str) -> Result<(), Rejected> {
    if valid_zone_id(zone) {
        Ok(())
    } else {
        Err(Rejected(
            "zone id must be 32 lowercase hex characters".into(),
        ))
    }
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, &app.stats.snapshot())
}

async fn clear_stats(State(app): State<Arc<App>>) -> Response {
    app.stats.clear();
    done()
}

async fn reset(State(app): State<Arc<App>>) -> Response {
    app.mutate(|s| {
        s.clear();
        ((), true)
    });
    app.stats.clear();
    app.gone.write().unwrap_or_else(|e| e.into_inner()).clear();
    *app.faults.write().unwrap_or_else(|e| e.into_inner()) = Faults::default();
    *app.auth.write().unwrap_or_else(|e| e.into_inner()) = app.start_auth.clone();
    if let Some(limiter) = &app.limiter {
        limiter.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    tracing::info!("state reset");
    done()
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, &app.faults())
}

async fn put_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let faults: Faults = match parse(&body) {
        Ok(f) => f,
        Err(rejected) => return rejected.into_response(),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    *app.faults.write().unwrap_or_else(|e| e.into_inner()) = faults;
    tracing::info!(?faults, "faults set");
    json(StatusCode::OK, &faults)
}

async fn dump_zone(State(app): State<Arc<App>>, Path(zone): Path<String>) -> Response {
    if let Err(rejected) = check_zone(&zone) {
        return rejected.into_response();
    }
    let store = app.store();
    let tiered_cache = store.tiered_cache(&zone);
    let mappings: Vec<Mapping> = store
        .zone(&zone)
        .map(|z| z.mappings.iter().map(|(ip, s)| to_mapping(ip, s)).collect())
        .unwrap_or_default();
    drop(store);
    json(
        StatusCode::OK,
        &json!({ "zone_id": zone, "tiered_cache": tiered_cache, "mappings": mappings }),
    )
}

/// The zone's recent API changes per IP (see `Zone::history`).
async fn zone_history(State(app): State<Arc<App>>, Path(zone): Path<String>) -> Response {
    if let Err(rejected) = check_zone(&zone) {
        return rejected.into_response();
    }
    let history = app
        .store()
        .zone(&zone)
        .map(|z| z.history.clone())
        .unwrap_or_default();
    json(
        StatusCode::OK,
        &json!({ "zone_id": zone, "history": history }),
    )
}

/// One seeded mapping; vendor and region are not checked against the catalog so drift
/// tests can plant anything, and `modified_on` may be given to fake an old change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedItem {
    origin_ip: String,
    vendor: String,
    region: String,
    #[serde(default)]
    modified_on: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    mappings: Vec<SeedItem>,
}

/// Deletes a zone as Cloudflare would when its owner removes it: its mappings go, and the API
/// answers it as an unknown zone until it is seeded again.
async fn delete_zone(State(app): State<Arc<App>>, Path(zone): Path<String>) -> Response {
    if let Err(rejected) = check_zone(&zone) {
        return rejected.into_response();
    }
    app.gone
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(zone.clone());
    app.mutate(|s| {
        let z = s.zone_mut(&zone);
        z.mappings.clear();
        s.tidy(&zone);
        ((), true)
    });
    json(StatusCode::OK, &json!({ "zone_id": zone, "deleted": true }))
}

async fn seed_zone(State(app): State<Arc<App>>, Path(zone): Path<String>, body: Bytes) -> Response {
    if let Err(rejected) = check_zone(&zone) {
        return rejected.into_response();
    }
    app.gone
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&zone);
    let seed: Seed = match parse(&body) {
        Ok(s) => s,
        Err(rejected) => return rejected.into_response(),
    };
    let now = now();
    let mut entries = Vec::with_capacity(seed.mappings.len());
    for m in seed.mappings {
        match ip::canonicalize(&m.origin_ip) {
            Ok(ip) => entries.push((
                ip,
                Stored {
                    vendor: m.vendor,
                    region: m.region,
                    modified_on: m.modified_on.unwrap_or_else(|| now.clone()),
                },
            )),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let count = app.mutate(|s| {
        let z = s.zone_mut(&zone);
        // Later duplicates overwrite earlier ones, as in a batch.
        z.mappings = entries.into_iter().collect();
        z.modified_on = (!z.mappings.is_empty()).then(|| now.clone());
        let count = z.mappings.len();
        s.tidy(&zone);
        (count, true)
    });
    json(StatusCode::OK, &json!({ "ok": true, "count": count }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TieredCache {
    enabled: bool,
}

async fn tiered_cache(
    State(app): State<Arc<App>>,
    Path(zone): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(rejected) = check_zone(&zone) {
        return rejected.into_response();
    }
    let tc: TieredCache = match parse(&body) {
        Ok(t) => t,
        Err(rejected) => return rejected.into_response(),
    };
    app.mutate(|s| {
        s.zone_mut(&zone).tiered_cache = tc.enabled;
        s.tidy(&zone);
        ((), true)
    });
    json(
        StatusCode::OK,
        &json!({ "zone_id": zone, "tiered_cache": tc.enabled }),
    )
}

async fn put_auth(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let auth: AuthConfig = match parse(&body) {
        Ok(a) => a,
        Err(rejected) => return rejected.into_response(),
    };
    if let Err(e) = auth.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    // Counts only: the credentials themselves never reach a log.
    tracing::info!(
        tokens = auth.tokens.len(),
        legacy_pair = auth.auth_email.is_some(),
        "credentials replaced"
    );
    *app.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
    done()
}
