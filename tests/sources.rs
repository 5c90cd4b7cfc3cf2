//! Mappings from workloads, end to end on the real control plane: Nodes created through the
//! API say where the cluster runs, LoadBalancer Services and Gateways get their addresses by
//! a status patch (no cloud needed), a DNS server on loopback answers for hostname load
//! balancers, and the simulator shows what reached Cloudflare.
//!
//! Nodes are cluster-wide, so the tests here take turns (one lock) and each sets the Nodes it
//! needs.

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use origin_region_operator::crd::SecretReference;
use origin_region_operator::zone::{AdoptionPolicy, CloudflareZone, CloudflareZoneSpec};
use serde_json::json;
use support::e2e::Env;

static NODES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Replaces every Node with `nodes`: (name, providerID, region label).
async fn set_nodes(env: &Env, nodes: &[(&str, &str, &str)]) {
    let api: Api<Node> = Api::all(env.client.clone());
    // A Node's providerID cannot change: start from none.
    for n in api.list(&ListParams::default()).await.expect("list nodes") {
        let name = n.metadata.name.unwrap_or_default();
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    for (name, provider_id, region) in nodes {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": region}},
            "spec": {"providerID": provider_id},
        }))
        .unwrap();
        api.patch(
            name,
            &PatchParams::apply("sources-test").force(),
            &Patch::Apply(&node),
        )
        .await
        .expect("apply node");
    }
}

fn services(env: &Env) -> Api<Service> {
    Api::namespaced(env.client.clone(), &env.ns)
}

/// Creates a LoadBalancer Service with `annotations`.
async fn create_service(env: &Env, name: &str, annotations: serde_json::Value) {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}], "selector": {"app": name}},
    }))
    .unwrap();
    services(env)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

/// Sets the Service's load-balancer ingress as a cloud controller would.
async fn set_ingress(env: &Env, name: &str, ingress: serde_json::Value) {
    services(env)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
        )
        .await
        .expect("patch service status");
}

async fn annotate_service(env: &Env, name: &str, annotations: serde_json::Value) {
    services(env)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .expect("annotate service");
}

/// Names of the mappings generated in the test's namespace.
async fn generated(env: &Env) -> Vec<String> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=origin-region-operator");
    let mut names: Vec<String> = env
        .api()
        .list(&lp)
        .await
        .expect("list mappings")
        .items
        .into_iter()
        .map(|m| m.metadata.name.unwrap_or_default())
        .collect();
    names.sort();
    names
}

async fn wait_generated(env: &Env, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = generated(env).await;
        if names == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generated mappings {names:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Events recorded for a workload of any kind: (reason, note).
async fn events_of(env: &Env, kind: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name) && r.kind.as_deref() == Some(kind))
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn wait_workload_event(env: &Env, kind: &str, name: &str, reason: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = events_of(env, kind, name).await;
        if let Some((_, note)) = events.iter().find(|(r, _)| r == reason) {
            return note.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name}: no {reason} event; saw {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn remote_of(pairs: &[(&str, &str, &str)]) -> std::collections::BTreeMap<String, (String, String)> {
    pairs
        .iter()
        .map(|(ip, v, r)| (ip.to_string(), (v.to_string(), r.to_string())))
        .collect()
}

async fn start(sources: &str, extra: &[&str]) -> Env {
    let mut args = vec!["--source", sources];
    args.extend_from_slice(extra);
    Env::new(&[], &args).await
}

#[tokio::test]
async fn a_load_balancer_service_follows_its_addresses_and_goes_with_its_annotation() {
    let _nodes = NODES.lock().await;
    let mut env = start("service", &[]).await;
    set_nodes(
        &env,
        &[
            ("node-a", "aws:///us-east-1a/i-0abc", "us-east-1"),
            ("node-b", "aws:///us-east-1b/i-0def", "us-east-1"),
        ],
    )
    .await;
    let zone = env.zone.clone();
    create_service(&env, "web", json!({"originregions.io/zone": zone})).await;
    // No address yet: nothing generated.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(generated(&env).await.is_empty());

    env.sim.clear_stats().await;
    let t0 = Instant::now();
    set_ingress(&env, "web", json!([{"ip": "203.0.113.7"}])).await;
    env.wait_remote(&zone, "holding the Service's IP", |r| {
        *r == remote_of(&[("203.0.113.7", "aws", "us-east-1")])
    })
    .await;
    let latency = t0.elapsed();
    let calls = env.sim.requests_total().await;
    println!("status change to remote entry: {latency:?}, {calls} Cloudflare calls");
    let m = env.wait_ready("svc-web-203-0-113-7").await;
    assert_eq!(m.spec.vendor, "aws");
    assert_eq!(m.spec.region, "us-east-1");
    let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );
    wait_workload_event(&env, "Service", "web", "MappingCreated").await;

    // The load balancer is recreated with a new address: the old entry goes.
    set_ingress(&env, "web", json!([{"ip": "203.0.113.8"}])).await;
    env.wait_remote(&zone, "moved to the new IP", |r| {
        *r == remote_of(&[("203.0.113.8", "aws", "us-east-1")])
    })
    .await;
    wait_generated(&env, &["svc-web-203-0-113-8"]).await;

    // A second address: a second mapping.
    set_ingress(
        &env,
        "web",
        json!([{"ip": "203.0.113.8"}, {"ip": "2001:db8::7"}]),
    )
    .await;
    env.wait_ready("svc-web-2001-db8--7").await;
    env.wait_remote(&zone, "holding both IPs", |r| r.len() == 2)
        .await;

    // The annotation removed: the mappings and their entries go.
    annotate_service(&env, "web", json!({"originregions.io/zone": null})).await;
    wait_generated(&env, &[]).await;
    env.wait_remote(&zone, "empty", |r| r.is_empty()).await;

    // Annotated again, then the Service deleted: the same.
    annotate_service(&env, "web", json!({"originregions.io/zone": zone})).await;
    env.wait_remote(&zone, "holding both IPs again", |r| r.len() == 2)
        .await;
    services(&env)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    wait_generated(&env, &[]).await;
    env.wait_remote(&zone, "empty after the Service went", |r| r.is_empty())
        .await;
    env.op_mut().terminate(Duration::from_secs(10));
    env.op().assert_no_panic();
}

#[tokio::test]
async fn nodes_in_several_regions_need_the_override_and_the_override_wins() {
    let _nodes = NODES.lock().await;
    let mut env = start("service", &[]).await;
    set_nodes(
        &env,
        &[
            ("node-a", "aws:///us-east-1a/i-1", "us-east-1"),
            ("node-b", "aws:///eu-west-1a/i-2", "eu-west-1"),
        ],
    )
    .await;
    let zone = env.zone.clone();
    create_service(&env, "api", json!({"originregions.io/zone": zone})).await;
    set_ingress(&env, "api", json!([{"ip": "198.51.100.20"}])).await;
    let note = wait_workload_event(&env, "Service", "api", "PlacementAmbiguous").await;
    assert!(note.contains("eu-west-1, us-east-1"), "{note}");
    assert!(note.contains("originregions.io/region"), "{note}");
    assert!(generated(&env).await.is_empty());
    assert!(env.remote(&zone).await.is_empty());
    let writes = env.sim.op_total("put").await + env.sim.op_total("batch_put").await;
    assert_eq!(writes, 0);

    annotate_service(&env, "api", json!({"originregions.io/region": "eu-west-1"})).await;
    env.wait_remote(&zone, "mapped to the override", |r| {
        *r == remote_of(&[("198.51.100.20", "aws", "eu-west-1")])
    })
    .await;
    // Both overrides: another vendor entirely.
    annotate_service(
        &env,
        "api",
        json!({"originregions.io/vendor": "gcp", "originregions.io/region": "us-central1"}),
    )
    .await;
    env.wait_remote(&zone, "moved to gcp", |r| {
        *r == remote_of(&[("198.51.100.20", "gcp", "us-central1")])
    })
    .await;
    // A region the catalog lacks: the mapping says so and the Service hears it; the entry
    // stays as last applied.
    annotate_service(
        &env,
        "api",
        json!({"originregions.io/region": "us-central9"}),
    )
    .await;
    let note = wait_workload_event(&env, "Service", "api", "RegionNotSupported").await;
    assert!(note.contains("us-central9"), "{note}");
    assert_eq!(
        env.remote(&zone).await,
        remote_of(&[("198.51.100.20", "gcp", "us-central1")])
    );
    env.op_mut().terminate(Duration::from_secs(10));
    env.op().assert_no_panic();
}

#[tokio::test]
async fn a_generated_mapping_never_overwrites_a_hand_written_one() {
    let _nodes = NODES.lock().await;
    let mut env = start("service", &[]).await;
    set_nodes(&env, &[("node-a", "aws:///us-east-1a/i-1", "us-east-1")]).await;
    let zone = env.zone.clone();
    env.create(&env.mapping("hand", "203.0.113.50", "aws", "us-west-2"))
        .await;
    env.wait_ready("hand").await;
    create_service(&env, "shop", json!({"originregions.io/zone": zone})).await;
    set_ingress(&env, "shop", json!([{"ip": "203.0.113.50"}])).await;
    let m = env.wait_reason("svc-shop-203-0-113-50", "Conflict").await;
    assert!(m.ready_condition().unwrap().message.contains("hand"));
    let note = wait_workload_event(&env, "Service", "shop", "Conflict").await;
    assert!(note.contains("svc-shop-203-0-113-50"), "{note}");
    assert_eq!(
        env.remote(&zone).await,
        remote_of(&[("203.0.113.50", "aws", "us-west-2")])
    );

    // A hand-written mapping that already has the derived name is left alone.
    env.create(&env.mapping("svc-shop-203-0-113-51", "203.0.113.99", "aws", "us-west-2"))
        .await;
    set_ingress(
        &env,
        "shop",
        json!([{"ip": "203.0.113.50"}, {"ip": "203.0.113.51"}]),
    )
    .await;
    let note = wait_workload_event(&env, "Service", "shop", "NameTaken").await;
    assert!(note.contains("svc-shop-203-0-113-51"), "{note}");
    let hand = env.api().get("svc-shop-203-0-113-51").await.unwrap();
    assert_eq!(hand.spec.origin_ip, "203.0.113.99");
    assert!(!hand.is_generated());
    env.op_mut().terminate(Duration::from_secs(10));
    env.op().assert_no_panic();
}

/// A DNS server on loopback: A records from a table the test changes, TTL 1 s.
struct Dns {
    addr: SocketAddr,
    table: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    async fn start() -> Dns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let table: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let t = table.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true)
                    .set_authoritative(true);
                let mut known = false;
                for q in query.queries() {
                    reply.add_query(q.clone());
                    let name = q.name().to_ascii().trim_end_matches('.').to_string();
                    let addrs = t.lock().unwrap().get(&name).cloned();
                    if let Some(addrs) = addrs {
                        known = true;
                        if q.query_type() == RecordType::A {
                            for a in addrs {
                                reply.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    1,
                                    RData::A(A(a)),
                                ));
                            }
                        }
                    }
                }
                reply.set_response_code(if known {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                });
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Dns { addr, table, task }
    }

    fn set(&self, name: &str, addrs: &[&str]) {
        self.table.lock().unwrap().insert(
            name.to_string(),
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        );
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_hostname_load_balancer_is_resolved_and_re_resolved_on_its_ttl() {
    let _nodes = NODES.lock().await;
    let dns = Dns::start().await;
    dns.set("elb-1.example.test", &["192.0.2.10", "192.0.2.11"]);
    let server = dns.addr.to_string();
    let mut env = start("service", &["--source-dns-server", &server]).await;
    set_nodes(&env, &[("node-a", "aws:///us-west-2a/i-1", "us-west-2")]).await;
    let zone = env.zone.clone();
    create_service(&env, "edge", json!({"originregions.io/zone": zone})).await;
    set_ingress(&env, "edge", json!([{"hostname": "elb-1.example.test"}])).await;
    env.wait_remote(&zone, "holding both resolved addresses", |r| {
        *r == remote_of(&[
            ("192.0.2.10", "aws", "us-west-2"),
            ("192.0.2.11", "aws", "us-west-2"),
        ])
    })
    .await;
    wait_generated(&env, &["svc-edge-192-0-2-10", "svc-edge-192-0-2-11"]).await;

    // The record changes: within its TTL (+ the minimum the operator keeps an answer) the
    // mapping moves, with no change to the Service at all.
    let t0 = Instant::now();
    dns.set("elb-1.example.test", &["192.0.2.12"]);
    env.wait_remote(&zone, "moved with the record", |r| {
        *r == remote_of(&[("192.0.2.12", "aws", "us-west-2")])
    })
    .await;
    println!("DNS change to remote entry: {:?}", t0.elapsed());

    // The name stops resolving: the mapping is kept (a resolver outage is not a lost address)
    // and the Service is told.
    dns.table.lock().unwrap().clear();
    let note = wait_workload_event(&env, "Service", "edge", "HostnameUnresolved").await;
    assert!(note.contains("elb-1.example.test"), "{note}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.remote(&zone).await,
        remote_of(&[("192.0.2.12", "aws", "us-west-2")])
    );
    wait_generated(&env, &["svc-edge-192-0-2-12"]).await;
    env.op_mut().terminate(Duration::from_secs(10));
    env.op().assert_no_panic();
}

/// Applies the Gateway API's standard CRDs at a pinned version, fetched through the Go module
/// proxy (the same place the project's other Go tools come from).
async fn install_gateway_api(cp: &testbed::ControlPlane) {
    const VERSION: &str = "v1.3.0";
    let out = std::process::Command::new("go")
        .args([
            "mod",
            "download",
            "-json",
            &format!("sigs.k8s.io/gateway-api@{VERSION}"),
        ])
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run go mod download");
    assert!(
        out.status.success(),
        "go mod download gateway-api: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = std::path::Path::new(info["Dir"].as_str().unwrap()).join("config/crd/standard");
    for file in [
        "gateway.networking.k8s.io_gatewayclasses.yaml",
        "gateway.networking.k8s.io_gateways.yaml",
    ] {
        cp.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            dir.join(file).to_str().unwrap(),
        ])
        .await
        .expect("apply Gateway API CRD");
    }
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/gateways.gateway.networking.k8s.io",
        "--timeout=60s",
    ])
    .await
    .expect("Gateway CRD established");
}

#[tokio::test]
async fn a_gateway_with_a_zone_named_by_its_cloudflare_zone() {
    let _nodes = NODES.lock().await;
    install_gateway_api(testbed::shared().await).await;
    let mut env = start("service,gateway", &[]).await;
    set_nodes(&env, &[("node-a", "ocid1.instance.oc1.iad.abc", "iad")]).await;
    let zone = env.zone.clone();
    let zone_name = format!("gw-{}", &zone[..12]);
    let zones: Api<CloudflareZone> = Api::all(env.client.clone());
    zones
        .create(
            &PostParams::default(),
            &CloudflareZone::new(
                &zone_name,
                CloudflareZoneSpec {
                    zone_id: zone.clone(),
                    credentials_secret_ref: Some(SecretReference {
                        name: support::e2e::SECRET.into(),
                    }),
                    namespaces: vec![env.ns.clone()],
                    namespace_selector: None,
                    adoption: AdoptionPolicy::Never,
                    allow_namespace_credentials: false,
                },
            ),
        )
        .await
        .expect("create CloudflareZone");
    let gateways = Api::<kube::api::DynamicObject>::namespaced_with(
        env.client.clone(),
        &env.ns,
        &origin_region_operator::source_controller::gateway_resource(),
    );
    let gw: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "public", "annotations": {"originregions.io/zone": zone_name}},
        "spec": {"gatewayClassName": "example", "listeners": [
            {"name": "https", "protocol": "HTTPS", "port": 443,
             "tls": {"certificateRefs": [{"name": "cert"}]}}
        ]},
    }))
    .unwrap();
    gateways
        .create(&PostParams::default(), &gw)
        .await
        .expect("create Gateway");
    gateways
        .patch_status(
            "public",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addresses": [
                {"type": "IPAddress", "value": "198.51.100.9"}
            ]}})),
        )
        .await
        .expect("patch Gateway status");
    env.wait_remote(&zone, "holding the Gateway's address", |r| {
        *r == remote_of(&[("198.51.100.9", "oci", "us-ashburn-1")])
    })
    .await;
    let m = env.wait_ready("gw-public-198-51-100-9").await;
    let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.api_version, "gateway.networking.k8s.io/v1");
    wait_workload_event(&env, "Gateway", "public", "MappingCreated").await;

    gateways
        .delete("public", &DeleteParams::default())
        .await
        .expect("delete Gateway");
    wait_generated(&env, &[]).await;
    env.wait_remote(&zone, "empty after the Gateway went", |r| r.is_empty())
        .await;
    let _ = zones.delete(&zone_name, &DeleteParams::default()).await;
    env.op_mut().terminate(Duration::from_secs(10));
    env.op().assert_no_panic();
}
