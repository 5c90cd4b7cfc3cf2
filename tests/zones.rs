//! Zones as governed resources, end to end on the real control plane: a tenant with rights
//! only on mappings in its namespace, CloudflareZones written by the cluster admin, and the
//! simulator. Adoption policy, namespace admission, the Secret opt-in, one writer per zone, and
//! the zone's own status.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use origin_region_operator::crd::{OriginCloudRegionMapping, SecretReference};
use origin_region_operator::wire::MappingInput;
use origin_region_operator::zone::{AdoptionPolicy, CloudflareZone, CloudflareZoneSpec};
use serde_json::json;
use support::e2e::Env;
use support::operator::Operator;

/// The operator in governed mode (the default): the base arguments without
/// `--allow-undeclared-zones`, with the zones' Secrets in the test namespace.
fn governed_args(env: &Env, instance: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = env
        .base_args()
        .into_iter()
        .filter(|a| a != "--allow-undeclared-zones")
        .collect();
    args.extend(
        ["--operator-namespace", &env.ns, "--instance-name", instance]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start_governed(env: &mut Env, extra: &[&str]) {
    let args = governed_args(env, &format!("{}/test", env.ns), extra);
    env.op = Some(Operator::start(env.cp.kubeconfig_path(), &args));
}

/// Declares the test's zone as the cluster admin.
async fn declare(
    env: &Env,
    namespaces: &[&str],
    adoption: AdoptionPolicy,
    allow_ns_creds: bool,
) -> CloudflareZone {
    let api: Api<CloudflareZone> = Api::all(env.client.clone());
    let mut z = CloudflareZone::new(
        &format!("z-{}", &env.zone[..12]),
        CloudflareZoneSpec {
            zone_id: env.zone.clone(),
            credentials_secret_ref: Some(SecretReference {
                name: support::e2e::SECRET.into(),
            }),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            namespace_selector: None,
            adoption,
            allow_namespace_credentials: allow_ns_creds,
        },
    );
    z.metadata.labels = None;
    api.create(&PostParams::default(), &z)
        .await
        .expect("create CloudflareZone")
}

async fn zone_of(env: &Env) -> CloudflareZone {
    let api: Api<CloudflareZone> = Api::all(env.client.clone());
    api.get(&format!("z-{}", &env.zone[..12]))
        .await
        .expect("get zone")
}

async fn wait_zone(
    env: &Env,
    what: &str,
    pred: impl Fn(&CloudflareZone) -> bool,
) -> CloudflareZone {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let z = zone_of(env).await;
        if pred(&z) {
            return z;
        }
        assert!(
            Instant::now() < deadline,
            "zone not {what}: {:#?}",
            z.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client acting as a tenant: full rights on mappings of `ns`, nothing else (no Secrets).
async fn tenant(env: &Env) -> Api<OriginCloudRegionMapping> {
    let rbac = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: tenant, namespace: {ns}}}
rules:
- apiGroups: [originregions.io]
  resources: [origincloudregionmappings]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tenant, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"#,
        ns = env.ns,
        user = testbed::UNPRIVILEGED_USER
    );
    env.cp
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&rbac))
        .await
        .expect("tenant RBAC");
    Api::namespaced(env.cp.unprivileged_client(), &env.ns)
}

async fn tenant_create(api: &Api<OriginCloudRegionMapping>, o: &OriginCloudRegionMapping) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // RBAC bindings take a moment to reach the authorizer.
        match api.create(&PostParams::default(), o).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("tenant create: {e}"),
        }
    }
}

fn writes(stats: &serde_json::Value) -> u64 {
    ["put", "batch_put", "delete", "batch_delete"]
        .iter()
        .map(|op| stats["operations"][op]["total"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_entry_is_refused_under_never_and_taken_under_adopt() {
    let mut env = Env::without_operator(&[]).await;
    let seeded = MappingInput {
        origin_ip: "192.0.2.10".into(),
        vendor: "aws".into(),
        region: "us-west-2".into(),
    };
    env.sim.seed_zone(&env.zone, &[seeded]).await;
    declare(&env, &[&env.ns], AdoptionPolicy::Never, false).await;
    start_governed(&mut env, &[]);
    let tenant = tenant(&env).await;
    tenant_create(
        &tenant,
        &env.mapping("squat", "192.0.2.10", "aws", "us-east-1"),
    )
    .await;
    let o = env.wait_reason("squat", "AdoptionRefused").await;
    assert!(o
        .ready_condition()
        .unwrap()
        .message
        .contains("spec.adoption"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        writes(&env.sim.stats().await),
        0,
        "no write for an unmanaged entry"
    );
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.10"],
        ("aws".into(), "us-west-2".into())
    );
    // Its delete leaves the unmanaged entry alone (it never owned it).
    env.delete("squat").await;
    env.wait_gone("squat").await;
    assert!(env.remote(&env.zone).await.contains_key("192.0.2.10"));

    // The admin allows adoption: a new mapping takes the entry over.
    let api: Api<CloudflareZone> = Api::all(env.client.clone());
    api.patch(
        &zone_of(&env).await.metadata.name.unwrap(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"adoption": "Adopt"}})),
    )
    .await
    .expect("allow adoption");
    tenant_create(
        &tenant,
        &env.mapping("owner", "192.0.2.10", "aws", "us-east-1"),
    )
    .await;
    env.wait_ready("owner").await;
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.10"],
        ("aws".into(), "us-east-1".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_zones_and_unadmitted_namespaces_get_a_reason_and_no_call() {
    let mut env = Env::without_operator(&[]).await;
    start_governed(&mut env, &[]);
    env.create(&env.mapping("early", "192.0.2.20", "aws", "us-east-1"))
        .await;
    let o = env.wait_reason("early", "ZoneNotDeclared").await;
    assert!(o
        .ready_condition()
        .unwrap()
        .message
        .contains("CloudflareZone"));
    // Declared, but for another namespace only.
    declare(&env, &["someone-else"], AdoptionPolicy::Never, false).await;
    let o = env.wait_reason("early", "NamespaceNotAdmitted").await;
    let msg = &o.ready_condition().unwrap().message;
    assert!(
        msg.contains(&env.ns) && msg.contains("someone-else"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.sim.requests_total().await,
        0,
        "no Cloudflare call at all"
    );
    // Admitted by label.
    let api: Api<CloudflareZone> = Api::all(env.client.clone());
    api.patch(
        &zone_of(&env).await.metadata.name.unwrap(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"namespaceSelector": {"matchLabels": {"cdn": "on"}}}})),
    )
    .await
    .expect("selector");
    env.cp
        .kubectl(&["label", "namespace", &env.ns, "cdn=on"])
        .await
        .expect("label namespace");
    env.wait_ready("early").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_borrow_a_secret_by_name() {
    let mut env = Env::without_operator(&[]).await;
    declare(&env, &[&env.ns], AdoptionPolicy::Never, false).await;
    start_governed(&mut env, &[]);
    env.put_secret("team-token", &[("apiToken", "dev-token")])
        .await;
    let tenant = tenant(&env).await;
    let mut m = env.mapping("m", "192.0.2.30", "aws", "us-east-1");
    m.spec.credentials_secret_ref = Some(SecretReference {
        name: "team-token".into(),
    });
    tenant_create(&tenant, &m).await;
    env.wait_reason("m", "NamespaceCredentialsNotAllowed").await;
    let api: Api<CloudflareZone> = Api::all(env.client.clone());
    api.patch(
        &zone_of(&env).await.metadata.name.unwrap(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"allowNamespaceCredentials": true}})),
    )
    .await
    .expect("allow namespace credentials");
    // Allowed by the zone, but the Secret's owner has not opted in.
    let o = env.wait_reason("m", "SecretNotOptedIn").await;
    assert!(o
        .ready_condition()
        .unwrap()
        .message
        .contains("originregions.io/credentials=true"));
    assert_eq!(writes(&env.sim.stats().await), 0);
    env.cp
        .kubectl(&[
            "-n",
            &env.ns,
            "label",
            "secret",
            "team-token",
            "originregions.io/credentials=true",
        ])
        .await
        .expect("opt in");
    env.wait_ready("m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_on_one_zone_do_not_fight() {
    let mut env = Env::without_operator(&[]).await;
    let other_ns = env.cp.create_namespace("e2e-b").await.expect("namespace");
    declare(&env, &[&env.ns, &other_ns], AdoptionPolicy::Never, false).await;
    start_governed(&mut env, &[]);
    let first = format!("{}/test", env.ns);
    env.create(&env.mapping("a", "192.0.2.40", "aws", "us-east-1"))
        .await;
    env.wait_ready("a").await;
    let z = wait_zone(&env, "claimed", |z| {
        z.status.as_ref().and_then(|s| s.writer.as_deref()) == Some(first.as_str())
    })
    .await;
    assert!(z.status.unwrap().writer_renewed.is_some());

    // A second installation watching another namespace, with a mapping for the same IP.
    let mut args: Vec<String> = governed_args(&env, "second/install", &[]);
    let ns_at = args.iter().position(|a| a == "--namespace").unwrap() + 1;
    args[ns_at] = other_ns.clone();
    let second = Operator::start(env.cp.kubeconfig_path(), &args);
    let other: Api<OriginCloudRegionMapping> = Api::namespaced(env.client.clone(), &other_ns);
    other
        .create(
            &PostParams::default(),
            &env.mapping("b", "192.0.2.40", "aws", "us-west-2"),
        )
        .await
        .expect("create b");
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = loop {
        let b = other.get("b").await.unwrap();
        if b.ready_condition()
            .is_some_and(|c| c.reason == "OtherWriter")
        {
            break b;
        }
        assert!(Instant::now() < deadline, "b: {:?}", b.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(b.ready_condition().unwrap().message.contains(&first));
    env.sim.clear_stats().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(writes(&env.sim.stats().await), 0, "no competing writes");
    assert_eq!(
        env.remote(&env.zone).await["192.0.2.40"],
        ("aws".into(), "us-east-1".into())
    );
    assert_eq!(
        zone_of(&env).await.status.unwrap().writer.as_deref(),
        Some(first.as_str())
    );
    second.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zone_reports_catalog_headroom_and_revoked_credentials() {
    let mut env = Env::without_operator(&[]).await;
    let unmanaged = MappingInput {
        origin_ip: "192.0.2.59".into(),
        vendor: "aws".into(),
        region: "us-east-1".into(),
    };
    env.sim.seed_zone(&env.zone, &[unmanaged]).await;
    declare(&env, &[&env.ns], AdoptionPolicy::Never, false).await;
    start_governed(&mut env, &["--resync-interval", "2s"]);
    env.create(&env.mapping("m", "192.0.2.50", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    let z = wait_zone(&env, "counted", |z| {
        z.status.as_ref().is_some_and(|s| s.managed == Some(1))
    })
    .await;
    let s = z.status.unwrap();
    assert_eq!(s.unmanaged, Some(1));
    assert_eq!(s.limit, Some(3500));
    assert_eq!(s.headroom, Some(3498));
    assert!(s.last_full_read.is_some());
    let catalog = s.supported_regions.expect("catalog in status");
    assert!(
        catalog["aws"].contains(&"us-east-1".to_string()),
        "{catalog:?}"
    );
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");

    // The zone's token is revoked.
    env.sim
        .set_auth(json!({"tokens": ["some-other-token"]}))
        .await;
    let z = wait_zone(&env, "Ready=False", |z| {
        z.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
        })
    })
    .await;
    let c = z
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(c.reason, "CredentialsRefused", "{}", c.message);
}

/// A GitOps replace (delete, then create again) of the owner in one namespace does not hand
/// the entry to an older conflicting object of another namespace. Its own control plane: the
/// operator here watches every namespace, as the chart's default does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_owner_keeps_its_ip_against_another_namespace() {
    let cp = testbed::ControlPlane::start()
        .await
        .expect("a private control plane");
    support::e2e::apply_crd(&cp).await;
    let client = cp.client();
    let team_a = cp.create_namespace("team-a").await.unwrap();
    let team_b = cp.create_namespace("team-b").await.unwrap();
    let ops = cp.create_namespace("ops").await.unwrap();
    let sim = support::sim::Sim::start(&[]);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "cf"},
        "stringData": {"apiToken": "dev-token"}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ops)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let zone_id = support::e2e::random_zone();
    let zones: Api<CloudflareZone> = Api::all(client.clone());
    let z = CloudflareZone::new(
        "shared",
        CloudflareZoneSpec {
            zone_id: zone_id.clone(),
            credentials_secret_ref: Some(SecretReference { name: "cf".into() }),
            namespaces: vec![team_a.clone(), team_b.clone()],
            namespace_selector: None,
            adoption: AdoptionPolicy::Never,
            allow_namespace_credentials: false,
        },
    );
    zones.create(&PostParams::default(), &z).await.unwrap();
    let args: Vec<String> = [
        "--cloudflare-api-url",
        &sim.base_url(),
        "--operator-namespace",
        &ops,
        "--instance-name",
        "ops/test",
        "--debounce",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let op = Operator::start(cp.kubeconfig_path(), &args);
    let mapping = |name: &str, region: &str| {
        OriginCloudRegionMapping::new(
            name,
            origin_region_operator::crd::OriginCloudRegionMappingSpec {
                zone_id: zone_id.clone(),
                origin_ip: "192.0.2.77".into(),
                vendor: "aws".into(),
                region: region.into(),
                credentials_secret_ref: None,
                deletion_policy: Default::default(),
            },
        )
    };
    let a: Api<OriginCloudRegionMapping> = Api::namespaced(client.clone(), &team_a);
    let b: Api<OriginCloudRegionMapping> = Api::namespaced(client.clone(), &team_b);
    let reason = |api: Api<OriginCloudRegionMapping>, name: &'static str, want: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = api.get_opt(name).await.unwrap();
            let got = o
                .as_ref()
                .and_then(|o| o.ready_condition())
                .map(|c| c.reason.clone());
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: {got:?}, want {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    b.create(&PostParams::default(), &mapping("web", "us-east-1"))
        .await
        .unwrap();
    reason(b.clone(), "web", "Synced").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // team-a's newer object for the same IP loses; then team-b's owner is replaced.
    a.create(&PostParams::default(), &mapping("squat", "us-west-2"))
        .await
        .unwrap();
    reason(a.clone(), "squat", "Conflict").await;
    b.delete("web", &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.get_opt("web").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "web never went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.create(&PostParams::default(), &mapping("web", "us-east-1"))
        .await
        .unwrap();
    reason(b.clone(), "web", "Synced").await;
    reason(a.clone(), "squat", "Conflict").await;
    let remote: Vec<(String, String)> = sim
        .dump_zone(&zone_id)
        .await
        .into_iter()
        .map(|m| (m.origin_ip, m.region))
        .collect();
    assert_eq!(
        remote,
        [("192.0.2.77".to_string(), "us-east-1".to_string())]
    );
    op.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_without_tiered_cache_is_not_ready() {
    let mut env = Env::without_operator(&[]).await;
    env.sim.set_tiered_cache(&env.zone, false).await;
    declare(&env, &[&env.ns], AdoptionPolicy::Never, false).await;
    start_governed(&mut env, &[]);
    // Cloudflare still validates each write itself, so the mapping is applied.
    env.create(&env.mapping("m", "192.0.2.60", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    let z = wait_zone(&env, "Ready=False", |z| {
        z.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
        })
    })
    .await;
    let s = z.status.unwrap();
    let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(c.reason, "CatalogUnavailable", "{}", c.message);
    assert!(c.message.contains("Tiered Cache"), "{}", c.message);
    assert_eq!(s.supported_regions, None, "no catalog to report");
    assert_eq!(s.managed, Some(1));
}
