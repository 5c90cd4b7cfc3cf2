//! The older path family `/zones/{z}/cache/origin_cloud_regions`, a zone-setting style API
//! sharing the store with the current family. Results are wrapped in
//! `{id: "origin_public_cloud_region", editable: true, modified_on, value}` and mappings
//! spell their IP `origin-ip`.

use std::collections::HashSet;

use axum::http::StatusCode;
use origin_region_operator::ip;
use origin_region_operator::wire::{
    codes, LegacyBatchItem, LegacyBatchResult, LegacySetting, LEGACY_SETTING_ID,
};
use serde::Serialize;

use crate::app::App;
use crate::body::{echo_ip, parse_batch, parse_object, str_field, validate_fields};
use crate::envelope::{ok, text, ApiError, ApiResult};
use crate::state::{now, to_legacy, Valid};

/// `value` of a legacy delete: the IP whose mapping went away.
#[derive(Debug, Serialize)]
struct Deleted {
    #[serde(rename = "origin-ip")]
    origin_ip: String,
}

fn setting<T>(modified_on: Option<String>, value: T) -> LegacySetting<T> {
    LegacySetting {
        id: LEGACY_SETTING_ID.to_string(),
        editable: true,
        modified_on,
        value,
    }
}

fn validate_body(app: &App, body: &[u8]) -> Result<Valid, ApiError> {
    let obj = parse_object(body)?;
    validate_fields(app, &obj, "ip")
}

/// POST: creates one mapping; 400 / 1145 when the IP already has one.
pub fn create(app: &App, zone: &str, body: &[u8]) -> ApiResult {
    let valid = validate_body(app, body)?;
    let now = now();
    let max = app.max_mappings;
    let created = app.mutate(|s| {
        let z = s.zone_mut(zone);
        if z.mappings.contains_key(&valid.ip) {
            return (
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    codes::ALREADY_EXISTS,
                    text::ALREADY_EXISTS,
                )),
                false,
            );
        }
        match z.upsert(&valid, max, &now) {
            Ok(changed) => (
                Ok(z.mappings.get(&valid.ip).map(|m| to_legacy(&valid.ip, m))),
                changed,
            ),
            Err(e) => {
                s.tidy(zone);
                (Err(e), false)
            }
        }
    })?;
    let m = created.ok_or_else(ApiError::not_found)?;
    Ok(ok(setting(m.modified_on.clone(), m)))
}

/// PATCH: upserts one mapping and answers with the zone's whole list.
pub fn edit(app: &App, zone: &str, body: &[u8]) -> ApiResult {
    let valid = validate_body(app, body)?;
    let now = now();
    let max = app.max_mappings;
    let result = app.mutate(|s| {
        let z = s.zone_mut(zone);
        match z.upsert(&valid, max, &now) {
            Ok(changed) => (Ok(setting(z.modified_on.clone(), z.legacy_list())), changed),
            Err(e) => {
                s.tidy(zone);
                (Err(e), false)
            }
        }
    })?;
    Ok(ok(result))
}

/// PATCH `/batch`: upserts up to 100 items; fails whole with 403 / 1164 when the valid new
/// IPs would take the zone over its limit (seed 004), else reports items one by one.
pub fn batch_edit(app: &App, zone: &str, body: &[u8]) -> ApiResult {
    let items = parse_batch(body)?;
    let checked: Vec<(Option<&str>, Result<Valid, ApiError>)> = items
        .iter()
        .map(|item| (str_field(item, "ip"), validate_fields(app, item, "ip")))
        .collect();
    let now = now();
    let max = app.max_mappings;
    let result = app.mutate(|s| {
        let z = s.zone_mut(zone);
        let new_ips: HashSet<&str> = checked
            .iter()
            .filter_map(|(_, v)| v.as_ref().ok())
            .map(|v| v.ip.as_str())
            .filter(|ip| !z.mappings.contains_key(*ip))
            .collect();
        if z.mappings.len() + new_ips.len() > max {
            s.tidy(zone);
            return (Err(ApiError::zone_limit()), false);
        }
        let mut out = LegacyBatchResult::default();
        let mut changed = false;
        for (raw, v) in &checked {
            let applied = match v {
                Ok(v) => z.upsert(v, max, &now).map(|c| (v, c)),
                Err(e) => Err(e.clone()),
            };
            match applied {
                Ok((v, c)) => {
                    changed |= c;
                    out.succeeded.push(LegacyBatchItem {
                        origin_ip: v.ip.clone(),
                        error: None,
                        vendor: Some(v.vendor.clone()),
                        region: Some(v.region.clone()),
                    });
                }
                Err(e) => out.failed.push(LegacyBatchItem {
                    origin_ip: echo_ip(*raw),
                    error: Some(e.message),
                    vendor: None,
                    region: None,
                }),
            }
        }
        let modified_on = if out.succeeded.is_empty() {
            None
        } else {
            z.modified_on.clone()
        };
        s.tidy(zone);
        (Ok(setting(modified_on, out)), changed)
    })?;
    Ok(ok(result))
}

/// GET: the zone's whole list (no pagination, as a zone setting has none).
pub fn list(app: &App, zone: &str) -> ApiResult {
    let store = app.store();
    let result = match store.zone(zone) {
        Some(z) => setting(z.modified_on.clone(), z.legacy_list()),
        None => setting(None, Vec::new()),
    };
    drop(store);
    Ok(ok(result))
}

/// GET `{ip}`: one mapping.
pub fn get(app: &App, zone: &str, raw_ip: &str) -> ApiResult {
    let ip = ip::canonicalize(raw_ip).map_err(|_| ApiError::invalid_ip())?;
    let found = app
        .store()
        .zone(zone)
        .and_then(|z| z.mappings.get(&ip).map(|m| to_legacy(&ip, m)));
    let m = found.ok_or_else(ApiError::not_found)?;
    Ok(ok(setting(m.modified_on.clone(), m)))
}

/// DELETE `{ip}`: removes one mapping; `value` names the IP, `modified_on` is the set's.
pub fn delete(app: &App, zone: &str, raw_ip: &str) -> ApiResult {
    let ip = ip::canonicalize(raw_ip).map_err(|_| ApiError::invalid_ip())?;
    let now = now();
    let result = app.mutate(|s| {
        let z = s.zone_mut(zone);
        let removed = z.remove(&ip, &now).is_some();
        let modified_on = z.modified_on.clone();
        s.tidy(zone);
        (removed.then_some(modified_on), removed)
    });
    match result {
        Some(modified_on) => Ok(ok(setting(modified_on, Deleted { origin_ip: ip }))),
        None => Err(ApiError::not_found()),
    }
}
