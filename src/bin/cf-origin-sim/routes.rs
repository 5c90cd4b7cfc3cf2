//! The `/client/v4` API: routing, the per-request pipeline (latency, faults, auth, rate
//! limit), and the current path family `/zones/{z}/origin/cloud_regions`.
//!
//! Routing is done by hand rather than with axum's router so the operation is known (and
//! counted) before anything else happens, and so unknown paths, wrong methods and malformed
//! zone ids get Cloudflare's envelopes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use origin_region_operator::ip;
use origin_region_operator::wire::{
    codes, BatchItem, BatchResult, DeleteResult, ResultInfo, DEFAULT_PER_PAGE, MAX_PER_PAGE,
};
use serde_json::Value;

use crate::app::App;
use crate::body::{
    batch_items, echo_ip, parse_batch, parse_json, parse_object, str_field, validate_fields,
};
use crate::envelope::{ok, ok_page, text, ApiError, ApiResult};
use crate::faults::{dropped, hit, truncated};
use crate::legacy;
use crate::state::{now, validate};

/// Largest request body read; far above 100 batch items.
const MAX_BODY: usize = 1 << 20;

/// An API operation with its path parameters (the zone id is kept apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// GET `/origin/cloud_regions`.
    List,
    /// GET `/origin/cloud_regions/{ip}`.
    Get(String),
    /// PUT `/origin/cloud_regions/{ip}`.
    Put(String),
    /// DELETE `/origin/cloud_regions/{ip}`.
    Delete(String),
    /// PUT `/origin/cloud_regions/batch`.
    BatchPut,
    /// DELETE `/origin/cloud_regions/batch`.
    BatchDelete,
    /// GET `/origin/cloud_regions/supported_regions`.
    SupportedRegions,
    /// POST `/cache/origin_cloud_regions`.
    LegacyCreate,
    /// PATCH `/cache/origin_cloud_regions`.
    LegacyEdit,
    /// PATCH `/cache/origin_cloud_regions/batch`.
    LegacyBatchEdit,
    /// GET `/cache/origin_cloud_regions`.
    LegacyList,
    /// GET `/cache/origin_cloud_regions/{ip}`.
    LegacyGet(String),
    /// DELETE `/cache/origin_cloud_regions/{ip}`.
    LegacyDelete(String),
    /// GET `/cache/origin_cloud_regions/supported_regions`.
    LegacySupportedRegions,
}

impl Route {
    /// The operation name used in stats.
    pub fn op(&self) -> &'static str {
        match self {
            Route::List => "list",
            Route::Get(_) => "get",
            Route::Put(_) => "put",
            Route::Delete(_) => "delete",
            Route::BatchPut => "batch_put",
            Route::BatchDelete => "batch_delete",
            Route::SupportedRegions => "supported_regions",
            Route::LegacyCreate => "legacy_create",
            Route::LegacyEdit => "legacy_edit",
            Route::LegacyBatchEdit => "legacy_batch_edit",
            Route::LegacyList => "legacy_list",
            Route::LegacyGet(_) => "legacy_get",
            Route::LegacyDelete(_) => "legacy_delete",
            Route::LegacySupportedRegions => "legacy_supported_regions",
        }
    }

    fn is_delete(&self) -> bool {
        matches!(
            self,
            Route::Delete(_) | Route::BatchDelete | Route::LegacyDelete(_)
        )
    }
}

/// What a request path and method resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// A known operation on a zone (whose id is not validated yet).
    Route {
        /// Percent-decoded zone id.
        zone: String,
        /// The operation.
        route: Route,
    },
    /// No such path.
    NoRoute,
    /// A known path, but not with this method.
    MethodNotAllowed {
        /// The methods the path accepts.
        allow: &'static str,
    },
}

impl Matched {
    fn op(&self) -> &'static str {
        match self {
            Matched::Route { route, .. } => route.op(),
            _ => "unknown",
        }
    }
}

/// Resolves a request; literal `batch` and `supported_regions` segments win over `{ip}`.
pub fn classify(method: &Method, path: &str) -> Matched {
    let Some(rest) = path.strip_prefix("/client/v4/") else {
        return Matched::NoRoute;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Matched::NoRoute;
    }
    let (zone, family, tail) = match segs.as_slice() {
        ["zones", zone, "origin", "cloud_regions", tail @ ..] => (zone, false, tail),
        ["zones", zone, "cache", "origin_cloud_regions", tail @ ..] => (zone, true, tail),
        _ => return Matched::NoRoute,
    };
    let m = method.as_str();
    let route = match (family, tail) {
        (false, []) => match m {
            "GET" => Route::List,
            _ => return Matched::MethodNotAllowed { allow: "GET" },
        },
        (false, ["batch"]) => match m {
            "PUT" => Route::BatchPut,
            "DELETE" => Route::BatchDelete,
            _ => {
                return Matched::MethodNotAllowed {
                    allow: "PUT, DELETE",
                }
            }
        },
        (false, ["supported_regions"]) => match m {
            "GET" => Route::SupportedRegions,
            _ => return Matched::MethodNotAllowed { allow: "GET" },
        },
        (false, [ip]) => match m {
            "GET" => Route::Get(decode(ip)),
            "PUT" => Route::Put(decode(ip)),
            "DELETE" => Route::Delete(decode(ip)),
            _ => {
                return Matched::MethodNotAllowed {
                    allow: "GET, PUT, DELETE",
                }
            }
        },
        (true, []) => match m {
            "GET" => Route::LegacyList,
            "POST" => Route::LegacyCreate,
            "PATCH" => Route::LegacyEdit,
            _ => {
                return Matched::MethodNotAllowed {
                    allow: "GET, POST, PATCH",
                }
            }
        },
        (true, ["batch"]) => match m {
            "PATCH" => Route::LegacyBatchEdit,
            _ => return Matched::MethodNotAllowed { allow: "PATCH" },
        },
        (true, ["supported_regions"]) => match m {
            "GET" => Route::LegacySupportedRegions,
            _ => return Matched::MethodNotAllowed { allow: "GET" },
        },
        (true, [ip]) => match m {
            "GET" => Route::LegacyGet(decode(ip)),
            "DELETE" => Route::LegacyDelete(decode(ip)),
            _ => {
                return Matched::MethodNotAllowed {
                    allow: "GET, DELETE",
                }
            }
        },
        _ => return Matched::NoRoute,
    };
    Matched::Route {
        zone: decode(zone),
        route,
    }
}

/// Percent-decodes a path segment; undecodable input is kept as is (it then fails
/// validation as an IP or zone id instead of panicking or vanishing).
fn decode(seg: &str) -> String {
    if !seg.contains('%') {
        return seg.to_string();
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| seg.to_string())
}

/// Whether a zone id is 32 lowercase hex characters, as Cloudflare's identifiers are.
pub fn valid_zone_id(zone: &str) -> bool {
    zone.len() == 32
        && zone
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How a request ended, for the stats.
enum Outcome {
    Normal(Response),
    Dropped,
    Truncated(Response),
}

/// Entry point of every non-admin request.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let matched = classify(&parts.method, parts.uri.path());
    let op = matched.op();
    let outcome = run(&app, matched, &parts, body).await;
    let (resp, key) = match outcome {
        Outcome::Normal(r) => {
            let key = r.status().as_u16().to_string();
            (r, key)
        }
        Outcome::Dropped => (dropped(), "dropped".to_string()),
        Outcome::Truncated(r) => (r, "truncated".to_string()),
    };
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), op, outcome = %key, "api request");
    app.stats.record(op, &key);
    resp
}

async fn run(
    app: &App,
    matched: Matched,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Outcome {
    let faults = app.faults();
    let latency = app.latency_ms.saturating_add(faults.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    // Injected faults stand for trouble in front of the API (edge, network), so they fire
    // before routing and auth.
    if hit(faults.rate_drop) {
        return Outcome::Dropped;
    }
    if hit(faults.rate_429) {
        return Outcome::Normal(ApiError::rate_limited(faults.retry_after_secs).into_response());
    }
    if hit(faults.rate_500) {
        return Outcome::Normal(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            )
            .into_response(),
        );
    }
    if hit(faults.rate_1140) {
        return Outcome::Normal(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                text::INTERNAL_1140,
            )
            .into_response(),
        );
    }
    let resp = match admit(app, matched, parts) {
        Err(e) => e.into_response(),
        Ok((zone, route)) => {
            if faults.refuse_deletes && route.is_delete() {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    codes::UNAUTHORIZED_RESOURCE,
                    "Unauthorized to access requested resource",
                )
                .into_response()
            } else {
                dispatch(app, &zone, route, parts, body)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            }
        }
    };
    if hit(faults.truncate_body_rate) {
        return Outcome::Truncated(truncated(resp).await);
    }
    Outcome::Normal(resp)
}

/// Routing errors, then credentials, then the rate limit (which, like Cloudflare's
/// per-user limit, only counts authenticated requests).
fn admit(
    app: &App,
    matched: Matched,
    parts: &axum::http::request::Parts,
) -> Result<(String, Route), ApiError> {
    let (zone, route) = match matched {
        Matched::NoRoute => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                codes::NO_ROUTE,
                "No route for that URI",
            ))
        }
        Matched::MethodNotAllowed { allow } => {
            return Err(ApiError {
                allow: Some(allow),
                ..ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    codes::METHOD_NOT_ALLOWED,
                    format!("Method not allowed; this URI accepts {allow}"),
                )
            })
        }
        Matched::Route { zone, route } => (zone, route),
    };
    if !valid_zone_id(&zone) || app.is_gone(&zone) {
        let path = parts.uri.path().trim_start_matches("/client/v4");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::INVALID_OBJECT_ID,
            format!("Could not route to {path}, perhaps your object identifier is invalid?"),
        ));
    }
    app.auth
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .check(&parts.headers)?;
    if let Some(limiter) = &app.limiter {
        let verdict = limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(Instant::now());
        if let Err(retry_after) = verdict {
            return Err(ApiError::rate_limited(retry_after));
        }
    }
    Ok((zone, route))
}

async fn dispatch(
    app: &App,
    zone: &str,
    route: Route,
    parts: &axum::http::request::Parts,
    body: Body,
) -> ApiResult {
    let needs_body = matches!(
        route,
        Route::Put(_)
            | Route::BatchPut
            | Route::BatchDelete
            | Route::LegacyCreate
            | Route::LegacyEdit
            | Route::LegacyBatchEdit
    );
    let bytes = if needs_body {
        axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| ApiError::bad_request("Request body is too large or unreadable"))?
    } else {
        Bytes::new()
    };
    match route {
        Route::List => list(app, zone, parts.uri.query()),
        Route::Get(ip) => get(app, zone, &ip),
        Route::Put(ip) => put(app, zone, &ip, &bytes),
        Route::Delete(ip) => delete(app, zone, &ip),
        Route::BatchPut => batch_put(app, zone, &bytes),
        Route::BatchDelete => batch_delete(app, zone, &bytes),
        Route::SupportedRegions | Route::LegacySupportedRegions => supported_regions(app, zone),
        Route::LegacyCreate => legacy::create(app, zone, &bytes),
        Route::LegacyEdit => legacy::edit(app, zone, &bytes),
        Route::LegacyBatchEdit => legacy::batch_edit(app, zone, &bytes),
        Route::LegacyList => legacy::list(app, zone),
        Route::LegacyGet(ip) => legacy::get(app, zone, &ip),
        Route::LegacyDelete(ip) => legacy::delete(app, zone, &ip),
    }
}

fn canonical_path_ip(raw: &str) -> Result<String, ApiError> {
    ip::canonicalize(raw).map_err(|_| ApiError::invalid_ip())
}

fn list(app: &App, zone: &str, query: Option<&str>) -> ApiResult {
    let mut page: i64 = 1;
    let mut per_page: i64 = i64::from(DEFAULT_PER_PAGE);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "page" => {
                page = v
                    .parse()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| bad_param(text::INVALID_PAGE))?;
            }
            "per_page" => {
                per_page = v
                    .parse()
                    .ok()
                    .filter(|p| (1..=i64::from(MAX_PER_PAGE)).contains(p))
                    .ok_or_else(|| bad_param(text::INVALID_PER_PAGE))?;
            }
            _ => {}
        }
    }
    // Both are positive from here on; the casts cannot wrap.
    let (page, per_page) = (page as u64, per_page as u64);
    let store = app.store();
    let (items, total) = match store.zone(zone) {
        Some(z) => {
            let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
            let items: Vec<_> = z
                .mappings
                .iter()
                .skip(skip)
                .take(per_page as usize)
                .map(|(ip, s)| crate::state::to_mapping(ip, s))
                .collect();
            (items, z.mappings.len() as u64)
        }
        None => (Vec::new(), 0),
    };
    drop(store);
    let info = ResultInfo {
        count: items.len() as u64,
        page,
        per_page,
        total_count: total,
        total_pages: total.div_ceil(per_page),
    };
    Ok(ok_page(items, info))
}

fn bad_param(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_IP, message)
}

fn get(app: &App, zone: &str, raw_ip: &str) -> ApiResult {
    let ip = canonical_path_ip(raw_ip)?;
    let found = app.store().zone(zone).and_then(|z| z.mapping(&ip));
    found.map(ok).ok_or_else(ApiError::not_found)
}

fn put(app: &App, zone: &str, raw_ip: &str, body: &[u8]) -> ApiResult {
    let path_ip = canonical_path_ip(raw_ip)?;
    let obj = parse_object(body)?;
    let body_ip = str_field(&obj, "origin_ip")
        .and_then(|s| ip::canonicalize(s).ok())
        .ok_or_else(ApiError::invalid_ip)?;
    if body_ip != path_ip {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_IP,
            text::IP_MISMATCH,
        ));
    }
    let valid = validate(
        &app.catalog,
        Some(&body_ip),
        str_field(&obj, "vendor"),
        str_field(&obj, "region"),
    )?;
    let now = now();
    let max = app.max_mappings;
    let mapping = app.mutate(|s| {
        let z = s.zone_mut(zone);
        match z.upsert(&valid, max, &now) {
            Ok(changed) => (Ok(z.mapping(&valid.ip)), changed),
            Err(e) => {
                s.tidy(zone);
                (Err(e), false)
            }
        }
    })?;
    mapping.map(ok).ok_or_else(ApiError::not_found)
}

fn delete(app: &App, zone: &str, raw_ip: &str) -> ApiResult {
    let ip = canonical_path_ip(raw_ip)?;
    let now = now();
    let removed = app.mutate(|s| {
        let removed = s.zone_mut(zone).remove(&ip, &now).is_some();
        s.tidy(zone);
        (removed, removed)
    });
    if removed {
        Ok(ok(DeleteResult { origin_ip: ip }))
    } else {
        Err(ApiError::not_found())
    }
}

fn batch_put(app: &App, zone: &str, body: &[u8]) -> ApiResult {
    let items = parse_batch(body)?;
    let now = now();
    let max = app.max_mappings;
    let result = app.mutate(|s| {
        let z = s.zone_mut(zone);
        let mut out = BatchResult::default();
        let mut changed = false;
        // Items apply in order, so of two items for one IP the last wins.
        for item in &items {
            let raw_ip = str_field(item, "origin_ip");
            let applied = validate_fields(app, item, "origin_ip")
                .and_then(|v| z.upsert(&v, max, &now).map(|c| (v, c)));
            match applied {
                Ok((v, c)) => {
                    changed |= c;
                    out.succeeded.push(BatchItem {
                        origin_ip: v.ip,
                        error: None,
                        vendor: Some(v.vendor),
                        region: Some(v.region),
                    });
                }
                Err(e) => out.failed.push(BatchItem {
                    origin_ip: echo_ip(raw_ip),
                    error: Some(e.message),
                    vendor: None,
                    region: None,
                }),
            }
        }
        s.tidy(zone);
        (out, changed)
    });
    Ok(ok(result))
}

fn batch_delete(app: &App, zone: &str, body: &[u8]) -> ApiResult {
    // The Python SDK sends no body; that deletes nothing rather than failing.
    let items = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        match parse_json(body)? {
            Value::Null => Vec::new(),
            value => batch_items(value)?,
        }
    };
    let now = now();
    let result = app.mutate(|s| {
        let z = s.zone_mut(zone);
        let mut out = BatchResult::default();
        let mut seen = HashSet::new();
        for item in &items {
            let raw_ip = str_field(item, "origin_ip");
            let Some(ip) = raw_ip.and_then(|r| ip::canonicalize(r).ok()) else {
                out.failed.push(failed(echo_ip(raw_ip), text::INVALID_IP));
                continue;
            };
            match z.remove(&ip, &now) {
                Some(old) => {
                    seen.insert(ip.clone());
                    out.succeeded.push(BatchItem {
                        origin_ip: ip,
                        error: None,
                        vendor: Some(old.vendor),
                        region: Some(old.region),
                    });
                }
                None => out.failed.push(failed(ip, text::NOT_FOUND)),
            }
        }
        s.tidy(zone);
        let changed = !seen.is_empty();
        (out, changed)
    });
    Ok(ok(result))
}

fn failed(origin_ip: String, error: &str) -> BatchItem {
    BatchItem {
        origin_ip,
        error: Some(error.to_string()),
        vendor: None,
        region: None,
    }
}

fn supported_regions(app: &App, zone: &str) -> ApiResult {
    if !app.store().tiered_cache(zone) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::TIERED_CACHE_REQUIRED,
            "Tiered Cache is not enabled for this zone; enable Tiered Cache to use origin cloud regions.",
        ));
    }
    Ok(ok(app.catalog.supported()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn route(method: Method, path: &str) -> Matched {
        classify(&method, path)
    }

    #[test]
    fn literal_segments_win() {
        let base = format!("/client/v4/zones/{Z}/origin/cloud_regions");
        assert_eq!(
            route(Method::PUT, &format!("{base}/batch")),
            Matched::Route {
                zone: Z.into(),
                route: Route::BatchPut
            }
        );
        assert_eq!(
            route(Method::GET, &format!("{base}/supported_regions")),
            Matched::Route {
                zone: Z.into(),
                route: Route::SupportedRegions
            }
        );
        assert_eq!(
            route(Method::GET, &format!("{base}/2001%3Adb8%3A%3A1")),
            Matched::Route {
                zone: Z.into(),
                route: Route::Get("2001:db8::1".into())
            }
        );
        assert!(matches!(
            route(Method::GET, &format!("{base}/batch")),
            Matched::MethodNotAllowed { .. }
        ));
        assert_eq!(route(Method::GET, &format!("{base}/")), Matched::NoRoute);
        assert_eq!(route(Method::GET, "/client/v4/zones"), Matched::NoRoute);
    }

    #[test]
    fn decode_is_total() {
        assert_eq!(decode("a%3Ab"), "a:b");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%ff"), "%ff");
    }

    #[test]
    fn zone_ids() {
        assert!(valid_zone_id(Z));
        assert!(!valid_zone_id(&Z.to_uppercase()));
        assert!(!valid_zone_id("abc"));
    }
}
