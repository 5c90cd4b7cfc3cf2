//! One isolated end-to-end environment per test: the binary's shared real control plane, a
//! fresh namespace, its own simulator, credentials Secret and operator process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use origin_region_operator::crd::{OriginCloudRegionMapping, OriginCloudRegionMappingSpec};
use serde_json::json;
use testbed::ControlPlane;

use super::operator::Operator;
use super::sim::Sim;

static CRD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Name of the Secret every environment creates with the simulator's token.
pub const SECRET: &str = "cf-credentials";

/// A test's world.
pub struct Env {
    /// The control plane (shared by the tests of one binary).
    pub cp: &'static ControlPlane,
    /// This test's namespace.
    pub ns: String,
    /// This test's zone.
    pub zone: String,
    /// This test's simulator.
    pub sim: Sim,
    /// This test's operator, when started.
    pub op: Option<Operator>,
    /// Admin client.
    pub client: kube::Client,
}

/// A random zone identifier.
pub fn random_zone() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Installs the CRD once per test binary (on the shared control plane) and waits until it is
/// served.
pub async fn install_crd(cp: &ControlPlane) {
    CRD.get_or_init(|| apply_crd(cp)).await;
}

/// Applies the CRDs from crds/ to a control plane and waits until they are Established.
pub async fn apply_crd(cp: &ControlPlane) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
    cp.kubectl(&["apply", "--server-side", "-f", path])
        .await
        .expect("apply CRDs");
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/origincloudregionmappings.originregions.io",
        "crd/cloudflarezones.originregions.io",
        "--timeout=60s",
    ])
    .await
    .expect("CRDs established");
}

impl Env {
    /// A namespace, simulator (with `sim_args`) and Secret, without an operator yet.
    pub async fn without_operator(sim_args: &[&str]) -> Env {
        let cp = testbed::shared().await;
        install_crd(cp).await;
        let ns = cp.create_namespace("e2e").await.expect("namespace");
        let sim = Sim::start(sim_args);
        let env = Env {
            cp,
            ns,
            zone: random_zone(),
            sim,
            op: None,
            client: cp.client(),
        };
        env.put_secret(SECRET, &[("apiToken", "dev-token")]).await;
        env
    }

    /// A full environment with the operator running (plus `op_args`).
    pub async fn new(sim_args: &[&str], op_args: &[&str]) -> Env {
        let mut env = Env::without_operator(sim_args).await;
        env.start_operator(op_args);
        env
    }

    /// The operator arguments every test uses.
    pub fn base_args(&self) -> Vec<String> {
        vec![
            "--namespace".into(),
            self.ns.clone(),
            "--cloudflare-api-url".into(),
            self.sim.base_url(),
            "--default-credentials-secret".into(),
            format!("{}/{}", self.ns, SECRET),
            "--watch-secret-refs".into(),
            // Most tests map zones nobody declared (the single-tenant mode); the governed
            // mode has its own tests.
            "--allow-undeclared-zones".into(),
            "--debounce".into(),
            "100ms".into(),
        ]
    }

    /// Starts the operator with the base arguments plus `extra`.
    pub fn start_operator(&mut self, extra: &[&str]) {
        let mut args = self.base_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        self.op = Some(Operator::start(self.cp.kubeconfig_path(), &args));
    }

    /// The operator (panics when none was started).
    pub fn op(&self) -> &Operator {
        self.op.as_ref().expect("operator started")
    }

    /// The operator, mutably (to kill or restart it).
    pub fn op_mut(&mut self) -> &mut Operator {
        self.op.as_mut().expect("operator started")
    }

    /// API of mappings in this namespace.
    pub fn api(&self) -> Api<OriginCloudRegionMapping> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A mapping object for this test's zone.
    pub fn mapping(
        &self,
        name: &str,
        ip: &str,
        vendor: &str,
        region: &str,
    ) -> OriginCloudRegionMapping {
        self.mapping_in(&self.zone, name, ip, vendor, region)
    }

    /// A mapping object for another zone.
    pub fn mapping_in(
        &self,
        zone: &str,
        name: &str,
        ip: &str,
        vendor: &str,
        region: &str,
    ) -> OriginCloudRegionMapping {
        OriginCloudRegionMapping::new(
            name,
            OriginCloudRegionMappingSpec {
                zone_id: zone.to_string(),
                origin_ip: ip.to_string(),
                vendor: vendor.to_string(),
                region: region.to_string(),
                credentials_secret_ref: None,
                deletion_policy: Default::default(),
            },
        )
    }

    /// Creates a mapping.
    pub async fn create(&self, obj: &OriginCloudRegionMapping) -> OriginCloudRegionMapping {
        self.api()
            .create(&PostParams::default(), obj)
            .await
            .expect("create mapping")
    }

    /// Merge-patches a mapping's spec.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.api()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("patch spec");
    }

    /// Deletes a mapping (returns at once; finalizers may keep it).
    pub async fn delete(&self, name: &str) {
        self.api()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete mapping");
    }

    /// Creates or replaces a Secret with string data.
    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        }))
        .unwrap();
        api.patch(
            name,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply secret");
    }

    /// Waits until `pred` holds for the object, or panics after `timeout` with its last state.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&OriginCloudRegionMapping) -> bool,
    ) -> OriginCloudRegionMapping {
        let deadline = Instant::now() + timeout;
        loop {
            let obj = self.api().get_opt(name).await.expect("get mapping");
            if let Some(o) = &obj {
                if pred(o) {
                    return o.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: not {what} after {timeout:?}; last: {:#?}",
                    obj.map(|o| o.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for Ready=True at the current generation.
    pub async fn wait_ready(&self, name: &str) -> OriginCloudRegionMapping {
        self.wait_for(name, Duration::from_secs(60), "Ready", |o| {
            o.ready_condition().is_some_and(|c| c.status == "True")
                && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await
    }

    /// Waits for Ready=False with `reason`.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> OriginCloudRegionMapping {
        self.wait_for(name, Duration::from_secs(60), reason, |o| {
            o.ready_condition().is_some_and(|c| c.reason == reason)
                && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await
    }

    /// Waits until the object no longer exists.
    pub async fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.api().get_opt(name).await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "{name} still exists after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the simulator's zone satisfies `pred`.
    pub async fn wait_remote(
        &self,
        zone: &str,
        what: &str,
        pred: impl Fn(&BTreeMap<String, (String, String)>) -> bool,
    ) -> BTreeMap<String, (String, String)> {
        self.wait_remote_within(zone, what, Duration::from_secs(60), pred)
            .await
    }

    /// Waits at most `limit` until the simulator's zone satisfies `pred`.
    pub async fn wait_remote_within(
        &self,
        zone: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&BTreeMap<String, (String, String)>) -> bool,
    ) -> BTreeMap<String, (String, String)> {
        let deadline = Instant::now() + limit;
        loop {
            let remote = self.remote(zone).await;
            if pred(&remote) {
                return remote;
            }
            assert!(
                Instant::now() < deadline,
                "zone {zone} not {what} after {limit:?}: {remote:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The simulator's mappings of a zone: ip → (vendor, region).
    pub async fn remote(&self, zone: &str) -> BTreeMap<String, (String, String)> {
        self.sim
            .dump_zone(zone)
            .await
            .into_iter()
            .map(|m| (m.origin_ip, (m.vendor, m.region)))
            .collect()
    }

    /// Event reasons recorded for an object, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Waits until an Event with `reason` was recorded for the object.
    pub async fn wait_event(&self, name: &str, reason: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reasons = self.event_reasons(name).await;
            if reasons.iter().any(|r| r == reason) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no {reason} event; saw {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `origin-region-operator plan` (plus `extra`) against this environment.
    pub fn run_plan(&self, extra: &[&str]) -> std::process::Output {
        let mut args: Vec<String> = vec!["plan".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--kubeconfig".into());
        args.push(self.cp.kubeconfig_path().display().to_string());
        args.extend(
            self.base_args()
                .into_iter()
                .filter(|a| a != "--debounce" && a != "100ms"),
        );
        std::process::Command::new(env!("CARGO_BIN_EXE_origin-region-operator"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run plan")
    }
}

/// A ValidatingAdmissionPolicy and binding, both named `name`, refusing every status write to
/// mappings in namespace `ns` (a status write the apiserver refuses, as an admission webhook or
/// a quota might).
pub fn deny_status_policy(name: &str, ns: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [originregions.io]
      apiVersions: ["*"]
      operations: [UPDATE]
      resources: [origincloudregionmappings/status]
  validations:
  - expression: "false"
    message: status writes refused by the test's policy
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
"#
    )
}
