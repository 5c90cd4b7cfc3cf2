//! The operator's Cloudflare client for the Origin Cloud Regions API (current path family,
//! `/zones/{zone_id}/origin/cloud_regions`). This module is the only place that builds
//! Cloudflare URLs.
//!
//! Every call: canonicalises the IP and checks the zone id before building a URL (bad input
//! never reaches the network); waits on the credential's shared rate limiter before every
//! attempt, retries included; bounds each attempt, body included, by `request_timeout`
//! and reads at most `max_body_bytes`; retries transient failures with exponential backoff
//! and jitter, at least as long as `Retry-After` asks.
//!
//! Retry table (`Error::is_retryable`; the client retries these up to `max_attempts`, then
//! returns them so the controller can requeue):
//!
//! | failure | kind | retried |
//! |---|---|---|
//! | HTTP 429, code 10013 | RateLimited | yes, delay ≥ Retry-After (≤ 60 s inline, else returned at once) |
//! | code 1140 | Internal | yes |
//! | HTTP 5xx without a known code | Server | yes (Retry-After honoured too) |
//! | connect error, reset, dropped connection, timeout | Transport | yes |
//! | empty or truncated body (JSON ended early) | BadResponse | yes |
//! | complete body of the wrong shape, wrong content type, too large, `success:false` on 2xx with no known code | BadResponse | no |
//! | 1142 / 404 without code | NotFound | no (`get` → `Ok(None)`) |
//! | 1146 | InvalidIp | no |
//! | 1156, 1157 | UnsupportedRegion | no |
//! | 1164 | ZoneLimit | no |
//! | 1145 | AlreadyExists | no |
//! | 401, 403, 9109, 10000 | Unauthorized | no |
//! | other 4xx (incl. 404 with code 7003 = malformed zone id) | BadRequest | no |
//! | refused locally (bad IP, bad zone id, > 100 batch items) | InvalidInput | no request at all |
//!
//! Retrying is safe for every operation here: GET, PUT (create-or-replace) and DELETE are
//! idempotent, and the batch calls are merges/removals that converge to the same state when
//! repeated. A retried DELETE whose first attempt succeeded may report NotFound; callers
//! treat NotFound on delete as done.

mod auth;
mod error;
mod limiter;
mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use governor::DefaultDirectRateLimiter;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value;

pub use auth::Credentials;
pub use error::{classify_item_error, kind_for, kind_of_code, Error, ErrorKind};
pub use retry::MAX_INLINE_RETRY_AFTER;

use crate::wire::{
    BatchResult, DeleteItem, Mapping, MappingInput, ResultInfo, SupportedRegions, MAX_BATCH,
    MAX_PER_PAGE,
};

/// Most pages `list_all` follows; 3,500 mappings need 35, so this only stops a server that
/// paginates forever.
const MAX_PAGES: u32 = 1000;

/// Settings shared by every client a [`Clients`] factory makes.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API base, e.g. `https://api.cloudflare.com/client/v4`.
    pub base_url: String,
    /// Requests allowed per `rate_period` for one credential (0 counts as 1).
    pub rate_limit: u32,
    /// Window of `rate_limit`.
    pub rate_period: Duration,
    /// Attempts per call, the first included (0 and 1 both mean no retries).
    pub max_attempts: usize,
    /// First retry delay (before jitter).
    pub min_backoff: Duration,
    /// Largest retry delay (a larger Retry-After still wins).
    pub max_backoff: Duration,
    /// Bound on one attempt: connect, headers and the whole body.
    pub request_timeout: Duration,
    /// Largest response body read; more is an error, not memory growth.
    pub max_body_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: "https://api.cloudflare.com/client/v4".into(),
            rate_limit: 1200,
            rate_period: Duration::from_secs(300),
            max_attempts: 5,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 8 << 20,
        }
    }
}

/// Metrics hook; implementations must be cheap and must not block.
pub trait Observer: Send + Sync {
    /// One attempt finished: `status` is the HTTP code as text, or "error" / "timeout".
    fn request(&self, op: &'static str, status: &str, seconds: f64);
    /// An attempt waited this long on the client-side rate limiter (only called when > 0).
    fn rate_limit_wait(&self, seconds: f64);
    /// A failed attempt of `op` is about to be retried.
    fn retry(&self, op: &'static str);
}

/// Factory of [`Client`]s: one connection pool for all, one rate limiter per credential.
#[derive(Clone)]
pub struct Clients {
    shared: Arc<Shared>,
}

struct Shared {
    config: ClientConfig,
    base: Result<Url, String>,
    http: reqwest::Client,
    limiters: limiter::Limiters,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Clients {
    /// Builds the factory. An unusable `base_url` is reported by every call as
    /// `InvalidInput` rather than here, so construction cannot fail.
    ///
    /// # Panics
    /// If the TLS backend cannot initialise (reqwest's own `Client::new` panics likewise).
    pub fn new(config: ClientConfig, observer: Option<Arc<dyn Observer>>) -> Self {
        let base = parse_base(&config.base_url);
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "origin-region-operator/",
                env!("CARGO_PKG_VERSION")
            ))
            // Cloudflare's API does not redirect; following one would send the credential
            // headers to wherever a compromised or misconfigured proxy points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("building the HTTP client (TLS backend initialisation)");
        let limiters = limiter::Limiters::new(config.rate_limit, config.rate_period);
        Clients {
            shared: Arc::new(Shared {
                config,
                base,
                http,
                limiters,
                observer,
            }),
        }
    }

    /// A client for one credential; clients for equal credentials share a rate limiter.
    pub fn client(&self, creds: Credentials) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                shared: self.shared.clone(),
                limiter: self.shared.limiters.get(creds.fingerprint()),
                auth: creds.headers(),
                secrets: creds.secrets().into_iter().map(String::from).collect(),
            }),
        }
    }

    /// The configuration every client uses.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }
}

fn parse_base(base: &str) -> Result<Url, String> {
    let url = Url::parse(base.trim()).map_err(|e| format!("base URL {base:?}: {e}"))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(format!("base URL {base:?} is not an http(s) URL"));
    }
    Ok(url)
}

/// A Cloudflare client bound to one credential; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately nothing about the credential.
        f.debug_struct("Client")
            .field("base_url", &self.inner.shared.config.base_url)
            .finish_non_exhaustive()
    }
}

struct ClientInner {
    shared: Arc<Shared>,
    limiter: Arc<DefaultDirectRateLimiter>,
    auth: Result<HeaderMap, &'static str>,
    /// The secret strings, to scrub from any server-provided text we put into errors.
    secrets: Vec<String>,
}

/// One logical call (retried as a whole).
struct Call {
    op: &'static str,
    method: Method,
    zone: String,
    ip: Option<String>,
    /// Path segments after `/zones/{zone}/origin/cloud_regions`.
    tail: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

impl Call {
    fn new(op: &'static str, method: Method, zone: &str, ip: Option<String>) -> Self {
        Call {
            op,
            method,
            zone: zone.to_string(),
            ip,
            tail: Vec::new(),
            query: Vec::new(),
            body: None,
        }
    }

    fn invalid(&self, message: String) -> Error {
        Error::InvalidInput {
            op: self.op,
            zone: self.zone.clone(),
            ip: self.ip.clone(),
            message,
        }
    }
}

impl Client {
    /// One page of the zone's mappings (`page` from 1, `per_page` 1..=100).
    pub async fn list_page(
        &self,
        zone: &str,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<Mapping>, ResultInfo), Error> {
        let mut call = Call::new("list", Method::GET, zone, None);
        check_zone(&call)?;
        if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(call.invalid(format!(
                "page {page} / per_page {per_page}: page must be ≥ 1 and per_page 1..={MAX_PER_PAGE}"
            )));
        }
        call.query = vec![
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
        ];
        let (mut items, info) = self.call::<Vec<Mapping>>(&call).await?;
        let Some(info) = info else {
            return Err(self.decode(&call, 200, "list response has no result_info".into(), false));
        };
        // The API promises canonical IPs; re-canonicalising costs nothing and keeps the
        // controller's comparisons right even if a server spells one differently.
        for m in &mut items {
            if let Ok(c) = crate::ip::canonicalize(&m.origin_ip) {
                m.origin_ip = c;
            }
        }
        Ok((items, info))
    }

    /// Every mapping of the zone, following pagination (per_page 100) to the last page.
    ///
    /// Each page's own `total_pages` decides whether to go on, so the walk follows a zone
    /// that grows or shrinks meanwhile; an IP seen twice (entries shifting between pages)
    /// is kept once, with its latest value.
    pub async fn list_all(&self, zone: &str) -> Result<Vec<Mapping>, Error> {
        let mut out: Vec<Mapping> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for page in 1..=MAX_PAGES {
            let (items, info) = self.list_page(zone, page, MAX_PER_PAGE).await?;
            let n = items.len();
            for m in items {
                match index.get(&m.origin_ip) {
                    Some(&i) => out[i] = m,
                    None => {
                        index.insert(m.origin_ip.clone(), out.len());
                        out.push(m);
                    }
                }
            }
            if n == 0 || u64::from(page) >= info.total_pages {
                return Ok(out);
            }
        }
        let call = Call::new("list", Method::GET, zone, None);
        Err(self.decode(&call, 200, format!("more than {MAX_PAGES} pages"), false))
    }

    /// The mapping of one IP; `Ok(None)` when it does not exist (404 / code 1142).
    pub async fn get(&self, zone: &str, ip: &str) -> Result<Option<Mapping>, Error> {
        let call = self.ip_call("get", Method::GET, zone, ip)?;
        match self.call::<Mapping>(&call).await {
            Ok((m, _)) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or replaces the mapping of `item.origin_ip` (sent in canonical form).
    pub async fn put(&self, zone: &str, item: &MappingInput) -> Result<Mapping, Error> {
        let mut call = self.ip_call("put", Method::PUT, zone, &item.origin_ip)?;
        let body = MappingInput {
            origin_ip: call.ip.clone().unwrap_or_default(),
            vendor: item.vendor.clone(),
            region: item.region.clone(),
        };
        call.body = Some(serde_json::to_vec(&body).expect("MappingInput serialises"));
        Ok(self.call::<Mapping>(&call).await?.0)
    }

    /// Deletes the mapping of one IP; a missing mapping is `Err` of kind `NotFound`.
    pub async fn delete(&self, zone: &str, ip: &str) -> Result<(), Error> {
        let call = self.ip_call("delete", Method::DELETE, zone, ip)?;
        // The result only echoes the IP; any well-formed envelope will do.
        self.call::<Value>(&call).await.map(|_| ())
    }

    /// Upserts up to 100 mappings in one request (a merge: others stay).
    ///
    /// Valid IPs are sent canonical; invalid ones are sent as given, so Cloudflare reports
    /// them per item in `failed` while the rest still apply. More than 100 items is
    /// `InvalidInput` without a request; an empty slice makes no request.
    pub async fn batch_put(
        &self,
        zone: &str,
        items: &[MappingInput],
    ) -> Result<BatchResult, Error> {
        let mut call = Call::new("batch_put", Method::PUT, zone, None);
        check_zone(&call)?;
        check_batch(&call, items.len())?;
        if items.is_empty() {
            return Ok(BatchResult::default());
        }
        let body: Vec<MappingInput> = items
            .iter()
            .map(|i| MappingInput {
                origin_ip: canonical_or_raw(&i.origin_ip),
                vendor: i.vendor.clone(),
                region: i.region.clone(),
            })
            .collect();
        call.tail = vec!["batch".into()];
        call.body = Some(serde_json::to_vec(&body).expect("MappingInput serialises"));
        Ok(self.call::<BatchResult>(&call).await?.0)
    }

    /// Deletes up to 100 mappings in one request; unknown or invalid IPs come back in
    /// `failed`. Same input rules as [`Client::batch_put`].
    pub async fn batch_delete(&self, zone: &str, ips: &[String]) -> Result<BatchResult, Error> {
        let mut call = Call::new("batch_delete", Method::DELETE, zone, None);
        check_zone(&call)?;
        check_batch(&call, ips.len())?;
        if ips.is_empty() {
            return Ok(BatchResult::default());
        }
        let body: Vec<DeleteItem> = ips
            .iter()
            .map(|ip| DeleteItem {
                origin_ip: canonical_or_raw(ip),
            })
            .collect();
        call.tail = vec!["batch".into()];
        call.body = Some(serde_json::to_vec(&body).expect("DeleteItem serialises"));
        Ok(self.call::<BatchResult>(&call).await?.0)
    }

    /// The vendors and regions the zone may use, with their upper-tier colos.
    pub async fn supported_regions(&self, zone: &str) -> Result<SupportedRegions, Error> {
        let mut call = Call::new("supported_regions", Method::GET, zone, None);
        check_zone(&call)?;
        call.tail = vec!["supported_regions".into()];
        Ok(self.call::<SupportedRegions>(&call).await?.0)
    }

    /// A single-IP call: the IP is canonicalised first, and an invalid one never leaves.
    fn ip_call(
        &self,
        op: &'static str,
        method: Method,
        zone: &str,
        ip: &str,
    ) -> Result<Call, Error> {
        let mut call = Call::new(op, method, zone, Some(ip.to_string()));
        check_zone(&call)?;
        let canonical = crate::ip::canonicalize(ip).map_err(|e| call.invalid(e.to_string()))?;
        call.tail = vec![canonical.clone()];
        call.ip = Some(canonical);
        Ok(call)
    }

    /// Runs a call with rate limiting and retries; returns the result and any result_info.
    async fn call<T: DeserializeOwned>(
        &self,
        call: &Call,
    ) -> Result<(T, Option<ResultInfo>), Error> {
        let shared = &self.inner.shared;
        let config = &shared.config;
        let url = self.url(call)?;
        if let Err(reason) = &self.inner.auth {
            return Err(Error::Credentials {
                op: call.op,
                zone: call.zone.clone(),
                ip: call.ip.clone(),
                reason,
            });
        }
        let attempt = std::sync::atomic::AtomicUsize::new(0);
        let attempt = &attempt;
        let url = &url;
        (move || async move {
            let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            self.attempt::<T>(call, url, n).await
        })
        .retry(retry::backoff(config))
        .when(Error::is_retryable)
        .adjust(|e, proposed| retry::next_delay(config, e, proposed))
        .notify(|e, delay| {
            tracing::debug!(
                op = call.op,
                zone = %call.zone,
                ip = call.ip.as_deref().unwrap_or(""),
                kind = %e.kind(),
                delay_ms = delay.as_millis() as u64,
                "retrying cloudflare call"
            );
            if let Some(o) = &shared.observer {
                o.retry(call.op);
            }
        })
        .await
    }

    fn url(&self, call: &Call) -> Result<Url, Error> {
        let mut url = self
            .inner
            .shared
            .base
            .clone()
            .map_err(|e| call.invalid(e))?;
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| call.invalid("base URL cannot take a path".into()))?;
            segs.pop_if_empty();
            segs.extend(["zones", call.zone.as_str(), "origin", "cloud_regions"]);
            segs.extend(call.tail.iter());
        }
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query.iter());
        }
        Ok(url)
    }

    /// One attempt: rate limiter, request, bounded body read, decode.
    async fn attempt<T: DeserializeOwned>(
        &self,
        call: &Call,
        url: &Url,
        attempt: usize,
    ) -> Result<(T, Option<ResultInfo>), Error> {
        let shared = &self.inner.shared;
        let config = &shared.config;
        if let Some(waited) = limiter::acquire(&self.inner.limiter).await {
            if let Some(o) = &shared.observer {
                o.rate_limit_wait(waited.as_secs_f64());
            }
        }

        let auth = self.inner.auth.as_ref().cloned().unwrap_or_default();
        let mut req = shared
            .http
            .request(call.method.clone(), url.clone())
            .headers(auth)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = &call.body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }

        let start = Instant::now();
        // The timeout wraps headers and body together, so a server that trickles bytes
        // forever is cut off as surely as one that never answers.
        let outcome =
            tokio::time::timeout(config.request_timeout, read(req, config.max_body_bytes)).await;
        let seconds = start.elapsed().as_secs_f64();

        let (status_text, result) = match outcome {
            Err(_) => (
                "timeout".to_string(),
                Err(Error::Timeout {
                    op: call.op,
                    zone: call.zone.clone(),
                    ip: call.ip.clone(),
                    after: config.request_timeout,
                }),
            ),
            // A body cut short counts as "error" even though a status line arrived: the
            // request's outcome is unknown, which is what the metric should say.
            Ok(Err(ReadError::Transport(msg))) => (
                "error".to_string(),
                Err(Error::Transport {
                    op: call.op,
                    zone: call.zone.clone(),
                    ip: call.ip.clone(),
                    message: self.scrub(&msg),
                }),
            ),
            Ok(Err(ReadError::TooLarge(status))) => (
                status.to_string(),
                Err(self.decode(
                    call,
                    status,
                    format!("body exceeds {} bytes", config.max_body_bytes),
                    false,
                )),
            ),
            Ok(Ok(resp)) => (resp.status.to_string(), self.interpret::<T>(call, resp)),
        };

        if let Some(o) = &shared.observer {
            o.request(call.op, &status_text, seconds);
        }
        tracing::debug!(
            op = call.op,
            zone = %call.zone,
            ip = call.ip.as_deref().unwrap_or(""),
            status = %status_text,
            attempt,
            elapsed_ms = (seconds * 1000.0) as u64,
            error = result.as_ref().err().map(|e| e.kind().to_string()),
            "cloudflare request"
        );
        result
    }

    /// Turns a complete response into a result or a classified error.
    fn interpret<T: DeserializeOwned>(
        &self,
        call: &Call,
        resp: RawResponse,
    ) -> Result<(T, Option<ResultInfo>), Error> {
        let status = resp.status;
        if !(200..300).contains(&status) {
            return Err(self.error_response(call, &resp));
        }
        if let Some(ct) = &resp.content_type {
            if !is_json(ct) {
                return Err(self.decode(
                    call,
                    status,
                    format!(
                        "content type {ct:?} is not JSON: {}",
                        self.snippet(&resp.body)
                    ),
                    false,
                ));
            }
        }
        if resp.body.iter().all(u8::is_ascii_whitespace) {
            return Err(self.decode(call, status, "empty body".into(), true));
        }
        let env: Value = match serde_json::from_slice(&resp.body) {
            Ok(v) => v,
            Err(e) => {
                return Err(self.decode(call, status, format!("invalid JSON: {e}"), e.is_eof()))
            }
        };
        let Some(obj) = env.as_object() else {
            return Err(self.decode(call, status, "body is not a JSON object".into(), false));
        };
        match obj.get("success") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Err(self.api_error(call, &resp, Some(&env))),
            _ => {
                return Err(self.decode(
                    call,
                    status,
                    "envelope has no boolean success".into(),
                    false,
                ))
            }
        }
        let info = match obj.get("result_info") {
            None | Some(Value::Null) => None,
            Some(v) => Some(ResultInfo::deserialize(v).map_err(|e| {
                self.decode(
                    call,
                    status,
                    format!("result_info has the wrong shape: {e}"),
                    false,
                )
            })?),
        };
        let result = obj.get("result").cloned().unwrap_or(Value::Null);
        let value = T::deserialize(result).map_err(|e| {
            self.decode(
                call,
                status,
                format!("result has the wrong shape: {e}"),
                false,
            )
        })?;
        Ok((value, info))
    }

    /// Error for a non-2xx response: the envelope's codes if the body is one, else the
    /// status alone (a proxy's HTML 502 is still a retryable 5xx, not a decode failure).
    fn error_response(&self, call: &Call, resp: &RawResponse) -> Error {
        let env = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .filter(|v| v.get("errors").is_some_and(Value::is_array));
        self.api_error(call, resp, env.as_ref())
    }

    fn api_error(&self, call: &Call, resp: &RawResponse, env: Option<&Value>) -> Error {
        let mut codes = Vec::new();
        let mut messages = Vec::new();
        if let Some(errors) = env.and_then(|v| v.get("errors")).and_then(Value::as_array) {
            for e in errors {
                let code = e.get("code").and_then(Value::as_i64);
                if let Some(c) = code {
                    codes.push(c);
                }
                let text = e.get("message").and_then(Value::as_str).unwrap_or("");
                messages.push(match code {
                    Some(c) => format!("{text} ({c})"),
                    None => text.to_string(),
                });
            }
        }
        let message = if !messages.is_empty() {
            self.scrub(&messages.join("; "))
        } else if env.is_some() {
            "no error details".to_string()
        } else {
            self.snippet(&resp.body)
        };
        // The code that decided the kind is the one reported, so `code` and `kind()` agree.
        let code = codes
            .iter()
            .copied()
            .find(|&c| kind_of_code(c).is_some())
            .or_else(|| codes.first().copied());
        if kind_for(resp.status, codes.iter().copied()) == ErrorKind::RateLimited {
            return Error::RateLimited {
                op: call.op,
                zone: call.zone.clone(),
                ip: call.ip.clone(),
                status: resp.status,
                retry_after: resp.retry_after,
                message,
            };
        }
        Error::Api {
            op: call.op,
            zone: call.zone.clone(),
            ip: call.ip.clone(),
            status: resp.status,
            code,
            message,
            retry_after: resp.retry_after,
        }
    }

    fn decode(&self, call: &Call, status: u16, reason: String, truncated: bool) -> Error {
        Error::Decode {
            op: call.op,
            zone: call.zone.clone(),
            ip: call.ip.clone(),
            status,
            reason: self.scrub(&reason),
            truncated,
        }
    }

    /// A short, printable excerpt of a body for an error message.
    fn snippet(&self, body: &[u8]) -> String {
        const MAX: usize = 200;
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
        let mut s: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX)
            .collect();
        if s.trim().is_empty() {
            return "empty body".into();
        }
        if text.chars().count() > MAX || body.len() > MAX * 4 {
            s.push('…');
        }
        self.scrub(s.trim())
    }

    /// Removes this client's secrets from text that came from the server, in case a proxy
    /// or server echoes a header back.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.inner.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }
}

fn check_zone(call: &Call) -> Result<(), Error> {
    // Cloudflare zone ids are 32 hex characters; only the URL-safety part is enforced here
    // (so nothing can add path segments or a query), the rest is Cloudflare's to judge.
    let z = &call.zone;
    if z.is_empty() || z.len() > 32 || !z.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(call.invalid(format!(
            "zone id {z:?} must be 1 to 32 ASCII letters or digits"
        )));
    }
    Ok(())
}

fn check_batch(call: &Call, n: usize) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(call.invalid(format!(
            "{n} items in one batch; Cloudflare accepts at most {MAX_BATCH}"
        )));
    }
    Ok(())
}

fn canonical_or_raw(ip: &str) -> String {
    crate::ip::canonicalize(ip).unwrap_or_else(|_| ip.to_string())
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
}

/// A fully read response.
struct RawResponse {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

enum ReadError {
    /// Wire failure, before or during the body.
    Transport(String),
    /// The body is larger than the cap (status attached).
    TooLarge(u16),
}

/// Sends the request and reads the body chunk by chunk, stopping at `cap` bytes.
async fn read(req: reqwest::RequestBuilder, cap: usize) -> Result<RawResponse, ReadError> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| ReadError::Transport(chain(&e)))?;
    let status = resp.status().as_u16();
    let headers = resp.headers();
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let retry_after = retry::parse_retry_after(headers);
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(ReadError::TooLarge(status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(chain(&e)))?
    {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(status));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(RawResponse {
        status,
        content_type,
        retry_after,
        body,
    })
}

/// The error and its sources as one line (reqwest's top-level text alone hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests;
