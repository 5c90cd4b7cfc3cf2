//! End-to-end behaviour of the operator on a real kube-apiserver + etcd and the simulator.
//! Each test has its own namespace, zone, simulator and operator process.

mod support;

use std::time::Duration;

use serde_json::json;
use support::e2e::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_and_ipv6_become_ready_with_exact_remote_entries() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("v4", "192.0.2.10", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("v6", "2001:DB8:0:0:0:0:0:0A", "gcp", "us-central1"))
        .await;
    let v4 = env.wait_ready("v4").await;
    let v6 = env.wait_ready("v6").await;
    let s6 = v6.status.unwrap();
    assert_eq!(s6.origin_ip.as_deref(), Some("2001:db8::a"));
    assert_eq!(s6.zone_id.as_deref(), Some(env.zone.as_str()));
    assert_eq!(s6.upper_tier_colos, Some(vec!["ORD".to_string()]));
    assert!(s6.last_sync_time.is_some());
    assert_eq!(v4.status.unwrap().origin_ip.as_deref(), Some("192.0.2.10"));
    let remote = env.remote(&env.zone).await;
    assert_eq!(remote.len(), 2, "{remote:?}");
    assert_eq!(remote["192.0.2.10"], ("aws".into(), "us-east-1".into()));
    assert_eq!(remote["2001:db8::a"], ("gcp".into(), "us-central1".into()));
    env.wait_event("v4", "Created").await;
    // `kubectl get` shows the IP as applied; `-o wide` adds the spec's spelling.
    let get = |wide: bool| {
        let mut args = vec!["get", "ocrm", "v6", "-n", env.ns.as_str(), "--no-headers"];
        if wide {
            args.extend(["-o", "wide"]);
        }
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            env.cp.kubectl(&a).await.expect("kubectl get")
        }
    };
    let row = get(false).await;
    assert!(row.contains(" 2001:db8::a "), "{row}");
    assert!(!row.contains("2001:DB8"), "{row}");
    let wide = get(true).await;
    assert!(wide.trim_end().ends_with("2001:DB8:0:0:0:0:0:0A"), "{wide}");
    assert!(v4
        .metadata
        .finalizers
        .unwrap()
        .contains(&"originregions.io/cleanup".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_region_updates_the_remote_entry() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("m", "192.0.2.20", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.patch_spec("m", json!({"region": "us-west-2"})).await;
    let o = env
        .wait_for("m", Duration::from_secs(30), "updated", |o| {
            o.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
                && o.ready_condition().is_some_and(|c| c.status == "True")
        })
        .await;
    assert_eq!(
        o.status.unwrap().upper_tier_colos,
        Some(vec!["SEA".to_string()])
    );
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.20"],
        ("aws".into(), "us-west-2".into())
    );
    env.wait_event("m", "Updated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_origin_ip_moves_the_entry() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("m", "192.0.2.30", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.patch_spec("m", json!({"originIp": "192.0.2.31"})).await;
    let remote = env
        .wait_remote(&env.zone, "moved", |r| {
            r.contains_key("192.0.2.31") && !r.contains_key("192.0.2.30")
        })
        .await;
    assert_eq!(remote.len(), 1);
    let o = env.wait_ready("m").await;
    assert_eq!(o.status.unwrap().origin_ip.as_deref(), Some("192.0.2.31"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_zone_moves_the_entry_between_zones() {
    let env = Env::new(&[], &[]).await;
    let other = support::e2e::random_zone();
    env.create(&env.mapping("m", "192.0.2.35", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.patch_spec("m", json!({"zoneId": other})).await;
    env.wait_remote(&other, "holding the entry", |r| {
        r.contains_key("192.0.2.35")
    })
    .await;
    env.wait_remote(&env.zone, "empty", |r| r.is_empty()).await;
    let o = env.wait_ready("m").await;
    assert_eq!(o.status.unwrap().zone_id.as_deref(), Some(other.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_removes_the_remote_entry_then_the_object() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("m", "192.0.2.40", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.delete("m").await;
    env.wait_gone("m").await;
    assert!(env.remote(&env.zone).await.is_empty());
    env.wait_event("m", "Deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_policy_keeps_the_remote_entry() {
    let env = Env::new(&[], &[]).await;
    let mut m = env.mapping("m", "192.0.2.50", "aws", "us-east-1");
    m.spec.deletion_policy = origin_region_operator::crd::DeletionPolicy::Orphan;
    env.create(&m).await;
    env.wait_ready("m").await;
    env.delete("m").await;
    env.wait_gone("m").await;
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.50"],
        ("aws".into(), "us-east-1".into())
    );
    env.wait_event("m", "Orphaned").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_orphan_releases_an_object_whose_remote_delete_is_refused() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("m", "192.0.2.60", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim.set_faults(json!({"refuse_deletes": true})).await;
    env.delete("m").await;
    let o = env
        .wait_for("m", Duration::from_secs(30), "DeletionBlocked", |o| {
            o.ready_condition()
                .is_some_and(|c| c.reason == "DeletionBlocked")
        })
        .await;
    let msg = &o.ready_condition().unwrap().message;
    assert!(msg.contains("force-orphan"), "{msg}");
    // Still blocked a while later: a terminal refusal is not retried in a hot loop.
    let deletes_before = env.sim.op_total("delete").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.api().get_opt("m").await.unwrap().is_some());
    assert!(env.sim.op_total("delete").await <= deletes_before + 1);
    env.api()
        .patch(
            "m",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"originregions.io/force-orphan": "true"}}}),
            ),
        )
        .await
        .unwrap();
    env.wait_gone("m").await;
    assert!(env.remote(&env.zone).await.contains_key("192.0.2.60"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_existing_remote_entry_is_adopted_without_a_write() {
    let mut env = Env::without_operator(&[]).await;
    env.sim
        .seed_zone(
            &env.zone,
            &[origin_region_operator::wire::MappingInput {
                origin_ip: "192.0.2.70".into(),
                vendor: "aws".into(),
                region: "us-east-1".into(),
            }],
        )
        .await;
    env.create(&env.mapping("m", "192.0.2.70", "aws", "us-east-1"))
        .await;
    env.start_operator(&[]);
    env.wait_ready("m").await;
    env.wait_event("m", "Adopted").await;
    assert_eq!(
        env.sim.op_total("put").await + env.sim.op_total("batch_put").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_drift_is_repaired_on_resync() {
    let env = Env::new(&[], &["--resync-interval", "2s"]).await;
    env.create(&env.mapping("m", "192.0.2.80", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim
        .seed_zone(
            &env.zone,
            &[origin_region_operator::wire::MappingInput {
                origin_ip: "192.0.2.80".into(),
                vendor: "aws".into(),
                region: "eu-west-1".into(),
            }],
        )
        .await;
    env.wait_remote(&env.zone, "repaired", |r| {
        r.get("192.0.2.80") == Some(&("aws".into(), "us-east-1".into()))
    })
    .await;
    env.wait_event("m", "DriftCorrected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_of_two_objects_for_one_ip_wins() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("first", "192.0.2.90", "aws", "us-east-1"))
        .await;
    env.wait_ready("first").await;
    env.create(&env.mapping("second", "192.0.2.90", "aws", "us-west-2"))
        .await;
    let o = env.wait_reason("second", "Conflict").await;
    let msg = o.ready_condition().unwrap().message.clone();
    assert!(msg.contains(&format!("{}/first", env.ns)), "{msg}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.90"],
        ("aws".into(), "us-east-1".into())
    );
    let writes = env.sim.op_total("put").await + env.sim.op_total("batch_put").await;
    assert_eq!(writes, 1, "no write ping-pong");
    // When the winner goes, the other object takes over the IP.
    env.delete("first").await;
    env.wait_ready("second").await;
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.90"],
        ("aws".into(), "us-west-2".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_region_is_reported_without_api_writes() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("m", "192.0.2.100", "gcp", "us-central9"))
        .await;
    let o = env.wait_reason("m", "RegionNotSupported").await;
    let msg = &o.ready_condition().unwrap().message;
    assert!(
        msg.contains("us-central9") && msg.contains("us-central1"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.sim.op_total("put").await + env.sim.op_total("batch_put").await,
        0
    );
    env.wait_event("m", "RegionNotSupported").await;
    // Fixing the spec makes it Ready.
    env.patch_spec("m", json!({"region": "us-central1"})).await;
    env.wait_ready("m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_then_picked_up_when_created() {
    let env = Env::new(&[], &[]).await;
    let mut m = env.mapping("m", "192.0.2.110", "aws", "us-east-1");
    m.spec.credentials_secret_ref = Some(origin_region_operator::crd::SecretReference {
        name: "team-token".into(),
    });
    env.create(&m).await;
    let o = env.wait_reason("m", "CredentialsMissing").await;
    assert!(o.ready_condition().unwrap().message.contains("team-token"));
    env.put_secret("team-token", &[("apiToken", "dev-token\n")])
        .await;
    env.wait_ready("m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_keeps_working() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("m", "192.0.2.120", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim
        .set_auth(json!({"tokens": ["dev-token", "rotated-token-2"]}))
        .await;
    env.put_secret(support::e2e::SECRET, &[("apiToken", "rotated-token-2")])
        .await;
    env.sim
        .set_auth(json!({"tokens": ["rotated-token-2"]}))
        .await;
    env.patch_spec("m", json!({"region": "us-west-2"})).await;
    let o = env
        .wait_for("m", Duration::from_secs(30), "Ready at generation 2", |o| {
            o.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
                && o.ready_condition().is_some_and(|c| c.status == "True")
        })
        .await;
    assert!(o.status.is_some());
    assert_eq!(env.remote(&env.zone).await["192.0.2.120"].1, "us-west-2");
    let log = env.op.as_ref().unwrap().log();
    assert!(
        !log.contains("rotated-token-2") && !log.contains("dev-token"),
        "credential in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_zone_is_reported() {
    let env = Env::new(&["--max-mappings", "2"], &[]).await;
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        env.create(&env.mapping(name, &format!("192.0.2.13{i}"), "aws", "us-east-1"))
            .await;
        // Creation order decides who gets the two slots.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    env.wait_ready("a").await;
    env.wait_ready("b").await;
    let o = env.wait_reason("c", "ZoneLimitReached").await;
    assert!(o.ready_condition().unwrap().message.contains(&env.zone));
    assert_eq!(env.remote(&env.zone).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_429_and_500_still_converge_within_bounded_requests() {
    let env = Env::new(&[], &[]).await;
    env.sim
        .set_faults(json!({"rate_429": 0.3, "retry_after_secs": 1, "rate_500": 0.2}))
        .await;
    for i in 0..5 {
        env.create(&env.mapping(
            &format!("m{i}"),
            &format!("192.0.2.14{i}"),
            "aws",
            "us-east-1",
        ))
        .await;
    }
    for i in 0..5 {
        env.wait_ready(&format!("m{i}")).await;
    }
    let total = env.sim.requests_total().await;
    assert!(total < 60, "{total} requests for 5 mappings under faults");
    assert_eq!(env.remote(&env.zone).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_fifty_objects_converge_with_batch_calls() {
    let mut env = Env::without_operator(&[]).await;
    for i in 0..150 {
        let ip = format!("10.0.{}.{}", i / 200, i % 200 + 1);
        env.create(&env.mapping(&format!("m{i:03}"), &ip, "aws", "us-east-1"))
            .await;
    }
    env.start_operator(&[]);
    for i in 0..150 {
        env.wait_ready(&format!("m{i:03}")).await;
    }
    assert_eq!(env.remote(&env.zone).await.len(), 150);
    assert_eq!(
        env.sim.op_total("batch_put").await,
        2,
        "150 upserts in 2 batches"
    );
    assert_eq!(env.sim.op_total("put").await, 0);
    assert!(env.sim.op_total("list").await <= 2);
    // Steady state: nothing more is written.
    let writes_before = env
        .op()
        .metric_sum("origin_region_operator_kube_writes_total", &[])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sim.op_total("batch_put").await, 2);
    let writes_after = env
        .op()
        .metric_sum("origin_region_operator_kube_writes_total", &[])
        .await;
    assert_eq!(writes_before, writes_after, "kube writes in steady state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_changes_and_writes_nothing() {
    let env = Env::without_operator(&[]).await;
    env.sim
        .seed_zone(
            &env.zone,
            &[origin_region_operator::wire::MappingInput {
                origin_ip: "192.0.2.150".into(),
                vendor: "aws".into(),
                region: "eu-west-1".into(),
            }],
        )
        .await;
    env.create(&env.mapping("new", "192.0.2.151", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("changed", "192.0.2.150", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("bad", "192.0.2.152", "oci", "moon-1"))
        .await;
    let out = env.run_plan(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plan failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("zone {}", env.zone)), "{stdout}");
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("192.0.2.151").contains("create"), "{stdout}");
    assert!(line("192.0.2.150").contains("adopt-update"), "{stdout}");
    assert!(
        line("192.0.2.152").contains("RegionNotSupported"),
        "{stdout}"
    );
    assert!(stdout.contains("2 write(s) planned"), "{stdout}");
    let writes = env.sim.op_total("put").await + env.sim.op_total("batch_put").await;
    assert_eq!(writes, 0, "plan must not write");
    for name in ["new", "changed", "bad"] {
        let o = env.api().get(name).await.unwrap();
        assert!(
            o.status.is_none() && o.metadata.finalizers.is_none(),
            "plan touched {name}"
        );
    }
}
