//! The Gateway source switched on in a cluster without the Gateway API CRDs: the Service
//! source still works and nothing is deleted for want of Gateways. Its own test binary, so its
//! control plane never has those CRDs (tests/sources.rs installs them).

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use support::e2e::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_source_runs_while_gateways_cannot_be_watched() {
    let mut env = Env::new(&[], &["--source", "service,gateway"]).await;
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/region": "us-west-2"}},
        "spec": {"providerID": "aws:///us-west-2a/i-0abc"},
    }))
    .unwrap();
    Api::<Node>::all(env.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"originregions.io/zone": env.zone}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}}),
            ),
        )
        .await
        .expect("patch status");
    let m = env.wait_ready("svc-web-203-0-113-5").await;
    assert_eq!(m.spec.region, "us-west-2");
    let log = env.op().log();
    assert!(
        log.contains("Gateway API CRDs"),
        "the log does not say why:\n{log}"
    );
    env.op_mut().terminate(Duration::from_secs(10));
    env.op().assert_no_panic();
}
