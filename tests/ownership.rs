//! Ownership under the ways an SRE breaks things, end to end on the real control plane and the
//! simulator: invalid edits, lost responses, refused status writes, outages, blocked owners,
//! refused tokens, full and deleted zones. Each test is one way the record of which remote
//! entry an object owns could give way, and asserts it does not.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use origin_region_operator::crd::{OriginCloudRegionMapping, SecretReference};
use origin_region_operator::ownership::{self, Entry};
use origin_region_operator::wire::MappingInput;
use serde_json::json;
use support::e2e::{random_zone, Env};

type Remote = std::collections::BTreeMap<String, (String, String)>;

/// A check that the zone maps `ip` to this vendor and region.
fn entry(vendor: &str, region: &str) -> impl Fn(&Remote, &str) -> bool {
    let want = (vendor.to_string(), region.to_string());
    move |remote, ip| remote.get(ip) == Some(&want)
}

/// Polls for `d` and fails as soon as `pred` breaks.
async fn holds_for(env: &Env, zone: &str, d: Duration, what: &str, pred: impl Fn(&Remote) -> bool) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let remote = env.remote(zone).await;
        assert!(pred(&remote), "{what} broke: {remote:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn annotate(env: &Env, name: &str, key: &str, value: &str) {
    env.api()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .expect("annotate");
}

fn reason(o: &OriginCloudRegionMapping) -> String {
    o.ready_condition()
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_keeps_the_applied_entry_and_says_so() {
    let env = Env::new(&[], &[]).await;
    let ip = "192.0.2.70";
    let aws_east = entry("aws", "us-east-1");
    env.create(&env.mapping("m", ip, "aws", "us-east-1")).await;
    env.wait_ready("m").await;

    // A region that does not exist.
    env.patch_spec("m", json!({"region": "us-east-9"})).await;
    let o = env.wait_reason("m", "RegionNotSupported").await;
    let s = o.status.clone().unwrap();
    assert_eq!(s.zone_id.as_deref(), Some(env.zone.as_str()));
    assert_eq!(s.origin_ip.as_deref(), Some(ip));
    assert_eq!(
        (s.vendor.as_deref(), s.region.as_deref()),
        (Some("aws"), Some("us-east-1"))
    );
    let msg = &o.ready_condition().unwrap().message;
    assert!(msg.contains("kept as aws us-east-1"), "{msg}");
    holds_for(&env, &env.zone, Duration::from_secs(2), "the entry", |r| {
        aws_east(r, ip)
    })
    .await;

    // A vendor-only edit to a vendor that has no such region.
    env.patch_spec("m", json!({"region": "us-east-1"})).await;
    env.wait_ready("m").await;
    env.patch_spec("m", json!({"vendor": "gcp"})).await;
    env.wait_reason("m", "RegionNotSupported").await;
    holds_for(&env, &env.zone, Duration::from_secs(2), "the entry", |r| {
        aws_east(r, ip)
    })
    .await;

    // No catalog (Tiered Cache off): Cloudflare itself refuses the write (1157), and the
    // reconciles after it must still keep the entry.
    let dark = random_zone();
    env.sim.set_tiered_cache(&dark, false).await;
    env.create(&env.mapping_in(&dark, "dark", ip, "aws", "us-east-1"))
        .await;
    env.wait_ready("dark").await;
    env.patch_spec("dark", json!({"region": "us-east-9"})).await;
    env.wait_reason("dark", "RegionNotSupported").await;
    annotate(&env, "dark", "example.com/poke", "1").await;
    annotate(&env, "m", "example.com/poke", "1").await;
    holds_for(
        &env,
        &dark,
        Duration::from_secs(3),
        "the entry without a catalog",
        |r| aws_east(r, ip),
    )
    .await;
    assert_eq!(
        env.sim.op_total("delete").await + env.sim.op_total("batch_delete").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_orphans_nothing_on_an_ip_edit_or_a_zone_move() {
    let env = Env::new(&[], &["--max-attempts", "2"]).await;
    let other = random_zone();
    // The zone is listed (and cached) first, so the cut answers are the writes'.
    env.create(&env.mapping("warm", "192.0.2.79", "aws", "us-east-1"))
        .await;
    env.wait_ready("warm").await;

    // An IP edit after a create whose answer was lost.
    env.sim.set_faults(json!({"truncate_body_rate": 1.0})).await;
    env.create(&env.mapping("ipedit", "192.0.2.80", "aws", "us-east-1"))
        .await;
    env.wait_remote(&env.zone, "written, answer lost", |r| {
        r.contains_key("192.0.2.80")
    })
    .await;
    let o = env.wait_reason("ipedit", "CloudflareUnavailable").await;
    assert!(
        ownership::recorded(&o).contains(&Entry::new(&env.zone, "192.0.2.80")),
        "the intent is recorded before the write: {:?}",
        o.metadata.annotations
    );
    env.patch_spec("ipedit", json!({"originIp": "192.0.2.81"}))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.sim.clear_faults().await;
    let o = env.wait_ready("ipedit").await;
    assert_eq!(o.status.unwrap().origin_ip.as_deref(), Some("192.0.2.81"));
    let remote = env.remote(&env.zone).await;
    assert_eq!(
        remote.keys().collect::<Vec<_>>(),
        ["192.0.2.79", "192.0.2.81"],
        "{remote:?}"
    );
    // The record holds only what is owned now.
    let o = env.api().get("ipedit").await.unwrap();
    assert_eq!(
        ownership::owned(&o),
        [Entry::new(&env.zone, "192.0.2.81")].into_iter().collect()
    );

    // A zone move after a create whose answer was lost (the zone is listed again by now).
    env.sim.set_faults(json!({"truncate_body_rate": 1.0})).await;
    env.create(&env.mapping("mover", "192.0.2.82", "aws", "us-east-1"))
        .await;
    env.wait_remote(&env.zone, "written, answer lost", |r| {
        r.contains_key("192.0.2.82")
    })
    .await;
    env.wait_reason("mover", "CloudflareUnavailable").await;
    env.patch_spec("mover", json!({"zoneId": other})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.sim.clear_faults().await;
    env.wait_ready("mover").await;
    assert!(!env.remote(&env.zone).await.contains_key("192.0.2.82"));
    assert!(env.remote(&other).await.contains_key("192.0.2.82"));

    for name in ["ipedit", "mover", "warm"] {
        env.delete(name).await;
    }
    for name in ["ipedit", "mover", "warm"] {
        env.wait_gone(name).await;
    }
    assert!(env.remote(&env.zone).await.is_empty());
    assert!(env.remote(&other).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_write_is_retried_and_an_edit_meanwhile_orphans_nothing() {
    let env = Env::new(&[], &[]).await;
    let policy = format!("deny-status-{}", env.ns);
    let manifest = support::e2e::deny_status_policy(&policy, &env.ns);
    env.cp
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest))
        .await
        .expect("apply policy");
    // Wait until the policy bites (policies load asynchronously).
    env.create(&env.mapping("probe", "192.0.2.99", "aws", "us-east-1"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let patch = json!({"status": {"conditions": []}});
        let r = env
            .api()
            .patch_status("probe", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if r.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy never refused a status write"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    env.create(&env.mapping("m", "192.0.2.90", "aws", "us-east-1"))
        .await;
    env.wait_remote(&env.zone, "written", |r| r.contains_key("192.0.2.90"))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let o = env.api().get("m").await.unwrap();
    assert!(o
        .status
        .as_ref()
        .and_then(|s| s.origin_ip.clone())
        .is_none());
    assert!(ownership::recorded(&o).contains(&Entry::new(&env.zone, "192.0.2.90")));
    // An IP edit while status cannot be written: the old entry is still released.
    env.patch_spec("m", json!({"originIp": "192.0.2.91"})).await;
    env.wait_remote(&env.zone, "moved", |r| {
        r.contains_key("192.0.2.91") && !r.contains_key("192.0.2.90")
    })
    .await;
    // The operator keeps retrying the status write with backoff, not at the 10-minute resync.
    env.cp
        .kubectl(&["delete", "validatingadmissionpolicybinding", &policy])
        .await
        .expect("delete binding");
    let started = Instant::now();
    let o = env.wait_ready("m").await;
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(o.status.unwrap().origin_ip.as_deref(), Some("192.0.2.91"));
    env.delete("m").await;
    env.delete("probe").await;
    env.wait_gone("m").await;
    env.wait_gone("probe").await;
    let _ = env
        .cp
        .kubectl(&["delete", "validatingadmissionpolicy", &policy])
        .await;
    assert!(env.remote(&env.zone).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_orphan_releases_a_deleting_object_while_cloudflare_is_down() {
    let env = Env::new(&[], &["--max-attempts", "1"]).await;
    env.create(&env.mapping("m", "192.0.2.95", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim.set_faults(json!({"rate_500": 1.0})).await;
    env.delete("m").await;
    let o = env
        .wait_for("m", Duration::from_secs(30), "DeletionBlocked", |o| {
            reason(o) == "DeletionBlocked"
        })
        .await;
    let msg = &o.ready_condition().unwrap().message;
    assert!(
        msg.contains("force-orphan") && msg.contains("retrying"),
        "{msg}"
    );
    let started = Instant::now();
    annotate(&env, "m", "originregions.io/force-orphan", "true").await;
    env.wait_gone("m").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    env.wait_event("m", "Orphaned").await;
    env.sim.clear_faults().await;
    assert!(env.remote(&env.zone).await.contains_key("192.0.2.95"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_out_of_a_failing_zone_reports_the_current_generation() {
    let env = Env::new(&[], &["--max-attempts", "1"]).await;
    let other = random_zone();
    env.create(&env.mapping("m", "192.0.2.96", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim.set_faults(json!({"rate_500": 1.0})).await;
    env.patch_spec("m", json!({"zoneId": other})).await;
    let o = env
        .wait_for(
            "m",
            Duration::from_secs(30),
            "not Ready at generation 2",
            |o| {
                o.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
                    && o.ready_condition().is_some_and(|c| c.status == "False")
            },
        )
        .await;
    assert_eq!(
        o.status.unwrap().zone_id.as_deref(),
        Some(env.zone.as_str())
    );
    assert!(env.remote(&env.zone).await.contains_key("192.0.2.96"));
    env.sim.clear_faults().await;
    // Recovery waits for the zone's next retry: exponential backoff after every failure of the
    // outage, which lasts longer on a loaded machine.
    let o = env
        .wait_for(
            "m",
            Duration::from_secs(150),
            "Ready after the outage",
            |o| {
                o.ready_condition().is_some_and(|c| c.status == "True")
                    && o.status.as_ref().and_then(|s| s.observed_generation)
                        == o.metadata.generation
            },
        )
        .await;
    assert_eq!(o.status.unwrap().zone_id.as_deref(), Some(other.as_str()));
    assert!(env.remote(&env.zone).await.is_empty());
    assert!(env.remote(&other).await.contains_key("192.0.2.96"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_owner_keeps_its_entry_against_a_newer_conflicting_object() {
    let env = Env::new(&[], &[]).await;
    env.put_secret("b-cred", &[("apiToken", "dev-token")]).await;
    let ip = "192.0.2.100";
    let mut b = env.mapping("b", ip, "aws", "us-east-1");
    b.spec.credentials_secret_ref = Some(SecretReference {
        name: "b-cred".into(),
    });
    env.create(&b).await;
    env.wait_ready("b").await;
    env.create(&env.mapping("a", ip, "aws", "us-west-2")).await;
    env.wait_reason("a", "Conflict").await;

    // Rotation by replace: the Secret is gone for a while.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    secrets
        .delete("b-cred", &Default::default())
        .await
        .expect("delete secret");
    env.wait_reason("b", "CredentialsMissing").await;
    let aws_east = entry("aws", "us-east-1");
    holds_for(&env, &env.zone, Duration::from_secs(3), "b's entry", |r| {
        aws_east(r, ip)
    })
    .await;
    env.put_secret("b-cred", &[("apiToken", "dev-token")]).await;
    env.wait_ready("b").await;
    let a = env.wait_reason("a", "Conflict").await;
    assert!(
        ownership::owned(&a).is_empty(),
        "a records {:?}",
        ownership::owned(&a)
    );
    assert!(aws_east(&env.remote(&env.zone).await, ip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_own_token_is_refused_is_never_ready() {
    let env = Env::new(&[], &[]).await;
    let seeded = MappingInput {
        origin_ip: "192.0.2.110".into(),
        vendor: "aws".into(),
        region: "us-east-1".into(),
    };
    env.sim.seed_zone(&env.zone, &[seeded]).await;
    env.create(&env.mapping("good", "192.0.2.111", "aws", "us-east-1"))
        .await;
    env.wait_ready("good").await;
    env.put_secret("bad-cred", &[("apiToken", "not-a-token-the-zone-accepts")])
        .await;
    let mut bad = env.mapping("bad", "192.0.2.110", "aws", "us-east-1");
    bad.spec.credentials_secret_ref = Some(SecretReference {
        name: "bad-cred".into(),
    });
    env.create(&bad).await;
    env.wait_reason("bad", "CloudflareAuthFailed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = env.api().get("bad").await.unwrap();
    assert_eq!(reason(&o), "CloudflareAuthFailed");
    assert!(!env
        .event_reasons("bad")
        .await
        .iter()
        .any(|r| r == "Adopted" || r == "Synced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_zone_backoff_past_the_resync_time() {
    let env = Env::new(&[], &["--resync-interval", "2s", "--max-attempts", "1"]).await;
    env.create(&env.mapping("m", "192.0.2.120", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim.set_faults(json!({"rate_500": 1.0})).await;
    env.sim.clear_stats().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let lists = env.sim.op_total("list").await;
    env.sim.clear_faults().await;
    // Resync at ~2 s, then backoff 1, 2, 4, 8 s (with jitter): about five lists, never one
    // per poll of the queue.
    assert!(lists <= 8, "{lists} list requests in 20 s of outage");
    assert!(lists >= 2, "the outage was never retried ({lists})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_zone_is_not_rewritten_at_resync() {
    let env = Env::new(&["--max-mappings", "2"], &["--resync-interval", "2s"]).await;
    env.create(&env.mapping("a", "192.0.2.130", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("b", "192.0.2.131", "aws", "us-east-1"))
        .await;
    env.wait_ready("a").await;
    env.wait_ready("b").await;
    env.create(&env.mapping("c", "192.0.2.132", "aws", "us-east-1"))
        .await;
    env.wait_reason("c", "ZoneLimitReached").await;
    env.sim.clear_stats().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let writes = env.sim.op_total("put").await + env.sim.op_total("batch_put").await;
    assert_eq!(writes, 0, "writes to a zone the list shows full");
    assert!(env.sim.op_total("list").await >= 2, "resyncs happened");
    // Catalog TTL (10 min) holds across resyncs.
    assert_eq!(env.sim.op_total("supported_regions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_plans_with_the_catalog_it_has_and_a_drift_check_refreshes_it_past_its_ttl() {
    let env = Env::new(&[], &["--catalog-ttl", "1s", "--resync-interval", "4s"]).await;
    env.create(&env.mapping("m", "192.0.2.140", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Past the catalog's TTL: an edit is planned with the catalog at hand, so the user's
    // change never waits behind a catalog call (thousands of zones would queue behind them).
    env.sim.clear_stats().await;
    env.patch_spec("m", json!({"region": "us-west-2"})).await;
    env.wait_ready("m").await;
    env.wait_remote(&env.zone, "the edit applied", |r| {
        entry("aws", "us-west-2")(r, "192.0.2.140")
    })
    .await;
    assert_eq!(env.sim.op_total("supported_regions").await, 0);
    assert_eq!(
        env.sim.op_total("list").await,
        0,
        "a change needs no re-read"
    );
    // The next drift check (4 s after that write) re-reads the zone and, the TTL being past,
    // the catalog with it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.sim.op_total("list").await == 0 {
        assert!(Instant::now() < deadline, "no drift check within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.sim.op_total("supported_regions").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_freed_by_our_delete_is_used_at_once() {
    let env = Env::new(&["--max-mappings", "2"], &[]).await;
    env.create(&env.mapping("a", "192.0.2.140", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("b", "192.0.2.141", "aws", "us-east-1"))
        .await;
    env.wait_ready("a").await;
    env.wait_ready("b").await;
    env.create(&env.mapping("c", "192.0.2.142", "aws", "us-east-1"))
        .await;
    env.wait_reason("c", "ZoneLimitReached").await;
    env.delete("a").await;
    let started = Instant::now();
    env.wait_ready("c").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let remote = env.remote(&env.zone).await;
    assert_eq!(remote.len(), 2, "{remote:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_zone_is_a_terminal_reason_not_a_retry_loop() {
    let env = Env::new(&[], &["--resync-interval", "3s", "--max-attempts", "1"]).await;
    env.create(&env.mapping("m", "192.0.2.150", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.sim.delete_zone(&env.zone).await;
    // A spec edit makes the object not Ready, so the failure is reported on it.
    env.patch_spec("m", json!({"region": "us-west-2"})).await;
    let o = env.wait_reason("m", "ZoneNotFound").await;
    let msg = &o.ready_condition().unwrap().message;
    assert!(!msg.contains("retrying"), "{msg}");
    assert!(msg.contains("spec.zoneId"), "{msg}");
    env.sim.clear_stats().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Once per resync (3 s), not a backoff loop.
    assert!(env.sim.op_total("list").await <= 3);
}

/// `plan` (run before the operator) predicts exactly the remote state `run` then produces,
/// over a table of zone states: create, adopt, adopt-update, conflict, unsupported region,
/// an unmanaged stranger, a deleting owner, a deleting orphaner, an IP move from a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_exactly_what_run_writes() {
    let mut env = Env::without_operator(&[]).await;
    let z = env.zone.clone();
    let seed = |ip: &str, region: &str| MappingInput {
        origin_ip: ip.into(),
        vendor: "aws".into(),
        region: region.into(),
    };
    let seeded = [
        seed("192.0.2.160", "eu-west-1"),
        seed("192.0.2.161", "us-east-1"),
        seed("192.0.2.162", "us-east-1"),
        seed("192.0.2.163", "us-east-1"),
        seed("192.0.2.167", "us-east-1"),
        seed("192.0.2.168", "us-east-1"),
    ];
    env.sim.seed_zone(&z, &seeded).await;
    let with_record = |mut o: OriginCloudRegionMapping, ip: &str| {
        o.metadata.finalizers = Some(vec![origin_region_operator::crd::FINALIZER.into()]);
        o.metadata.annotations = Some(
            [(
                ownership::ENTRIES_ANNOTATION.to_string(),
                format!("{z}/{ip}"),
            )]
            .into_iter()
            .collect(),
        );
        o
    };
    env.create(&env.mapping("adopt-update", "192.0.2.160", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("adopt", "192.0.2.161", "aws", "us-east-1"))
        .await;
    env.create(&with_record(
        env.mapping("leaving", "192.0.2.163", "aws", "us-east-1"),
        "192.0.2.163",
    ))
    .await;
    env.create(&env.mapping("new", "192.0.2.164", "aws", "us-west-2"))
        .await;
    env.create(&env.mapping("bad", "192.0.2.165", "aws", "moon-1"))
        .await;
    env.create(&env.mapping("first", "192.0.2.166", "aws", "us-east-1"))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.create(&env.mapping("second", "192.0.2.166", "aws", "us-west-2"))
        .await;
    let mut orphaner = with_record(
        env.mapping("orphaner", "192.0.2.167", "aws", "us-east-1"),
        "192.0.2.167",
    );
    orphaner.spec.deletion_policy = origin_region_operator::crd::DeletionPolicy::Orphan;
    env.create(&orphaner).await;
    env.create(&with_record(
        env.mapping("mover", "192.0.2.169", "aws", "us-east-1"),
        "192.0.2.168",
    ))
    .await;
    env.delete("leaving").await;
    env.delete("orphaner").await;

    let out = env.run_plan(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json");
    let zone = reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["zone"] == z.as_str())
        .expect("the zone is planned");
    let mut predicted = env.remote(&z).await;
    let mut actions: Vec<(String, String, String)> = Vec::new();
    for c in zone["changes"].as_array().unwrap() {
        let (action, object, ip) = (
            c["action"].as_str().unwrap().to_string(),
            c["object"].as_str().unwrap().to_string(),
            c["ip"].as_str().unwrap().to_string(),
        );
        let name = object.rsplit('/').next().unwrap().to_string();
        match action.as_str() {
            "create" | "update" | "adopt-update" | "correct-drift" => {
                let (v, r) = c["detail"].as_str().unwrap().split_once(' ').unwrap();
                predicted.insert(ip.clone(), (v.to_string(), r.to_string()));
            }
            "delete" => {
                predicted.remove(&ip);
            }
            _ => {}
        }
        actions.push((name, action, ip));
    }
    let has = |name: &str, action: &str| actions.iter().any(|(n, a, _)| n == name && a == action);
    for (name, action) in [
        ("adopt-update", "adopt-update"),
        ("adopt", "adopt"),
        ("leaving", "delete"),
        ("leaving", "finalize"),
        ("new", "create"),
        ("bad", "blocked"),
        ("first", "create"),
        ("second", "blocked"),
        ("orphaner", "forget"),
        ("orphaner", "finalize"),
        ("mover", "delete"),
        ("mover", "create"),
    ] {
        assert!(has(name, action), "{name}: no {action} in {actions:?}");
    }
    assert_eq!(
        env.sim.op_total("put").await + env.sim.op_total("batch_put").await,
        0
    );

    env.start_operator(&[]);
    env.wait_gone("leaving").await;
    env.wait_gone("orphaner").await;
    for name in ["adopt-update", "adopt", "new", "first", "mover"] {
        env.wait_ready(name).await;
    }
    env.wait_reason("bad", "RegionNotSupported").await;
    env.wait_reason("second", "Conflict").await;
    let actual = env.remote(&z).await;
    assert_eq!(actual, predicted, "run wrote other than plan said");
    assert!(actual.contains_key("192.0.2.162"), "the stranger stays");
}

/// Removes `name` straight from etcd: the watch then shows its deletion with our finalizer and
/// record still on it, which is what a DELETE racing our finalizer patch leaves (the apiserver
/// acknowledges both, kubernetes/kubernetes#77988), made to happen on purpose.
async fn vanish_under_finalizer(env: &Env, name: &str) {
    use base64::Engine;
    let key = format!(
        "/registry/originregions.io/origincloudregionmappings/{}/{name}",
        env.ns
    );
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/kv/deleterange", env.cp.etcd_url()))
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("etcd gateway");
    let body: serde_json::Value = resp.json().await.expect("etcd answer");
    assert_eq!(body["deleted"], "1", "etcd deleted nothing: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_deleted_despite_our_finalizer_has_its_entry_released() {
    let env = Env::new(&[], &[]).await;
    env.create(&env.mapping("a", "192.0.2.61", "aws", "us-east-1"))
        .await;
    env.create(&env.mapping("b", "192.0.2.62", "aws", "us-east-1"))
        .await;
    env.wait_ready("a").await;
    env.wait_ready("b").await;
    vanish_under_finalizer(&env, "a").await;
    let released = "rid of a's entry (a is gone and its entry recorded nowhere)";
    let within = Duration::from_secs(15);
    env.wait_remote_within(&env.zone, released, within, |r| r.keys().eq(["192.0.2.62"]))
        .await;
    // A normal deletion looks the same in the watch (the last stored state still lists our
    // finalizer): it must not be taken for the race and cost a second delete.
    env.delete("b").await;
    env.wait_gone("b").await;
    env.wait_remote_within(&env.zone, "rid of b's entry", within, |r| r.is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deletes = env.sim.op_total("batch_delete").await + env.sim.op_total("delete").await;
    assert_eq!(deletes, 2, "one delete for each entry, nothing repeated");
    let log = env.op().log();
    assert_eq!(
        log.matches("apiserver race").count(),
        1,
        "only a was deleted despite our finalizer:\n{log}"
    );
}
