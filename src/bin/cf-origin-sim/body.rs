//! Request bodies shared by both path families: JSON objects and batches, string fields,
//! item validation, and the IP echoed in a failed batch item.

use origin_region_operator::ip;
use origin_region_operator::wire::MAX_BATCH;
use serde_json::{Map, Value};

use crate::app::App;
use crate::envelope::ApiError;
use crate::state::{validate, Valid};

/// Parses a JSON body (400 / 10001 when it is not JSON).
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON in request body: {e}")))
}

/// The body as a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match parse_json(bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("Request body must be a JSON object")),
    }
}

/// The body as a JSON array of objects of at most [`MAX_BATCH`] items.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<Map<String, Value>>, ApiError> {
    batch_items(parse_json(bytes)?)
}

/// The items of a JSON array of objects, at most [`MAX_BATCH`] of them.
pub fn batch_items(value: Value) -> Result<Vec<Map<String, Value>>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request("Request body must be a JSON array"));
    };
    if items.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "Too many items in batch: {} given, at most {MAX_BATCH} allowed",
            items.len()
        )));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(m) => Ok(m),
            _ => Err(ApiError::bad_request(
                "Every batch item must be a JSON object",
            )),
        })
        .collect()
}

/// A string field of a JSON object.
pub fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// Validates a JSON item whose IP is under `ip_key` (`origin_ip`, or `ip` in the older family).
pub fn validate_fields(
    app: &App,
    obj: &Map<String, Value>,
    ip_key: &str,
) -> Result<Valid, ApiError> {
    validate(
        &app.catalog,
        str_field(obj, ip_key),
        str_field(obj, "vendor"),
        str_field(obj, "region"),
    )
}

/// The IP to name in a failed batch item: canonical if it parses, else as sent.
pub fn echo_ip(raw: Option<&str>) -> String {
    match raw {
        Some(s) => ip::canonicalize(s).unwrap_or_else(|_| s.to_string()),
        None => String::new(),
    }
}
