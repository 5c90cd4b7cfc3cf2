//! Cloudflare-style JSON responses: the envelope around every API answer, and API errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use origin_region_operator::wire::{codes, ApiMessage, Envelope, ResultInfo};
use serde::Serialize;

/// Error texts; where Cloudflare's pages show a text we use it verbatim.
pub mod text {
    /// Code 1140 (seed 004).
    pub const INTERNAL_1140: &str =
        "Unable to update origin_public_cloud_region setting value. Internal error.";
    /// Code 1142 (the seeds give no text; ours).
    pub const NOT_FOUND: &str = "No origin cloud region mapping exists for the specified IP.";
    /// Code 1145 (seed 003).
    pub const ALREADY_EXISTS: &str =
        "Unable to create new origin_public_cloud_region setting. The zone setting already exists.";
    /// Code 1146 (seed 003).
    pub const INVALID_IP: &str = "Invalid or missing origin IP address.";
    /// Code 1146 for per_page (seed 001).
    pub const INVALID_PER_PAGE: &str = "invalid per_page parameter, must be between 1 and 100";
    /// Code 1146 for page (ours, styled after per_page).
    pub const INVALID_PAGE: &str = "invalid page parameter, must be a positive integer";
    /// Code 1146 when the body IP differs from the path IP (ours).
    pub const IP_MISMATCH: &str =
        "The origin_ip in the request body does not match the origin IP in the URL path.";
    /// Code 1156 (seed 004).
    pub const REGION_VALIDATION: &str = "Failed to validate region against cloud vendor";
    /// Code 1157 (seeds 002, 003).
    pub const UNKNOWN_VENDOR_OR_REGION: &str = "The vendor provided doesn't exist or the region provided does not exist for the specified cloud vendor";
    /// Code 1164 (seeds 002, 004).
    pub const ZONE_LIMIT: &str = "Maximum number of IP mappings configured for zone.";
}

/// A failed API call: HTTP status plus one Cloudflare error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Cloudflare error code.
    pub code: i64,
    /// Error text.
    pub message: String,
    /// `Retry-After` seconds, for 429s.
    pub retry_after: Option<u64>,
    /// `Allow` header, for 405s.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error with the given status, code and text.
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    /// 400 / 1146 "Invalid or missing origin IP address."
    pub fn invalid_ip() -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_IP, text::INVALID_IP)
    }

    /// 404 / 1142.
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, text::NOT_FOUND)
    }

    /// 403 / 1164.
    pub fn zone_limit() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, codes::ZONE_LIMIT, text::ZONE_LIMIT)
    }

    /// 400 / 10001 for a body that is not the JSON the operation expects.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    /// 429 / 10013 with a `Retry-After` header.
    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                "Rate limited. Please wait and consider throttling your request speed",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let env: Envelope<()> = Envelope {
            success: false,
            errors: vec![ApiMessage {
                code: self.code,
                message: self.message,
            }],
            messages: vec![],
            result: None,
            result_info: None,
        };
        let mut resp = json(self.status, &env);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// Serialises `body` as an `application/json` response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        // Our own types always serialise; this only guards against a future mistake.
        Err(e) => {
            tracing::error!(error = %e, "serialising a response failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                r#"{"success":false,"errors":[{"code":10002,"message":"Internal Server Error"}],"messages":[],"result":null}"#,
            )
                .into_response()
        }
    }
}

/// A 200 success envelope around `result`.
pub fn ok<T: Serialize>(result: T) -> Response {
    envelope(result, None)
}

/// A 200 success envelope around a page of a list.
pub fn ok_page<T: Serialize>(result: T, info: ResultInfo) -> Response {
    envelope(result, Some(info))
}

fn envelope<T: Serialize>(result: T, result_info: Option<ResultInfo>) -> Response {
    let env = Envelope {
        success: true,
        errors: vec![],
        messages: vec![],
        result: Some(result),
        result_info,
    };
    json(StatusCode::OK, &env)
}

/// Result of an API handler.
pub type ApiResult = Result<Response, ApiError>;
