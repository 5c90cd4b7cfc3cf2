//! The install artefacts under deploy/: runs `hack/render-check` (helm lint, helm template
//! for every values set, schema rejections, no raw token, deploy/manifests in sync with
//! the chart, kustomize builds) and then checks the rendered objects themselves: least
//! privilege RBAC and a locked-down pod.
//!
//! helm and kubectl come from `hack/build-kube-bins` (env HELM_BIN / KUBECTL_BIN, or its
//! cache). A missing binary fails the test with instructions; it never skips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_yaml::Value;

const RELEASE_NS: &str = "origin-region-operator";
const FULLNAME: &str = "origin-region-operator";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin(found: Result<PathBuf, testbed::Error>, what: &str) -> PathBuf {
    found.unwrap_or_else(|e| {
        panic!(
            "{what} is needed to check deploy/ and was not found: {e}\n\
             Run `eval \"$(hack/build-kube-bins)\"` from the repository root, then rerun the tests."
        )
    })
}

/// Runs hack/render-check once per test binary and keeps its renders.
fn renders() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let helm = bin(testbed::bins::helm(), "helm");
        let kubectl = bin(testbed::bins::kubectl(), "kubectl");
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(repo().join("hack/render-check"))
            .arg("--out")
            .arg(dir.path())
            .env("HELM_BIN", &helm)
            .env("KUBECTL_BIN", &kubectl)
            .current_dir(repo())
            .output()
            .expect("running hack/render-check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "hack/render-check failed ({}):\n{stderr}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("all checks passed"), "{stderr}");
        dir
    })
    .path()
}

/// Every non-empty document of a rendered file.
fn docs(name: &str) -> Vec<Value> {
    let path = renders().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{name}: bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|seq| {
            seq.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn kind(v: &Value) -> &str {
    s(v, &["kind"]).unwrap_or_default()
}

fn id(v: &Value) -> String {
    format!(
        "{} {}/{}",
        kind(v),
        s(v, &["metadata", "namespace"]).unwrap_or("-"),
        s(v, &["metadata", "name"]).unwrap_or("?")
    )
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = of_kind(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}, got {}", found.len());
    found[0]
}

/// (role id, apiGroups, resources, verbs, resourceNames) of every RBAC rule.
type Rule = (String, Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn rules(docs: &[Value]) -> Vec<Rule> {
    docs.iter()
        .filter(|d| matches!(kind(d), "ClusterRole" | "Role"))
        .flat_map(|role| {
            let rules = role["rules"].as_sequence().cloned().unwrap_or_default();
            rules.into_iter().map(move |r| {
                (
                    id(role),
                    strings(r.get("apiGroups")),
                    strings(r.get("resources")),
                    strings(r.get("verbs")),
                    strings(r.get("resourceNames")),
                )
            })
        })
        .collect()
}

/// Roles the chart aggregates into the built-in admin/edit/view roles for users; the chart
/// binds them to nobody (checked here), so they grant the operator nothing.
fn user_roles(docs: &[Value]) -> Vec<String> {
    let user: Vec<String> = of_kind(docs, "ClusterRole")
        .into_iter()
        .filter(|r| {
            r["metadata"]["labels"].as_mapping().is_some_and(|l| {
                l.keys().any(|k| {
                    k.as_str()
                        .is_some_and(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
                })
            })
        })
        .map(id)
        .collect();
    for b in of_kind(docs, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(docs, "RoleBinding"))
    {
        let bound = format!(
            "ClusterRole -/{}",
            b["roleRef"]["name"].as_str().unwrap_or_default()
        );
        assert!(
            !user.contains(&bound),
            "the chart binds the user role {bound}"
        );
    }
    user
}

fn assert_no_wildcards(name: &str, docs: &[Value]) {
    let user = user_roles(docs);
    let rules: Vec<Rule> = rules(docs)
        .into_iter()
        .filter(|r| !user.contains(&r.0))
        .collect();
    assert!(!rules.is_empty(), "{name}: no RBAC rules rendered");
    for (role, groups, resources, verbs, _) in &rules {
        for x in groups.iter().chain(resources).chain(verbs) {
            assert!(
                !x.contains('*'),
                "{name}: {role} has a wildcard: {groups:?} {resources:?} {verbs:?}"
            );
        }
        // The one delete the operator needs: the workload sources remove the mappings they
        // generated once the workload no longer has the address.
        let generated_mappings =
            role.ends_with("-sources") && resources == &["origincloudregionmappings".to_string()];
        for v in verbs {
            if v == "delete" && generated_mappings {
                continue;
            }
            assert!(
                !matches!(
                    v.as_str(),
                    "delete" | "deletecollection" | "escalate" | "bind" | "impersonate"
                ),
                "{name}: {role} grants {v} on {resources:?}"
            );
        }
    }
}

/// Secrets: only in the release namespace: the named default-credentials Secret, and (with
/// declared zones) the zones' Secrets, which live there and only cluster admins write.
fn assert_secrets_locked_down(name: &str, docs: &[Value], secret: &str) {
    let mut grants = 0;
    for (role, _, resources, verbs, names) in rules(docs) {
        if !resources.iter().any(|r| r == "secrets") {
            continue;
        }
        grants += 1;
        assert!(
            role.starts_with(&format!("Role {RELEASE_NS}/")),
            "{name}: Secrets granted by {role}, not by a Role in the release namespace"
        );
        let zones_role = role.ends_with("-zone-credentials");
        assert_eq!(
            names,
            if zones_role {
                vec![]
            } else {
                vec![secret.to_owned()]
            },
            "{name}: {role} is not limited by resourceNames"
        );
        let mut verbs = verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["get", "list", "watch"], "{name}: {role}");
    }
    assert_eq!(
        grants, 2,
        "{name}: expected the default Secret's and the zones' rules"
    );
}

fn container(docs: &[Value]) -> &Value {
    let deploy = one(docs, "Deployment");
    let containers = get(deploy, &["spec", "template", "spec", "containers"])
        .and_then(Value::as_sequence)
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn args(docs: &[Value]) -> Vec<String> {
    strings(container(docs).get("args"))
}

/// The value after `flag` in the container args.
fn flag(docs: &[Value], flag: &str) -> Option<String> {
    let args = args(docs);
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

fn assert_pod_locked_down(name: &str, docs: &[Value]) {
    let deploy = one(docs, "Deployment");
    let pod = get(deploy, &["spec", "template", "spec"]).unwrap();
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"],
        Value::Bool(true),
        "{name}"
    );
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64(),
        Some(65532),
        "{name}"
    );
    assert_eq!(
        s(pod, &["securityContext", "seccompProfile", "type"]),
        Some("RuntimeDefault")
    );

    let c = container(docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
    assert_eq!(sc["runAsNonRoot"], Value::Bool(true), "{name}");
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
    assert_eq!(
        strings(get(sc, &["capabilities", "drop"])),
        ["ALL"],
        "{name}"
    );
    assert!(
        get(sc, &["capabilities", "add"]).is_none(),
        "{name}: capabilities added"
    );
    assert_eq!(
        s(sc, &["seccompProfile", "type"]),
        Some("RuntimeDefault"),
        "{name}"
    );

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            s(c, &[probe, "httpGet", "path"]),
            Some(path),
            "{name}: {probe}"
        );
        assert_eq!(
            s(c, &[probe, "httpGet", "port"]),
            Some("http-metrics"),
            "{name}: {probe}"
        );
    }
    let port = &c["ports"][0];
    assert_eq!(s(port, &["name"]), Some("http-metrics"));
    assert_eq!(port["containerPort"].as_u64(), Some(8080));
    for q in ["cpu", "memory"] {
        assert!(
            get(c, &["resources", "requests", q]).is_some(),
            "{name}: no {q} request"
        );
        assert!(
            get(c, &["resources", "limits", q]).is_some(),
            "{name}: no {q} limit"
        );
    }

    // Downward API identity; no literal values that could carry a credential.
    let env: BTreeMap<String, &Value> = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| (s(e, &["name"]).unwrap().to_owned(), e))
        .collect();
    assert_eq!(
        s(env["POD_NAME"], &["valueFrom", "fieldRef", "fieldPath"]),
        Some("metadata.name")
    );
    assert_eq!(
        s(
            env["POD_NAMESPACE"],
            &["valueFrom", "fieldRef", "fieldPath"]
        ),
        Some("metadata.namespace")
    );
    for (k, e) in &env {
        assert!(
            !k.contains("TOKEN")
                && !k.contains("API_KEY")
                && get(e, &["valueFrom", "secretKeyRef"]).is_none(),
            "{name}: credential in env {k}"
        );
    }

    let args = args(docs);
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "{name}: {args:?}"
    );
    assert!(
        args.contains(&"--leader-election".to_owned()),
        "{name}: {args:?}"
    );
    assert_eq!(
        flag(docs, "--lease-namespace").as_deref(),
        Some("$(POD_NAMESPACE)")
    );
    assert_eq!(
        flag(docs, "--metrics-addr").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert!(
        flag(docs, "--resync-interval").is_some(),
        "{name}: {args:?}"
    );
    assert!(
        flag(docs, "--cloudflare-api-url").is_some(),
        "{name}: {args:?}"
    );
}

fn assert_metrics_service(name: &str, docs: &[Value]) {
    let svc = one(docs, "Service");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(s(port, &["name"]), Some("http-metrics"), "{name}");
    assert_eq!(port["port"].as_u64(), Some(8080), "{name}");
}

#[test]
fn default_install_is_least_privilege_and_locked_down() {
    let docs = docs("default");
    assert_no_wildcards("default", &docs);
    assert_secrets_locked_down("default", &docs, "cloudflare-api-token");
    assert_pod_locked_down("default", &docs);
    assert_metrics_service("default", &docs);

    // Predictable names for release "origin-region-operator".
    let user = user_roles(&docs);
    let mut roles: Vec<String> = of_kind(&docs, "ClusterRole").into_iter().map(id).collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            format!("ClusterRole -/{FULLNAME}"),
            format!("ClusterRole -/{FULLNAME}-mappings-edit"),
            format!("ClusterRole -/{FULLNAME}-mappings-view"),
            format!("ClusterRole -/{FULLNAME}-zones"),
        ]
    );
    assert_eq!(user.len(), 2, "{user:?}");
    for crb in of_kind(&docs, "ClusterRoleBinding") {
        assert_eq!(s(&crb["subjects"][0], &["name"]), Some(FULLNAME));
        assert_eq!(s(&crb["subjects"][0], &["namespace"]), Some(RELEASE_NS));
    }
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(s(sa, &["metadata", "name"]), Some(FULLNAME));

    // Exactly the verbs the operator uses, per resource.
    let mut by_resource: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (role, groups, resources, verbs, _) in rules(&docs) {
        if user.contains(&role) {
            continue;
        }
        for g in &groups {
            for r in &resources {
                let e = by_resource.entry((g.clone(), r.clone())).or_default();
                e.extend(verbs.iter().cloned());
                if r == "leases" {
                    assert!(
                        role.starts_with(&format!("Role {RELEASE_NS}/")),
                        "leases granted by {role}"
                    );
                }
            }
        }
    }
    let want: &[(&str, &str, &[&str])] = &[
        (
            "originregions.io",
            "origincloudregionmappings",
            &["get", "list", "patch", "watch"],
        ),
        (
            "originregions.io",
            "origincloudregionmappings/status",
            &["get", "patch"],
        ),
        ("", "events", &["create", "patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
        (
            "coordination.k8s.io",
            "leases",
            &["create", "get", "patch", "update"],
        ),
        ("", "secrets", &["get", "list", "watch"]),
        (
            "originregions.io",
            "cloudflarezones",
            &["get", "list", "watch"],
        ),
        (
            "originregions.io",
            "cloudflarezones/status",
            &["get", "patch"],
        ),
        ("", "namespaces", &["get", "list", "watch"]),
    ];
    let got: BTreeMap<(String, String), Vec<String>> = by_resource
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            v.dedup();
            (k, v)
        })
        .collect();
    let want: BTreeMap<(String, String), Vec<String>> = want
        .iter()
        .map(|(g, r, v)| {
            (
                (g.to_string(), r.to_string()),
                v.iter().map(|x| x.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // No PDB, ServiceMonitor or Secret by default.
    for k in ["PodDisruptionBudget", "ServiceMonitor", "Secret"] {
        assert!(
            of_kind(&docs, k).is_empty(),
            "default install renders a {k}"
        );
    }
    assert_eq!(
        flag(&docs, "--default-credentials-secret").as_deref(),
        Some("origin-region-operator/cloudflare-api-token")
    );
    assert_eq!(flag(&docs, "--log-format").as_deref(), Some("json"));
    assert!(!args(&docs).contains(&"--watch-secret-refs".to_owned()));
    assert!(flag(&docs, "--namespace").is_none());
    assert_eq!(
        s(container(&docs), &["image"]),
        Some("ghcr.io/origin-region-operator/origin-region-operator:0.1.0")
    );
    let crds: Vec<&str> = of_kind(&docs, "CustomResourceDefinition")
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        crds,
        [
            "cloudflarezones.originregions.io",
            "origincloudregionmappings.originregions.io"
        ]
    );
}

#[test]
fn watch_namespace_install_has_no_cluster_scope() {
    let docs = docs("watch-namespace-values");
    assert_no_wildcards("watch-namespace", &docs);
    assert_pod_locked_down("watch-namespace", &docs);
    // Cluster scope only where it cannot be avoided: reading the cluster-scoped
    // CloudflareZones (and writing their status) and namespaces' labels. The aggregated user
    // roles are bound to nobody by the chart.
    let bound: Vec<String> = of_kind(&docs, "ClusterRoleBinding")
        .iter()
        .map(|b| {
            b["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(bound, ["origin-region-operator-zones"]);
    for r in rules(&docs) {
        if r.0 == "ClusterRole -/origin-region-operator-zones" {
            for res in &r.2 {
                assert!(
                    ["cloudflarezones", "cloudflarezones/status", "namespaces"]
                        .contains(&res.as_str()),
                    "cluster-wide {res} with watchNamespace"
                );
            }
        }
    }
    // perNamespaceSecrets: Secrets readable in the watched namespace only, plus the zones'
    // Secrets in the release namespace.
    let secret_roles: Vec<String> = rules(&docs)
        .into_iter()
        .filter(|r| r.2.iter().any(|x| x == "secrets") && r.4.is_empty())
        .map(|r| r.0)
        .collect();
    assert_eq!(
        secret_roles,
        [
            "Role demo/origin-region-operator",
            "Role origin-region-operator/origin-region-operator-zone-credentials"
        ]
    );
    assert_eq!(flag(&docs, "--namespace").as_deref(), Some("demo"));
    assert!(args(&docs).contains(&"--watch-secret-refs".to_owned()));
    assert_eq!(
        flag(&docs, "--default-credentials-secret").as_deref(),
        Some("origin-region-operator/cf-token")
    );
}

#[test]
fn ha_install_has_pdb_service_monitor_and_secret_by_reference() {
    let docs = docs("ha-values");
    assert_no_wildcards("ha", &docs);
    assert_secrets_locked_down("ha", &docs, "origin-region-operator-credentials");
    assert_pod_locked_down("ha", &docs);
    assert_eq!(
        one(&docs, "Deployment")["spec"]["replicas"].as_u64(),
        Some(2)
    );
    one(&docs, "PodDisruptionBudget");
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(
        s(&sm["spec"]["endpoints"][0], &["port"]),
        Some("http-metrics")
    );
    let secret = one(&docs, "Secret");
    assert!(get(secret, &["data", "apiToken"]).is_some());
    assert!(secret.get("stringData").is_none());
    assert_eq!(
        flag(&docs, "--default-credentials-secret").as_deref(),
        Some("origin-region-operator/origin-region-operator-credentials")
    );
}

#[test]
fn plain_manifests_match_and_are_locked_down() {
    let docs = docs("manifests");
    assert_no_wildcards("manifests", &docs);
    assert_secrets_locked_down("manifests", &docs, "cloudflare-api-token");
    assert_pod_locked_down("manifests", &docs);
    assert_metrics_service("manifests", &docs);
    let ns = one(&docs, "Namespace");
    assert_eq!(s(ns, &["metadata", "name"]), Some(RELEASE_NS));
    assert_eq!(of_kind(&docs, "CustomResourceDefinition").len(), 2);
    assert_eq!(
        one(&docs, "Deployment")["spec"]["replicas"].as_u64(),
        Some(1)
    );
    for d in &docs {
        if !matches!(
            kind(d),
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            assert_eq!(
                s(d, &["metadata", "namespace"]),
                Some(RELEASE_NS),
                "{}",
                id(d)
            );
        }
    }
}

#[test]
fn examples_cover_every_vendor_in_demo() {
    let docs = docs("examples");
    let mappings = of_kind(&docs, "OriginCloudRegionMapping");
    let mut vendors: Vec<&str> = mappings
        .iter()
        .map(|m| s(m, &["spec", "vendor"]).unwrap())
        .collect();
    vendors.sort();
    assert_eq!(vendors, ["aws", "azure", "gcp", "oci"]);
    for m in &mappings {
        assert_eq!(s(m, &["metadata", "namespace"]), Some("demo"), "{}", id(m));
        assert_eq!(
            s(m, &["spec", "zoneId"]),
            Some("023e105f4ecef8ad9ca31a8372d0c353")
        );
    }
    assert!(
        mappings
            .iter()
            .any(|m| s(m, &["spec", "originIp"]).unwrap().contains(':')),
        "no IPv6 example"
    );
    assert_eq!(
        s(one(&docs, "Namespace"), &["metadata", "name"]),
        Some("demo")
    );
}

#[test]
fn workload_sources_add_only_their_own_rules() {
    let rendered = docs("sources-values");
    assert_no_wildcards("sources", &rendered);
    assert_pod_locked_down("sources", &rendered);
    assert_eq!(
        flag(&rendered, "--source").as_deref(),
        Some("service,gateway")
    );
    assert_eq!(
        flag(&rendered, "--source-dns-server").as_deref(),
        Some("10.96.0.10:53")
    );
    let by_role: BTreeMap<String, Vec<(String, Vec<String>)>> =
        rules(&rendered)
            .into_iter()
            .fold(BTreeMap::new(), |mut m, r| {
                for res in &r.2 {
                    m.entry(r.0.clone())
                        .or_default()
                        .push((res.clone(), r.3.clone()));
                }
                m
            });
    let cluster = &by_role[&format!("ClusterRole -/{FULLNAME}-sources-cluster")];
    let read = vec!["get".to_string(), "list".into(), "watch".into()];
    assert_eq!(
        *cluster,
        [
            ("nodes".to_string(), read.clone()),
            ("cloudflarezones".to_string(), read.clone())
        ]
    );
    // With watchNamespace, workloads are read and mappings generated in that namespace only.
    let ns = &by_role[&format!("Role demo/{FULLNAME}-sources")];
    assert_eq!(
        *ns,
        [
            ("services".to_string(), read.clone()),
            ("gateways".to_string(), read),
            (
                "origincloudregionmappings".to_string(),
                vec!["create".to_string(), "delete".into()]
            )
        ]
    );
    // Off (the default): none of it.
    let default = docs("default");
    assert!(flag(&default, "--source").is_none());
    for r in rules(&default) {
        for res in &r.2 {
            assert!(
                !["nodes", "services", "gateways"].contains(&res.as_str()),
                "{} grants {res} with no source enabled",
                r.0
            );
        }
    }
}
