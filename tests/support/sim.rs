//! Test helper that runs the `cf-origin-sim` binary as a child process.
//!
//! Each test binary uses a subset of this API, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use origin_region_operator::wire;
use serde_json::{json, Value};

/// A running simulator; the child process is killed when this is dropped.
pub struct Sim {
    child: Child,
    origin: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts the simulator on a free port with `extra` command-line arguments.
    ///
    /// Panics (failing the test) if the binary does not print its `listening on` line.
    pub fn start(extra: &[&str]) -> Sim {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cf-origin-sim"));
        // A later `--listen` in `extra` overrides this one (clap keeps the last value).
        cmd.arg("--listen").arg("127.0.0.1:0");
        cmd.args(extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        // Keep the simulator's logs visible with `--nocapture`, silent otherwise.
        if std::env::var_os("SIM_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(Stdio::null());
        }
        let mut child = cmd.spawn().expect("spawn cf-origin-sim");
        let origin = testbed::launch::await_listening(&mut child, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("cf-origin-sim: {e}"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Sim {
            child,
            origin,
            http,
        }
    }

    /// Starts the simulator with its default configuration (token `dev-token`).
    pub fn start_default() -> Sim {
        Sim::start(&[])
    }

    /// `http://127.0.0.1:NNNN`, without a path.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The API base, `http://127.0.0.1:NNNN/client/v4`.
    pub fn base_url(&self) -> String {
        format!("{}/client/v4", self.origin)
    }

    /// The admin base, `http://127.0.0.1:NNNN/__sim`.
    pub fn admin_url(&self) -> String {
        format!("{}/__sim", self.origin)
    }

    /// The process id of the simulator child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A shared reqwest client (30 s timeout).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Calls the API at `path` (relative to `base_url()`, e.g. `/zones/{z}/origin/cloud_regions`)
    /// with token `dev-token`; returns the HTTP status and the JSON body (`Null` if not JSON).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let req = self
            .http
            .request(method, format!("{}{}", self.base_url(), path))
            .bearer_auth("dev-token");
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /__sim/stats`.
    pub async fn stats(&self) -> Value {
        self.admin_json(reqwest::Method::GET, "/stats", None).await
    }

    /// Number of `op` requests answered with `status` (e.g. "200", "429", "dropped").
    pub async fn op_count(&self, op: &str, status: &str) -> u64 {
        let stats = self.stats().await;
        stats["operations"][op]["by_status"][status]
            .as_u64()
            .unwrap_or(0)
    }

    /// Number of `op` requests, whatever their status.
    pub async fn op_total(&self, op: &str) -> u64 {
        let stats = self.stats().await;
        stats["operations"][op]["total"].as_u64().unwrap_or(0)
    }

    /// Number of API requests of any kind.
    pub async fn requests_total(&self) -> u64 {
        self.stats().await["requests_total"].as_u64().unwrap_or(0)
    }

    /// `POST /__sim/reset`: mappings, stats, faults, tiered cache and auth back to start.
    pub async fn reset(&self) {
        self.admin_json(reqwest::Method::POST, "/reset", None).await;
    }

    /// `DELETE /__sim/stats`: zeroes the counters only.
    pub async fn clear_stats(&self) {
        self.admin_json(reqwest::Method::DELETE, "/stats", None)
            .await;
    }

    /// `PUT /__sim/faults` with the given fault configuration (missing fields are 0/false).
    pub async fn set_faults(&self, faults: Value) {
        self.admin_json(reqwest::Method::PUT, "/faults", Some(faults))
            .await;
    }

    /// `PUT /__sim/faults {}`: removes every fault.
    pub async fn clear_faults(&self) {
        self.set_faults(json!({})).await;
    }

    /// `PUT /__sim/zones/{zone}/tiered-cache`.
    pub async fn set_tiered_cache(&self, zone: &str, enabled: bool) {
        let path = format!("/zones/{zone}/tiered-cache");
        self.admin_json(
            reqwest::Method::PUT,
            &path,
            Some(json!({ "enabled": enabled })),
        )
        .await;
    }

    /// `GET /__sim/zones/{zone}`: the zone's mappings sorted by IP.
    pub async fn dump_zone(&self, zone: &str) -> Vec<wire::Mapping> {
        let dump = self.dump_zone_raw(zone).await;
        serde_json::from_value(dump["mappings"].clone()).expect("dump mappings")
    }

    /// `GET /__sim/zones/{zone}` as raw JSON (`zone_id`, `tiered_cache`, `mappings`).
    pub async fn dump_zone_raw(&self, zone: &str) -> Value {
        self.admin_json(reqwest::Method::GET, &format!("/zones/{zone}"), None)
            .await
    }

    /// `GET /__sim/zones/{zone}/history`: the last changes of `ip` made through the API.
    pub async fn history(&self, zone: &str, ip: &str) -> Vec<String> {
        let h = self
            .admin_json(
                reqwest::Method::GET,
                &format!("/zones/{zone}/history"),
                None,
            )
            .await;
        serde_json::from_value(h["history"][ip].clone()).unwrap_or_default()
    }

    /// `PUT /__sim/zones/{zone}`: replaces the zone's mappings out of band.
    pub async fn seed_zone(&self, zone: &str, mappings: &[wire::MappingInput]) {
        let body = json!({ "mappings": mappings });
        self.admin_json(reqwest::Method::PUT, &format!("/zones/{zone}"), Some(body))
            .await;
    }

    /// `DELETE /__sim/zones/{z}`: the zone is deleted; the API answers it 404 / 7003.
    pub async fn delete_zone(&self, zone: &str) {
        self.admin_json(reqwest::Method::DELETE, &format!("/zones/{zone}"), None)
            .await;
    }

    /// `PUT /__sim/auth`: replaces the accepted credentials, e.g.
    /// `{"tokens": ["t2"], "auth_email": null, "auth_key": null}`.
    pub async fn set_auth(&self, auth: Value) {
        self.admin_json(reqwest::Method::PUT, "/auth", Some(auth))
            .await;
    }

    /// `GET /__sim{path}` as JSON, e.g. `admin_get("/faults")`.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.admin_json(reqwest::Method::GET, path, None).await
    }

    /// `GET /__sim/faults`.
    pub async fn faults(&self) -> Value {
        self.admin_get("/faults").await
    }

    async fn admin_json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.admin_url(), path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url}: HTTP {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
