//! What an SRE relies on around the controller: metrics after a known workload, health
//! endpoints, leader election between replicas, and a clean SIGTERM that releases the Lease.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::e2e::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_a_known_workload() {
    let env = Env::new(&[], &["--log-format", "json"]).await;
    for i in 0..3 {
        env.create(&env.mapping(
            &format!("m{i}"),
            &format!("198.51.100.{i}"),
            "aws",
            "us-east-1",
        ))
        .await;
    }
    env.create(&env.mapping("bad", "198.51.100.9", "aws", "mars-north-1"))
        .await;
    for i in 0..3 {
        env.wait_ready(&format!("m{i}")).await;
    }
    env.wait_reason("bad", "RegionNotSupported").await;
    let zone = env.zone.clone();
    let op = env.op();
    // Gauges are set at the end of a zone reconcile, after the status writes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while op
        .metric_sum(
            "origin_region_operator_mappings",
            &[&zone, "ready=\"true\""],
        )
        .await
        != 3.0
    {
        assert!(
            Instant::now() < deadline,
            "mappings gauge never reached 3:\n{}",
            op.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        op.metric_sum(
            "origin_region_operator_mappings",
            &[&zone, "ready=\"false\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        op.metric_sum(
            "origin_region_operator_kube_writes_total",
            &["kind=\"finalizer\""]
        )
        .await,
        4.0
    );
    assert_eq!(
        op.metric_sum(
            "origin_region_operator_kube_writes_total",
            &["kind=\"status\""]
        )
        .await,
        4.0
    );
    let cf_writes = op
        .metric_sum(
            "origin_region_operator_cloudflare_requests_total",
            &["operation=\"batch_put\"", "status=\"200\""],
        )
        .await
        + op.metric_sum(
            "origin_region_operator_cloudflare_requests_total",
            &["operation=\"put\"", "status=\"200\""],
        )
        .await;
    let sim_writes = env.sim.op_total("batch_put").await + env.sim.op_total("put").await;
    assert_eq!(
        cf_writes, sim_writes as f64,
        "operator and simulator agree on writes"
    );
    let op = env.op();
    let lists = op
        .metric_sum(
            "origin_region_operator_cloudflare_requests_total",
            &["operation=\"list\""],
        )
        .await;
    assert_eq!(lists, env.sim.op_total("list").await as f64);
    assert!(
        op.metric_sum(
            "origin_region_operator_cloudflare_request_duration_seconds_count",
            &["operation=\"list\""]
        )
        .await
            >= 1.0
    );
    assert!(
        op.metric_sum(
            "origin_region_operator_zone_reconciles_total",
            &["result=\"ok\""]
        )
        .await
            >= 1.0
    );
    assert_eq!(
        op.metric_sum("origin_region_operator_leader", &[]).await,
        1.0
    );
    let base = format!("http://{}", op.metrics_addr);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let text = op.metrics().await;
    assert!(!text.contains("dev-token"), "credential in metrics");
    // --log-format json: every line is one JSON object with a level and a message.
    let log = op.log();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

async fn lease_holder(env: &Env, name: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    api.get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_sigterm_hands_over_cleanly() {
    let mut env = Env::without_operator(&[]).await;
    let election = |id: &str| {
        vec![
            "--leader-election".to_string(),
            "--lease-namespace".into(),
            env.ns.clone(),
            // Long, so a standby that waited for expiry instead of taking a released Lease
            // would fail the hand-over bound below.
            "--lease-duration".into(),
            "15s".into(),
            "--identity".into(),
            id.to_string(),
        ]
    };
    let mut a_args = env.base_args();
    a_args.extend(election("replica-a"));
    let mut b_args = env.base_args();
    b_args.extend(election("replica-b"));
    let mut a = support::operator::Operator::start(env.cp.kubeconfig_path(), &a_args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lease_holder(&env, "origin-region-operator")
        .await
        .as_deref()
        != Some("replica-a")
    {
        assert!(
            Instant::now() < deadline,
            "replica-a never led:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = support::operator::Operator::start(env.cp.kubeconfig_path(), &b_args);
    for i in 0..5 {
        env.create(&env.mapping(
            &format!("m{i}"),
            &format!("198.51.100.{}", 20 + i),
            "aws",
            "us-east-1",
        ))
        .await;
    }
    for i in 0..5 {
        env.wait_ready(&format!("m{i}")).await;
    }
    // The standby is healthy and ready, but made no Cloudflare call and no Kubernetes write.
    let readyz = reqwest::get(format!("http://{}/readyz", b.metrics_addr))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    assert_eq!(
        b.metric_sum("origin_region_operator_leader", &[]).await,
        0.0
    );
    assert_eq!(
        b.metric_sum("origin_region_operator_cloudflare_requests_total", &[])
            .await,
        0.0
    );
    assert_eq!(
        b.metric_sum("origin_region_operator_kube_writes_total", &[])
            .await,
        0.0
    );
    assert_eq!(
        a.metric_sum("origin_region_operator_leader", &[]).await,
        1.0
    );

    // SIGTERM: the leader finishes, releases the Lease and exits 0; the standby takes over
    // well before the lease would have expired.
    let stopped = Instant::now();
    let status = a
        .terminate(Duration::from_secs(20))
        .expect("leader exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}:\n{}", a.log());
    while lease_holder(&env, "origin-region-operator")
        .await
        .as_deref()
        != Some("replica-b")
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "replica-b never took over:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM took {handover:?}");
    // The Lease was released: the standby takes it within its one-second look, plus the
    // old leader's shutdown grace, not after the 15 s lease would have run out.
    assert!(
        handover < Duration::from_secs(6),
        "hand-over took {handover:?}"
    );
    // The new leader keeps things converged: a change made now is applied by replica-b.
    env.patch_spec("m0", serde_json::json!({"region": "us-west-2"}))
        .await;
    env.wait_remote(&env.zone, "updated by the new leader", |r| {
        r.get("198.51.100.20")
            .is_some_and(|(_, region)| region == "us-west-2")
    })
    .await;
    assert!(
        b.metric_sum("origin_region_operator_cloudflare_requests_total", &[])
            .await
            >= 1.0
    );
    a.assert_no_panic();
    b.assert_no_panic();
    env.op = Some(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_guard_allows_writes_only_while_this_process_holds_a_live_lease() {
    use origin_region_operator::leader::LeaseGuard;
    let cp = testbed::shared().await;
    let ns = cp.create_namespace("lease").await.expect("namespace");
    let api: Api<Lease> = Api::namespaced(cp.client(), &ns);
    let guard = LeaseGuard::new(cp.client(), &ns, "leader", "me");
    assert!(!guard.holds().await, "no Lease at all");
    let put = |holder: &'static str, renewed: jiff::Timestamp| {
        let api = api.clone();
        async move {
            let lease: Lease = serde_json::from_value(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "leader"},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": 10,
                    "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                }
            }))
            .unwrap();
            api.patch(
                "leader",
                &kube::api::PatchParams::apply("test").force(),
                &kube::api::Patch::Apply(&lease),
            )
            .await
            .expect("apply lease");
        }
    };
    let now = jiff::Timestamp::now();
    put("me", now).await;
    assert!(guard.holds().await, "held and fresh");
    put("other", now).await;
    assert!(!guard.holds().await, "another replica took over");
    // Paused past the lease: still named, but expired.
    put("me", now - jiff::SignedDuration::from_secs(30)).await;
    assert!(!guard.holds().await, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_cloudflare_calls_retry_exits_at_once_and_releases_the_lease() {
    let env = Env::without_operator(&[]).await;
    let mut args = env.base_args();
    args.extend(
        [
            "--leader-election",
            "--lease-namespace",
            env.ns.as_str(),
            "--lease-duration",
            "30s",
            "--identity",
            "retrying",
            // Long backoffs: without the grace a zone would keep the process for minutes.
            "--max-attempts",
            "10",
        ]
        .map(String::from),
    );
    let mut op = support::operator::Operator::start(env.cp.kubeconfig_path(), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lease_holder(&env, "origin-region-operator")
        .await
        .as_deref()
        != Some("retrying")
    {
        assert!(Instant::now() < deadline, "never led:\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Cloudflare fails every call with a retryable error, slowly.
    env.sim
        .set_faults(serde_json::json!({"rate_500": 1.0, "latency_ms": 300}))
        .await;
    env.create(&env.mapping("m", "198.51.100.77", "aws", "us-east-1"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while op
        .metric_sum("origin_region_operator_cloudflare_retries_total", &[])
        .await
        < 2.0
    {
        assert!(Instant::now() < deadline, "no retries seen:\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = Instant::now();
    let status = op
        .terminate(Duration::from_secs(20))
        .expect("exits on SIGTERM");
    let took = stopped.elapsed();
    eprintln!("SIGTERM to exit while retrying: {took:?}");
    assert!(status.success(), "exit status {status:?}:\n{}", op.log());
    // The default grace is 2 s; a Lease of 30 s would have kept a new leader out far longer.
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}:\n{}",
        op.log()
    );
    assert!(
        op.log().contains("stopping them"),
        "the zone was not stopped:\n{}",
        op.log()
    );
    // Released: nobody holds it, so a standby takes over at once.
    assert_eq!(lease_holder(&env, "origin-region-operator").await, None);
    op.assert_no_panic();
    // The next leader finishes what the stopped zone had started, at once (the Lease is free).
    env.sim.clear_faults().await;
    let started = Instant::now();
    let mut next = support::operator::Operator::start(env.cp.kubeconfig_path(), &args);
    env.wait_ready("m").await;
    eprintln!(
        "next leader had the mapping Ready after {:?}",
        started.elapsed()
    );
    assert_eq!(env.remote(&env.zone).await.len(), 1);
    next.terminate(Duration::from_secs(10));
    next.assert_no_panic();
}

/// Reconciles of any result so far.
async fn reconciles(env: &Env) -> f64 {
    env.op()
        .metric_sum("origin_region_operator_zone_reconciles_total", &[])
        .await
}

/// Waits until `env`'s reconcile count has not moved for `quiet`; returns it.
async fn settled_reconciles(env: &Env, quiet: Duration) -> f64 {
    let mut last = reconciles(env).await;
    loop {
        tokio::time::sleep(quiet).await;
        let now = reconciles(env).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_costs_one_reconcile_and_our_own_writes_seen_back_cost_none() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("a", "198.51.100.20", "aws", "us-east-1"))
        .await;
    env.wait_ready("a").await;
    // The create wrote the record (finalizer + intent) and the status; the watch shows both
    // back. Neither is a change: the zone ran once (10 debounce periods of quiet to be sure).
    let quiet = Duration::from_secs(1);
    assert_eq!(settled_reconciles(&env, quiet).await, 1.0);
    // A user's edit is a change: one more reconcile, whose status write again costs none.
    env.patch_spec("a", serde_json::json!({"region": "us-west-2"}))
        .await;
    let edited = |r: &std::collections::BTreeMap<String, (String, String)>| {
        r.get("198.51.100.20")
            .is_some_and(|(_, region)| region == "us-west-2")
    };
    env.wait_remote_within(&env.zone, "edited", Duration::from_secs(20), edited)
        .await;
    assert_eq!(settled_reconciles(&env, quiet).await, 2.0);
    // A label is someone else's change too (it may select credentials or namespaces).
    let api = env.api();
    let patch = serde_json::json!({"metadata": {"labels": {"team": "edge"}}});
    api.patch(
        "a",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reconciles(&env).await < 3.0 {
        assert!(Instant::now() < deadline, "a label change was not planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled_reconciles(&env, quiet).await, 3.0);
}
