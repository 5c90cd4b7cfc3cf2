//! The install path, proven on the real kube-apiserver: the rendered chart and the plain
//! manifests pass server-side dry-run, and the controller runs as the chart's ServiceAccount
//! with only the chart's RBAC and passes the core scenario. A permission the chart does not
//! grant is refused.

mod support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::Api;
use serde_json::json;
use support::e2e::{install_crd, Env};
use support::operator::Operator;
use tokio::io::AsyncWriteExt;

const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/helm/origin-region-operator"
);

fn helm() -> std::path::PathBuf {
    testbed::bins::helm().expect("helm is built by hack/build-kube-bins")
}

/// `helm template` of the chart into namespace `ns` with extra `--set`/`-f` arguments.
async fn render(ns: &str, extra: &[&str]) -> String {
    let out = tokio::process::Command::new(helm())
        .args(["template", "origin-region-operator", CHART, "-n", ns])
        .args(extra)
        .output()
        .await
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs kubectl (the built one, admin kubeconfig) with YAML on stdin.
async fn kubectl_stdin(env: &Env, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut cmd = tokio::process::Command::from(env.cp.kubectl_command());
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_and_manifests_pass_server_side_dry_run() {
    let env = Env::without_operator(&[]).await;
    for values in ["", "ci/watch-namespace-values.yaml"] {
        let mut extra = vec![];
        let path;
        if !values.is_empty() {
            path = format!("{CHART}/{values}");
            extra = vec!["-f", path.as_str(), "--set", "watchNamespace=default"];
        }
        let rendered = render(&env.ns, &extra).await;
        let args = ["apply", "--server-side", "--dry-run=server", "-f", "-"];
        let out = kubectl_stdin(&env, &args, &rendered).await;
        let out = out.unwrap_or_else(|e| panic!("dry-run of the chart ({values}) failed:\n{e}"));
        assert!(
            out.contains(
                "deployment.apps/origin-region-operator serverside-applied (server dry run)"
            ),
            "{out}"
        );
    }
    // A server-side dry run cannot create the namespace the other objects live in.
    let _ = env
        .cp
        .kubectl(&["create", "namespace", "origin-region-operator"])
        .await;
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests");
    let out = env
        .cp
        .kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-k",
            manifests,
        ])
        .await;
    let out = out.unwrap_or_else(|e| panic!("dry-run of deploy/manifests failed: {e}"));
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/origin-region-operator"),
        "{out}"
    );
}

/// Installs the chart (with `extra` helm arguments) into a fresh release namespace with the
/// operator-wide Secret, and returns that namespace, the chart ServiceAccount's token, and a
/// kubeconfig (inside the returned temp dir) that authenticates as it.
async fn install_as_service_account(
    env: &Env,
    fullname: &str,
    extra: &[&str],
) -> (String, String, tempfile::TempDir, std::path::PathBuf) {
    install_crd(env.cp).await;
    // The release namespace holds the chart's objects and the operator-wide Secret. Each
    // install has its own name: the cluster-scoped RBAC objects are named after it, and two
    // installs of one name would re-bind each other's ClusterRoles.
    let release_ns = env.cp.create_namespace("release").await.unwrap();
    let name = format!("fullnameOverride={fullname}");
    let mut args = vec!["--set", name.as_str()];
    args.extend_from_slice(extra);
    let rendered = render(&release_ns, &args).await;
    kubectl_stdin(env, &["apply", "-f", "-"], &rendered)
        .await
        .expect("install the chart");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &release_ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cloudflare-api-token"},
        "stringData": {"apiToken": "dev-token"}
    }))
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();

    let token = env
        .cp
        .service_account_token(&release_ns, fullname)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{cluster: t, user: sa}}\ncurrent-context: sa\n",
            env.cp.server_url(),
            env.cp.ca_path().display()
        ),
    )
    .unwrap();

    (release_ns, token, dir, kubeconfig)
}

/// The operator's arguments as the chart passes them (simulator URL, the release's Secret),
/// plus `extra`.
fn chart_args(env: &Env, release_ns: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--cloudflare-api-url".to_string(),
        env.sim.base_url(),
        "--default-credentials-secret".into(),
        format!("{release_ns}/cloudflare-api-token"),
        "--debounce".into(),
        "100ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_with_only_the_charts_rbac() {
    let mut env = Env::without_operator(&[]).await;
    let (release_ns, token, _dir, kubeconfig) =
        install_as_service_account(&env, "origin-region-operator", &[]).await;

    // Negative: the ServiceAccount cannot list Secrets cluster-wide, nor read another one.
    let sa = env.cp.client_for_token(&token);
    let err = Api::<Secret>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    let err = Api::<Secret>::namespaced(sa.clone(), &env.ns)
        .get(support::e2e::SECRET)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );

    // The cluster admin declares the zone for the test's namespace.
    let zone = origin_region_operator::zone::CloudflareZone::new(
        &format!("install-{}", &env.zone[..12]),
        origin_region_operator::zone::CloudflareZoneSpec {
            zone_id: env.zone.clone(),
            credentials_secret_ref: None,
            namespaces: vec![env.ns.clone()],
            namespace_selector: None,
            adoption: Default::default(),
            allow_namespace_credentials: false,
        },
    );
    let zones: Api<origin_region_operator::zone::CloudflareZone> = Api::all(env.client.clone());
    zones
        .create(&Default::default(), &zone)
        .await
        .expect("declare the zone");

    // The controller, as the chart runs it (all namespaces, leader election, operator-wide
    // Secret, declared zones), but with the ServiceAccount's token.
    let args = chart_args(
        &env,
        &release_ns,
        &[
            "--operator-namespace",
            &release_ns,
            "--leader-election",
            "--lease-namespace",
            &release_ns,
        ],
    );
    env.op = Some(Operator::start(&kubeconfig, &args));

    env.create(&env.mapping("m", "203.0.113.7", "aws", "us-east-1"))
        .await;
    env.wait_ready("m").await;
    env.wait_event("m", "Created").await;
    // The zone's status is written (claim and report) under the chart's RBAC.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let z = zones
            .get(&zone.metadata.name.clone().unwrap())
            .await
            .unwrap();
        if z.status
            .as_ref()
            .is_some_and(|s| s.writer.is_some() && s.managed == Some(1))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "zone status: {:?}",
            z.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.patch_spec("m", json!({"region": "us-west-2"})).await;
    env.wait_remote(&env.zone, "updated", |r| {
        r.get("203.0.113.7").is_some_and(|(_, g)| g == "us-west-2")
    })
    .await;
    env.delete("m").await;
    env.wait_gone("m").await;
    assert!(env.remote(&env.zone).await.is_empty());
    let log = env.op().log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refusals in the log:\n{log}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_source_runs_with_only_the_rbac_its_value_adds() {
    let mut env = Env::without_operator(&[]).await;
    let (release_ns, _token, _dir, kubeconfig) = install_as_service_account(
        &env,
        "origin-region-operator-sources",
        &[
            "--set",
            "zones.allowUndeclared=true",
            "--set",
            "sources.service.enabled=true",
        ],
    )
    .await;
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": format!("install-{}", &env.zone[..8]),
                     "labels": {"topology.kubernetes.io/region": "eu-west-1"}},
        "spec": {"providerID": "aws:///eu-west-1a/i-0install"},
    }))
    .unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    nodes.create(&Default::default(), &node).await.unwrap();
    // As the chart runs it with the source on (its args, with the ServiceAccount's token).
    let args = chart_args(
        &env,
        &release_ns,
        // Its own namespace only: the other tests here run their own operators.
        &[
            "--allow-undeclared-zones",
            "--source",
            "service",
            "--namespace",
            &env.ns,
        ],
    );
    env.op = Some(Operator::start(&kubeconfig, &args));
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(env.client.clone(), &env.ns);
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"originregions.io/zone": env.zone}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
    }))
    .unwrap();
    services.create(&Default::default(), &svc).await.unwrap();
    services
        .patch_status(
            "web",
            &Default::default(),
            &kube::api::Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.77"}]}}}),
            ),
        )
        .await
        .unwrap();
    let m = env.wait_ready("svc-web-203-0-113-77").await;
    assert_eq!(m.spec.region, "eu-west-1");
    services.delete("web", &Default::default()).await.unwrap();
    env.wait_gone("svc-web-203-0-113-77").await;
    assert!(env.remote(&env.zone).await.is_empty());
    let _ = nodes
        .delete(&node.metadata.name.unwrap(), &Default::default())
        .await;
    let log = env.op().log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refusals in the log:\n{log}"
    );
}
