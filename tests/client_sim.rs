//! The Cloudflare client against the simulator, over real HTTP.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use origin_region_operator::cloudflare::{
    classify_item_error, Client, ClientConfig, Clients, Credentials, Error, ErrorKind, Observer,
};
use origin_region_operator::wire::MappingInput;
use serde_json::json;
use support::sim::Sim;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const DISTINCTIVE: &str = "Zq9-PLUGH-token-7c1e5d";

/// Records what the client reports to its metrics hook.
#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<(&'static str, String)>>,
    waits: Mutex<Vec<f64>>,
    retries: AtomicUsize,
}

impl Observer for Recorder {
    fn request(&self, op: &'static str, status: &str, _seconds: f64) {
        self.requests.lock().unwrap().push((op, status.to_string()));
    }
    fn rate_limit_wait(&self, seconds: f64) {
        self.waits.lock().unwrap().push(seconds);
    }
    fn retry(&self, _op: &'static str) {
        self.retries.fetch_add(1, Ordering::SeqCst);
    }
}

fn fast_config(sim: &Sim) -> ClientConfig {
    ClientConfig {
        base_url: sim.base_url(),
        max_attempts: 3,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn client(sim: &Sim) -> Client {
    Clients::new(fast_config(sim), None).client(Credentials::ApiToken("dev-token".into()))
}

fn observed(config: ClientConfig, creds: Credentials) -> (Client, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let clients = Clients::new(config, Some(rec.clone() as Arc<dyn Observer>));
    (clients.client(creds), rec)
}

fn item(ip: &str, vendor: &str, region: &str) -> MappingInput {
    MappingInput {
        origin_ip: ip.into(),
        vendor: vendor.into(),
        region: region.into(),
    }
}

fn ipv4s(n: usize) -> Vec<MappingInput> {
    (0..n)
        .map(|i| {
            item(
                &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                "aws",
                "us-east-1",
            )
        })
        .collect()
}

#[tokio::test]
async fn every_operation_round_trips() {
    let sim = Sim::start_default();
    let c = client(&sim);

    let regions = c.supported_regions(ZONE).await.unwrap();
    assert!(
        regions.region("gcp", "us-central1").is_some(),
        "{regions:?}"
    );

    // A non-canonical spelling goes out canonical and comes back canonical.
    let m = c
        .put(ZONE, &item("2001:0DB8:0000::0001", "gcp", "us-central1"))
        .await
        .unwrap();
    assert_eq!(
        (m.origin_ip.as_str(), m.vendor.as_str()),
        ("2001:db8::1", "gcp")
    );
    let got = c.get(ZONE, "2001:db8:0:0:0:0:0:1").await.unwrap().unwrap();
    assert_eq!(got.region, "us-central1");

    let batch = c
        .batch_put(
            ZONE,
            &[
                item("192.0.2.1", "aws", "us-east-1"),
                item("192.0.2.2", "azure", "westeurope"),
                item("2001:DB8::2", "gcp", "us-central1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(batch.succeeded.len(), 3, "{batch:?}");
    assert!(batch.failed.is_empty(), "{batch:?}");
    assert!(batch.succeeded.iter().any(|i| i.origin_ip == "2001:db8::2"));

    let all = c.list_all(ZONE).await.unwrap();
    assert_eq!(all.len(), 4);
    let (page, info) = c.list_page(ZONE, 2, 3).await.unwrap();
    assert_eq!((page.len(), info.total_count, info.total_pages), (1, 4, 2));

    let del = c
        .batch_delete(ZONE, &["192.0.2.1".into(), "192.0.2.2".into()])
        .await
        .unwrap();
    assert_eq!(del.succeeded.len(), 2, "{del:?}");
    assert_eq!(del.succeeded[0].vendor.as_deref(), Some("aws"));

    c.delete(ZONE, "2001:db8::1").await.unwrap();
    assert_eq!(c.get(ZONE, "2001:db8::1").await.unwrap(), None);
    let left: Vec<String> = sim
        .dump_zone(ZONE)
        .await
        .into_iter()
        .map(|m| m.origin_ip)
        .collect();
    assert_eq!(left, vec!["2001:db8::2".to_string()]);

    for (op, n) in [
        ("supported_regions", 1),
        ("put", 1),
        ("get", 2),
        ("batch_put", 1),
        ("list", 2),
        ("batch_delete", 1),
        ("delete", 1),
    ] {
        assert_eq!(sim.op_total(op).await, n, "{op}");
    }
}

#[tokio::test]
async fn error_codes_map_to_kinds() {
    let sim = Sim::start(&["--max-mappings", "3"]);
    let c = client(&sim);

    // 1142: get → None, delete → NotFound.
    assert_eq!(c.get(ZONE, "192.0.2.9").await.unwrap(), None);
    let e = c.delete(ZONE, "192.0.2.9").await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code(), e.status()),
        (ErrorKind::NotFound, Some(1142), Some(404))
    );
    assert!(
        e.to_string().contains("delete") && e.to_string().contains("192.0.2.9"),
        "{e}"
    );

    // 1157: unknown vendor or region; 1156: a region of another vendor.
    let e = c
        .put(ZONE, &item("192.0.2.1", "acme", "us-east-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::UnsupportedRegion, Some(1157))
    );
    let e = c
        .put(ZONE, &item("192.0.2.1", "aws", "mars-north-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::UnsupportedRegion, Some(1157))
    );
    let e = c
        .put(ZONE, &item("192.0.2.1", "aws", "us-central1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::UnsupportedRegion, Some(1156))
    );

    // 1164 at the zone limit (3 here); replacing an existing IP is still allowed.
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        c.put(ZONE, &item(ip, "aws", "us-east-1")).await.unwrap();
    }
    let e = c
        .put(ZONE, &item("192.0.2.4", "aws", "us-east-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.code(), e.status()),
        (ErrorKind::ZoneLimit, Some(1164), Some(403))
    );
    assert!(!e.is_retryable());
    c.put(ZONE, &item("192.0.2.3", "aws", "us-east-2"))
        .await
        .unwrap();

    // Per-item errors carry only text: 1146, 1157, 1156, 1164 in a batch put ...
    let res = c
        .batch_put(
            ZONE,
            &[
                item("192.0.02.1", "aws", "us-east-1"),
                item("not-an-ip", "aws", "us-east-1"),
                item("192.0.2.1", "acme", "us-east-1"),
                item("192.0.2.2", "aws", "us-central1"),
                item("192.0.2.5", "aws", "us-east-1"),
                item("192.0.2.3", "aws", "us-east-1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(res.succeeded.len(), 1, "{res:?}");
    let kinds: Vec<(String, ErrorKind)> = res
        .failed
        .iter()
        .map(|f| {
            (
                f.origin_ip.clone(),
                classify_item_error(f.error.as_deref().unwrap_or("")),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("192.0.02.1".to_string(), ErrorKind::InvalidIp),
            ("not-an-ip".to_string(), ErrorKind::InvalidIp),
            ("192.0.2.1".to_string(), ErrorKind::UnsupportedRegion),
            ("192.0.2.2".to_string(), ErrorKind::UnsupportedRegion),
            ("192.0.2.5".to_string(), ErrorKind::ZoneLimit),
        ],
        "{res:?}"
    );
    // ... and 1142, 1146 in a batch delete.
    let res = c
        .batch_delete(
            ZONE,
            &["192.0.2.1".into(), "192.0.2.77".into(), "1.2.3".into()],
        )
        .await
        .unwrap();
    assert_eq!(res.succeeded.len(), 1, "{res:?}");
    let kinds: Vec<ErrorKind> = res
        .failed
        .iter()
        .map(|f| classify_item_error(f.error.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        vec![ErrorKind::NotFound, ErrorKind::InvalidIp],
        "{res:?}"
    );

    // 9109: deletes refused.
    sim.set_faults(json!({"refuse_deletes": true})).await;
    let e = c.delete(ZONE, "192.0.2.2").await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code(), e.status()),
        (ErrorKind::Unauthorized, Some(9109), Some(403))
    );
    sim.clear_faults().await;

    // 7003: a zone id the router rejects is a bad request, never "no mapping".
    let e = c.get("nothexatall", "192.0.2.2").await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code(), e.status()),
        (ErrorKind::BadRequest, Some(7003), Some(404))
    );

    // Invalid input never reaches the simulator.
    sim.clear_stats().await;
    let e = c.get(ZONE, "192.0.2.256").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("192.0.2.256"), "{e}");
    assert_eq!(
        c.delete(ZONE, "10.0.0.0/8").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(sim.requests_total().await, 0);
}

#[tokio::test]
async fn auth_schemes_and_failures() {
    let sim = Sim::start(&["--token", DISTINCTIVE]);
    let clients = Clients::new(fast_config(&sim), None);
    let good = clients.client(Credentials::ApiToken(DISTINCTIVE.into()));
    assert!(good.supported_regions(ZONE).await.is_ok());

    // A wrong token: 403 / 10000, not retried, and its text never shows a token.
    let wrong_token = format!("{DISTINCTIVE}-wrong");
    let bad = clients.client(Credentials::ApiToken(wrong_token.clone()));
    sim.clear_stats().await;
    let e = bad.get(ZONE, "192.0.2.1").await.unwrap_err();
    assert_eq!(
        (e.kind(), e.status(), e.code()),
        (ErrorKind::Unauthorized, Some(403), Some(10000))
    );
    assert!(!e.is_retryable());
    assert_eq!(
        sim.op_total("get").await,
        1,
        "auth failures are not retried"
    );
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(DISTINCTIVE), "{text}");
    }
    assert!(!format!("{:?}", Credentials::ApiToken(DISTINCTIVE.into())).contains(DISTINCTIVE));

    // Email + key against a simulator that only knows the token: 403.
    let e = clients
        .client(Credentials::ApiKey {
            email: "ops@example.com".into(),
            key: DISTINCTIVE.into(),
        })
        .list_all(ZONE)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(!format!("{e} {e:?}").contains(DISTINCTIVE));

    // The legacy scheme against a simulator configured for it.
    let sim = Sim::start(&[
        "--auth-email",
        "ops@example.com",
        "--auth-key",
        "gk-0123456789",
    ]);
    let clients = Clients::new(fast_config(&sim), None);
    let key = clients.client(Credentials::ApiKey {
        email: "ops@example.com".into(),
        key: "gk-0123456789".into(),
    });
    key.put(ZONE, &item("192.0.2.1", "aws", "us-east-1"))
        .await
        .unwrap();
    assert_eq!(key.list_all(ZONE).await.unwrap().len(), 1);
    let e = clients
        .client(Credentials::ApiToken("dev-token".into()))
        .get(ZONE, "192.0.2.1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
}

#[tokio::test]
async fn pagination_edges() {
    let sim = Sim::start_default();
    let c = client(&sim);
    for n in [0usize, 1, 99, 100, 101, 250] {
        let items = ipv4s(n);
        sim.seed_zone(ZONE, &items).await;
        sim.clear_stats().await;
        let all = c.list_all(ZONE).await.unwrap();
        assert_eq!(all.len(), n, "n={n}");
        let mut ips: Vec<&str> = all.iter().map(|m| m.origin_ip.as_str()).collect();
        ips.sort_unstable();
        ips.dedup();
        assert_eq!(ips.len(), n, "n={n}: duplicates");
        let want_requests = n.div_ceil(100).max(1) as u64;
        assert_eq!(sim.op_total("list").await, want_requests, "n={n}");
        assert_eq!(sim.op_count("list", "200").await, want_requests, "n={n}");
    }
}

#[tokio::test]
async fn batches_over_100_are_refused_locally() {
    let sim = Sim::start_default();
    let c = client(&sim);
    let items = ipv4s(101);
    let e = c.batch_put(ZONE, &items).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("101"), "{e}");
    let ips: Vec<String> = items.iter().map(|i| i.origin_ip.clone()).collect();
    assert_eq!(
        c.batch_delete(ZONE, &ips).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(sim.requests_total().await, 0);
    // Exactly 100 is fine.
    let res = c.batch_put(ZONE, &items[..100]).await.unwrap();
    assert_eq!(res.succeeded.len(), 100);
    let res = c.batch_delete(ZONE, &ips[..100]).await.unwrap();
    assert_eq!(res.succeeded.len(), 100);
}

#[tokio::test]
async fn persistent_faults_fail_after_exactly_max_attempts() {
    let sim = Sim::start_default();
    // (faults, kind, the simulator's stats key, the status the Observer saw)
    let cases = [
        (
            json!({"rate_429": 1.0, "retry_after_secs": 0}),
            ErrorKind::RateLimited,
            "429",
            "429",
        ),
        (json!({"rate_500": 1.0}), ErrorKind::Server, "500", "500"),
        (json!({"rate_1140": 1.0}), ErrorKind::Internal, "500", "500"),
        (
            json!({"rate_drop": 1.0}),
            ErrorKind::Transport,
            "dropped",
            "error",
        ),
        (
            json!({"truncate_body_rate": 1.0}),
            ErrorKind::Transport,
            "truncated",
            "error",
        ),
    ];
    for (faults, kind, sim_status, seen_status) in cases {
        let (c, rec) = observed(fast_config(&sim), Credentials::ApiToken("dev-token".into()));
        sim.set_faults(faults.clone()).await;
        sim.clear_stats().await;
        let e = c.get(ZONE, "192.0.2.1").await.unwrap_err();
        assert_eq!(e.kind(), kind, "{faults}: {e}");
        assert!(e.is_retryable(), "{faults}");
        assert_eq!(sim.op_total("get").await, 3, "{faults}");
        assert_eq!(sim.op_count("get", sim_status).await, 3, "{faults}");
        assert_eq!(rec.retries.load(Ordering::SeqCst), 2, "{faults}");
        let seen: Vec<(&str, String)> = rec.requests.lock().unwrap().clone();
        assert_eq!(seen, vec![("get", seen_status.to_string()); 3], "{faults}");
    }
    sim.clear_faults().await;
}

#[tokio::test]
async fn intermittent_faults_are_ridden_out() {
    let sim = Sim::start_default();
    let config = ClientConfig {
        max_attempts: 12,
        ..fast_config(&sim)
    };
    let (c, rec) = observed(config, Credentials::ApiToken("dev-token".into()));
    sim.set_faults(json!({
        "rate_429": 0.1, "retry_after_secs": 0, "rate_500": 0.1, "rate_1140": 0.1, "rate_drop": 0.1
    }))
    .await;
    for i in 0..30 {
        let ip = format!("198.51.100.{i}");
        c.put(ZONE, &item(&ip, "aws", "us-east-1")).await.unwrap();
        assert!(c.get(ZONE, &ip).await.unwrap().is_some());
    }
    sim.clear_faults().await;
    assert_eq!(c.list_all(ZONE).await.unwrap().len(), 30);
    let retries = rec.retries.load(Ordering::SeqCst);
    assert!(retries > 0, "60 calls at ~34 % fault rate saw no retry");
    let statuses: Vec<String> = rec
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(statuses.len(), 61 + retries);
    assert!(statuses.iter().any(|s| s != "200"), "{statuses:?}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sim = Sim::start_default();
    let config = ClientConfig {
        max_attempts: 2,
        ..fast_config(&sim)
    };
    let (c, rec) = observed(config, Credentials::ApiToken("dev-token".into()));
    sim.set_faults(json!({"rate_429": 1.0, "retry_after_secs": 1}))
        .await;
    let start = Instant::now();
    let e = c.get(ZONE, "192.0.2.1").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(sim.op_count("get", "429").await, 2);
    // Backoff alone would be ≤ 50 ms; the one wait between the two attempts took ≥ 1 s.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(rec.retries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_rate_limit_is_waited_out() {
    let sim = Sim::start(&["--rate-limit", "3/1"]);
    let config = ClientConfig {
        max_attempts: 5,
        ..fast_config(&sim)
    };
    let c = Clients::new(config, None).client(Credentials::ApiToken("dev-token".into()));
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(c.get(ZONE, "192.0.2.1").await.unwrap(), None);
    }
    assert!(sim.op_count("get", "429").await >= 1);
    assert_eq!(sim.op_count("get", "404").await, 5);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn client_side_rate_limiter_paces_calls() {
    let sim = Sim::start_default();
    let config = ClientConfig {
        rate_limit: 5,
        rate_period: Duration::from_secs(1),
        ..fast_config(&sim)
    };
    let rec = Arc::new(Recorder::default());
    let clients = Clients::new(config, Some(rec.clone() as Arc<dyn Observer>));
    // Two clients for one credential share its limiter.
    let a = clients.client(Credentials::ApiToken("dev-token".into()));
    let b = clients.client(Credentials::ApiToken("dev-token".into()));
    let start = Instant::now();
    let calls = (0..10).map(|i| {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { c.get(ZONE, "192.0.2.1").await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap(), None);
    }
    let elapsed = start.elapsed();
    // Burst 5, then one every 200 ms: the 10th call starts at ~1 s.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let waits = rec.waits.lock().unwrap().clone();
    assert!(waits.len() >= 5, "{waits:?}");
    assert!(waits.iter().all(|&w| w > 0.0));
    assert_eq!(sim.op_total("get").await, 10);
}

#[tokio::test]
async fn slow_responses_time_out() {
    let sim = Sim::start_default();
    let config = ClientConfig {
        max_attempts: 2,
        request_timeout: Duration::from_millis(200),
        ..fast_config(&sim)
    };
    let (c, rec) = observed(config, Credentials::ApiToken("dev-token".into()));
    sim.set_faults(json!({"latency_ms": 1000})).await;
    let start = Instant::now();
    let e = c.get(ZONE, "192.0.2.1").await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    let statuses: Vec<String> = rec
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(statuses, vec!["timeout", "timeout"]);
}
