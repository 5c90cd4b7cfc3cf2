//! Ownership when the operator's cache lags: the operator reaches the apiserver through a
//! proxy that delivers every watch event two seconds late (requests are answered at once),
//! so it plans from copies that other clients have already changed and sees its own writes
//! late. Nothing it writes may end up recorded nowhere.
//!
//! This is the chaos suite's rare orphan made certain: an IP edit followed quickly by a
//! delete. The operator planned the edit from the copy before the delete and wrote the new
//! entry; the next reconcile saw the deletion (a version newer than its read, older than its
//! writes) before its own writes, released only the old entry and removed the finalizer. The
//! new entry was then recorded nowhere; it stayed for good when the watch re-listed (after an
//! apiserver restart) before replaying the object's late versions.

mod support;

use std::time::Duration;

use support::e2e::Env;
use support::lagging::LaggingWatch;
use support::operator::Operator;

const LAG: Duration = Duration::from_secs(2);

async fn env_with_lag() -> (Env, LaggingWatch) {
    let mut env = Env::without_operator(&[]).await;
    let proxy = LaggingWatch::start(env.cp.server_url(), env.cp.admin_token(), LAG).await;
    env.op = Some(Operator::start(&proxy.kubeconfig_path(), &env.base_args()));
    (env, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_edit_then_a_delete_seen_late_orphan_nothing() {
    let (env, _proxy) = env_with_lag().await;
    let names = ["a", "b", "c"];
    for (i, name) in names.iter().enumerate() {
        let ip = format!("192.0.2.{}", 10 + i);
        env.create(&env.mapping(name, &ip, "aws", "us-east-1"))
            .await;
    }
    for name in names {
        env.wait_ready(name).await;
    }

    // Each object: its IP edited, then deleted 300 ms later, long before the operator sees
    // either (2 s), so it plans the edit from a copy that is already deleting.
    for (i, name) in names.iter().enumerate() {
        let ip = format!("192.0.2.{}", 110 + i);
        env.patch_spec(name, serde_json::json!({"originIp": ip}))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.delete(name).await;
    }
    // The moment an object is gone, nothing it wrote may remain: from then on nothing records
    // it. (A cache replaying the object's late versions may still clean up after the fact; one
    // that re-lists first, after an apiserver restart say, never will.)
    for (i, name) in names.iter().enumerate() {
        env.wait_gone(name).await;
        let remote = env.remote(&env.zone).await;
        for ip in [
            format!("192.0.2.{}", 10 + i),
            format!("192.0.2.{}", 110 + i),
        ] {
            assert!(
                !remote.contains_key(&ip),
                "{name} is gone but its entry {ip} is still in the zone, recorded nowhere: \
                 {remote:?}"
            );
        }
    }
    // Writes the operator may still make from what it saw late are over after a few lags.
    tokio::time::sleep(LAG * 3).await;
    let remote = env.remote(&env.zone).await;
    assert!(
        remote.is_empty(),
        "entries left that no object records: {remote:?}"
    );
    let log = env.op().log();
    assert!(
        log.contains("the object changed since it was read"),
        "the race was not exercised (no write was refused as stale):\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_and_ip_edits_seen_late_converge_exactly() {
    let (env, _proxy) = env_with_lag().await;
    env.create(&env.mapping("m", "192.0.2.20", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;

    // Three quick edits: each reconcile plans from a copy one or two edits behind.
    env.patch_spec("m", serde_json::json!({"region": "us-west-2"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.patch_spec("m", serde_json::json!({"originIp": "192.0.2.21"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.patch_spec("m", serde_json::json!({"originIp": "192.0.2.22"}))
        .await;
    let o = env.wait_ready("m").await;
    assert_eq!(
        o.status.as_ref().and_then(|s| s.origin_ip.as_deref()),
        Some("192.0.2.22")
    );
    let want: std::collections::BTreeMap<String, (String, String)> = [(
        "192.0.2.22".to_string(),
        ("aws".to_string(), "us-west-2".to_string()),
    )]
    .into_iter()
    .collect();
    env.wait_remote(&env.zone, "exactly the last edit", |r| *r == want)
        .await;

    env.delete("m").await;
    env.wait_gone("m").await;
    tokio::time::sleep(LAG * 3).await;
    let remote = env.remote(&env.zone).await;
    assert!(remote.is_empty(), "left behind: {remote:?}");
}
