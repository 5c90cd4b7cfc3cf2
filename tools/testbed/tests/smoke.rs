//! Smoke tests of the real control plane: what the operator's e2e tests rely on.
//!
//! These run against a real etcd + kube-apiserver (never a mock) and fail, not skip,
//! if the binaries are missing: run `hack/build-kube-bins` first.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const GROUP: &str = "testbed.origin-region-operator.io";
const CRD_NAME: &str = "widgets.testbed.origin-region-operator.io";
const FINALIZER: &str = "testbed.origin-region-operator.io/hold";
const MANAGER: &str = "testbed-smoke";

fn crd() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": CRD_NAME },
        "spec": {
            "group": GROUP,
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["replicas"],
                            "properties": {
                                "replicas": { "type": "integer" },
                                "size": { "type": "string" }
                            },
                            "x-kubernetes-validations": [{
                                "rule": "self.replicas <= 10",
                                "message": "replicas must be at most 10"
                            }]
                        },
                        "status": {
                            "type": "object",
                            "properties": { "phase": { "type": "string" } }
                        }
                    }
                }}
            }]
        }
    })
}

/// Installs the Widget CRD (idempotent: server-side apply) and waits for Established.
async fn install_crd(client: Client) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.patch(
        CRD_NAME,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(crd()),
    )
    .await
    .expect("applying the CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, CRD_NAME, conditions::is_crd_established()),
    )
    .await
    .expect("CRD Established within 30s")
    .expect("watching the CRD");
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "Widget"))
}

fn widget(name: &str, replicas: i64) -> DynamicObject {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "Widget"));
    DynamicObject::new(name, &ar).data(json!({ "spec": { "replicas": replicas, "size": "m" } }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_cel_status_ssa_watch_finalizer() {
    let cp = testbed::shared().await;
    let ns = cp.create_namespace("smoke").await.unwrap();
    let ar = install_crd(cp.client()).await;
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client(), &ns, &ar);

    // Watch from the start so every later step must arrive as an event.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(
        watcher(
            api.clone(),
            watcher::Config::default().fields("metadata.name=w1"),
        )
        .touched_objects()
        .try_for_each(move |obj| {
            let _ = tx.send(obj);
            async { Ok(()) }
        }),
    );
    // Waits for a watched version of w1 satisfying `pred`.
    async fn next_matching(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<DynamicObject>,
        what: &str,
        pred: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let obj = rx.recv().await.expect("watch stream ended");
                if pred(&obj) {
                    return obj;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no watch event with {what} within 30s"))
    }

    let created = api
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .expect("valid widget is accepted");
    let rv_created = created.resource_version().unwrap();
    next_matching(&mut rx, "creation", |o| o.name_any() == "w1").await;

    // CEL rejects what the OpenAPI schema alone would accept.
    let err = api
        .create(&PostParams::default(), &widget("too-big", 11))
        .await
        .expect_err("CEL rule must reject replicas=11");
    match err {
        kube::Error::Api(ae) => {
            assert_eq!(ae.code, 422, "{ae:?}");
            assert!(
                ae.message.contains("replicas must be at most 10"),
                "{}",
                ae.message
            );
        }
        other => panic!("expected a 422 from the apiserver, got {other}"),
    }

    // Status through the status subresource with server-side apply.
    let status = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Widget",
        "status": { "phase": "Ready" }
    });
    let patched = api
        .patch_status(
            "w1",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("server-side apply of status");
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(
        patched.data["spec"]["replicas"], 3,
        "status apply keeps spec"
    );
    assert_ne!(patched.resource_version().unwrap(), rv_created);
    assert!(
        patched
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some(MANAGER)
                && m.subresource.as_deref() == Some("status")),
        "SSA records the status field manager"
    );
    next_matching(&mut rx, "status Ready", |o| {
        o.data["status"]["phase"] == "Ready"
    })
    .await;

    // The status subresource ignores spec changes, and the main resource ignores status.
    let spec_via_status = json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
        "spec": { "replicas": 5 }, "status": { "phase": "Ready" }
    });
    let o = api
        .patch_status(
            "w1",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&spec_via_status),
        )
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["replicas"], 3);

    // A finalizer holds the object after delete, with deletionTimestamp set.
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": [FINALIZER] } })),
    )
    .await
    .expect("adding a finalizer");
    api.delete("w1", &DeleteParams::default())
        .await
        .expect("delete is accepted");
    let terminating = api.get("w1").await.expect("object stays while finalized");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.finalizers(), [FINALIZER.to_string()]);
    next_matching(&mut rx, "deletionTimestamp", |o| {
        o.metadata.deletion_timestamp.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(api.get_opt("w1").await.unwrap().is_some(), "still there");

    // Removing the finalizer lets the deletion finish.
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .expect("removing the finalizer");
    tokio::time::timeout(Duration::from_secs(30), async {
        while api.get_opt("w1").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("object gone after its finalizer was removed");
    watch.abort();
}

#[tokio::test]
async fn kubectl_matches_server_and_applies_server_side() {
    let cp = testbed::shared().await;
    let version: serde_json::Value =
        serde_json::from_str(&cp.kubectl(&["version", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!(version["clientVersion"]["gitVersion"], "v1.36.3");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.36.3");

    let ns = cp.create_namespace("kubectl").await.unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: {ns}\ndata:\n  k: v\n"
    );
    cp.kubectl_with_stdin(
        &["apply", "--server-side", "--field-manager=smoke", "-f", "-"],
        Some(&manifest),
    )
    .await
    .unwrap();
    let cm = Api::<ConfigMap>::namespaced(cp.client(), &ns)
        .get("cm")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["k"], "v");
}

fn configmap_reader_role(ns: &str) -> (Role, RoleBinding) {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "cm-reader".into(),
        },
        subjects: Some(vec![
            Subject {
                kind: "Group".into(),
                name: testbed::UNPRIVILEGED_GROUP.into(),
                ..Default::default()
            },
            Subject {
                kind: "ServiceAccount".into(),
                name: "robot".into(),
                namespace: Some(ns.into()),
                ..Default::default()
            },
        ]),
    };
    (role, binding)
}

fn assert_forbidden<T: std::fmt::Debug>(result: kube::Result<T>) {
    match result {
        Err(kube::Error::Api(ae)) => assert_eq!(ae.code, 403, "{ae:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn rbac_refuses_unprivileged_identities_until_granted() {
    let cp = testbed::shared().await;
    let ns = cp.create_namespace("rbac").await.unwrap();
    let admin = cp.client();

    // A ServiceAccount token minted by `kubectl create token` proves the apiserver's
    // service-account signing keys work (the operator's RBAC test runs this way).
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("robot".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sa_token = cp.service_account_token(&ns, "robot").await.unwrap();
    let robot = cp.client_for_token(&sa_token);
    let user = cp.unprivileged_client();

    for client in [&user, &robot] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        assert_forbidden(cms.list(&Default::default()).await);
        assert_forbidden(
            cms.create(&PostParams::default(), &ConfigMap::default())
                .await,
        );
        assert_forbidden(
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .list(&Default::default())
                .await,
        );
    }

    let (role, binding) = configmap_reader_role(&ns);
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // RBAC takes effect through the authorizer's informer cache: allow a moment.
    for client in [&user, &robot] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match cms.list(&Default::default()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("grant did not take effect: {e}"),
            }
        }
        // Still only what was granted.
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("nope".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_forbidden(cms.create(&PostParams::default(), &cm).await);
    }
}

#[tokio::test]
async fn apiserver_restart_keeps_etcd_data_and_clients() {
    // Its own control plane: a restart would disturb the other tests' shared one.
    let cp = testbed::ControlPlane::start().await.unwrap();
    let client = cp.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("survivor".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();

    cp.stop_apiserver();
    assert!(cms.get("survivor").await.is_err(), "apiserver is down");
    cp.start_apiserver().await.unwrap();

    // The same client (same URL, CA and token) reads the data kept in etcd.
    let got = cms.get("survivor").await.unwrap();
    assert_eq!(got.name_any(), "survivor");
    cp.restart_apiserver().await.unwrap();
    assert!(cms.get_opt("survivor").await.unwrap().is_some());

    let dir = cp.dir().to_path_buf();
    drop(cp);
    assert!(!dir.exists(), "state dir removed on drop");
}

#[tokio::test]
async fn watch_stream_delivers_events_in_resource_version_order() {
    let cp = testbed::shared().await;
    let ns = cp.create_namespace("watch").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cp.client(), &ns);
    let stream = watcher(cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let collector = tokio::spawn(async move {
        stream
            .take(3)
            .map(|r| r.unwrap())
            .collect::<Vec<ConfigMap>>()
            .await
    });
    for i in 0..3 {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm{i}")),
                ..Default::default()
            },
            ..Default::default()
        };
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("3 events within 30s")
        .unwrap();
    let names: Vec<String> = seen.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["cm0", "cm1", "cm2"]);
}
