//! The chart's dashboard and alerts name only what the operator exports.
//!
//! The exported metric names come from the operator's own `Metrics` registry, exercised once
//! through each recording path (prometheus_client writes no `# HELP`/`# TYPE` lines for a
//! family without series, so a fresh registry lists only its plain gauges and counters). Each
//! `# TYPE` line fixes the sample names Prometheus stores (`_total` for a counter,
//! `_bucket`/`_sum`/`_count` for a histogram, ...), and every sample encoded must be one of
//! them. Every `origin_region_operator_*` name in any string of
//! files/dashboard.json or files/alerts.yaml must be one of them, and every label it is matched
//! on must be one the family has (or one the scrape adds). The test also proves the chart ships
//! exactly these two files, that each alert has a firing and a quiet promtool case and a README
//! entry. promtool itself runs in hack/render-check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use origin_region_operator::cloudflare::Observer;
use origin_region_operator::metrics::Metrics;
use serde_yaml::Value;

const PREFIX: &str = "origin_region_operator_";
/// Labels Prometheus adds at scrape time (ServiceMonitor, PodMonitor or plain configs).
const TARGET_LABELS: &[&str] = &[
    "namespace",
    "job",
    "instance",
    "pod",
    "container",
    "service",
    "endpoint",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/origin-region-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Sample name → (family, label names seen on it).
type Exported = BTreeMap<String, (String, BTreeSet<String>)>;

/// Sample names of one family of the given OpenMetrics type.
fn sample_names(family: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "gauge" | "unknown" | "stateset" => &[""],
        "histogram" => &["_bucket", "_sum", "_count"],
        "summary" => &["", "_sum", "_count"],
        "info" => &["_info"],
        other => panic!("family {family} has type {other}: teach this test its sample names"),
    };
    suffixes.iter().map(|s| format!("{family}{s}")).collect()
}

/// `# TYPE` lines of an encoded registry: family → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name type");
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// Every label of every family, by exercising each recording path once.
fn exercised() -> Metrics {
    let m = Metrics::new();
    m.reconcile("ok");
    m.kube_write("status");
    m.set_zone_mappings("z1", 1, 1);
    m.leader.set(1);
    m.request("list", "200", 0.01);
    m.retry("list");
    m.rate_limit_wait(0.5);
    m
}

/// What the operator exports, derived from its registry and cross-checked against the samples
/// it really encodes.
fn exported() -> Exported {
    let text = exercised().render();
    let all = families(&text);
    assert!(
        all.len() >= 9,
        "fewer families than the operator has: {all:?}"
    );
    let fresh = families(&Metrics::new().render());
    assert!(
        fresh.iter().all(|(f, k)| all.get(f) == Some(k)),
        "a family of the fresh registry is missing once exercised: {fresh:?}"
    );
    let mut out = Exported::new();
    for (family, kind) in &all {
        assert!(family.starts_with(PREFIX), "{family} lacks the prefix");
        for name in sample_names(family, kind) {
            out.insert(name, (family.clone(), BTreeSet::new()));
        }
    }
    let mut seen_families = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).expect("a sample line");
        let name = &line[..end];
        let (family, labels) = out
            .get_mut(name)
            .unwrap_or_else(|| panic!("encoded sample {name} is not derived from a # TYPE line"));
        seen_families.insert(family.clone());
        if line[end..].starts_with('{') {
            let close = line.find('}').expect("closing brace");
            for pair in line[end + 1..close].split(',') {
                let (label, _) = pair.split_once('=').expect("label=value");
                labels.insert(label.to_string());
            }
        }
    }
    assert_eq!(
        seen_families,
        all.keys().cloned().collect::<BTreeSet<_>>(),
        "every family has samples, so its labels are known"
    );
    out
}

/// One `origin_region_operator_*` name used somewhere, with the labels it is matched on.
#[derive(Debug)]
struct Use {
    name: String,
    labels: Vec<String>,
}

/// Parses `name{label op "value", ...}` occurrences of the prefix in a PromQL string (or any
/// text: a name in prose has no selector).
fn uses(text: &str) -> Result<Vec<Use>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(PREFIX).map(|i| i + from) {
        let mut end = at;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || b"_:".contains(&bytes[end]))
        {
            end += 1;
        }
        let name = text[at..end].to_string();
        let mut labels = Vec::new();
        let mut i = end;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                while i < bytes.len() && b" ,".contains(&bytes[i]) {
                    i += 1;
                }
                if i >= bytes.len() {
                    return Err(format!("unclosed selector of {name} in {text}"));
                }
                if bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if start == i {
                    return Err(format!("bad selector of {name} in {text}"));
                }
                labels.push(text[start..i].to_string());
                while i < bytes.len() && b" =!~".contains(&bytes[i]) {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] != b'"' {
                    return Err(format!("unquoted matcher value of {name} in {text}"));
                }
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
        }
        out.push(Use { name, labels });
        from = i.max(end);
    }
    Ok(out)
}

/// Problems with the names and labels a text uses; empty when all is exported.
fn problems(exported: &Exported, text: &str) -> Vec<String> {
    let found = match uses(text) {
        Ok(u) => u,
        Err(e) => return vec![e],
    };
    let mut out = Vec::new();
    for u in found {
        let Some((family, labels)) = exported.get(&u.name) else {
            out.push(format!(
                "{} is not exported by the operator (exported: {})",
                u.name,
                exported.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            continue;
        };
        for l in &u.labels {
            let le = l == "le" && u.name.ends_with("_bucket");
            if !labels.contains(l) && !TARGET_LABELS.contains(&l.as_str()) && !le {
                out.push(format!(
                    "{} (family {family}) has no label {l} (it has: {labels:?})",
                    u.name
                ));
            }
        }
    }
    out
}

fn json_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

fn yaml_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Sequence(a) => a.iter().for_each(|v| yaml_strings(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| yaml_strings(v, out)),
        Value::Tagged(t) => yaml_strings(&t.value, out),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&chart().join("files/dashboard.json"))).expect("dashboard JSON")
}

fn alerts_file() -> Value {
    serde_yaml::from_str(&read(&chart().join("files/alerts.yaml"))).expect("alerts YAML")
}

/// The alerting rules: (name, rule).
fn alerts() -> Vec<(String, Value)> {
    let file = alerts_file();
    let groups = file["groups"].as_sequence().expect("groups");
    let rules: Vec<_> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter().cloned())
        .collect();
    rules
        .into_iter()
        .map(|r| {
            (
                r["alert"]
                    .as_str()
                    .expect("only alerting rules")
                    .to_string(),
                r,
            )
        })
        .collect()
}

#[test]
fn the_checker_rejects_what_is_not_exported() {
    let e = exported();
    assert!(e.contains_key("origin_region_operator_zone_reconciles_total"));
    assert!(e.contains_key("origin_region_operator_cloudflare_request_duration_seconds_bucket"));
    assert!(e.contains_key("origin_region_operator_leader"));
    for ok in [
        r#"sum by (le) (rate(origin_region_operator_cloudflare_request_duration_seconds_bucket{le="0.1", job=~"x"}[5m]))"#,
        r#"origin_region_operator_mappings {zone="a,b}", ready!="true"}"#,
        "absent(origin_region_operator_leader)",
    ] {
        assert_eq!(problems(&e, ok), Vec::<String>::new(), "{ok}");
    }
    for bad in [
        "origin_region_operator_mapping",                   // a typo
        "rate(origin_region_operator_zone_reconciles[5m])", // a counter without _total
        "origin_region_operator_leader_total",              // a gauge with _total
        "origin_region_operator_cloudflare_request_duration_seconds", // a histogram's family
        r#"origin_region_operator_mappings{state="false"}"#, // no such label
        r#"origin_region_operator_leader{le="1"}"#,         // le only on _bucket
        r#"origin_region_operator_leader{job=~"x"#,         // unclosed
    ] {
        assert!(!problems(&e, bad).is_empty(), "accepted {bad}");
    }
}

#[test]
fn dashboard_names_only_exported_metrics() {
    let e = exported();
    let d = dashboard();
    let mut strings = Vec::new();
    json_strings(&d, &mut strings);
    let mut found = BTreeSet::new();
    let mut bad = Vec::new();
    for s in &strings {
        bad.extend(problems(&e, s));
        found.extend(uses(s).unwrap_or_default().into_iter().map(|u| u.name));
    }
    assert!(bad.is_empty(), "files/dashboard.json:\n{}", bad.join("\n"));
    // Every family is on the dashboard.
    let families: BTreeSet<_> = e.values().map(|(f, _)| f.clone()).collect();
    let shown: BTreeSet<_> = found.iter().map(|n| e[n].0.clone()).collect();
    assert_eq!(shown, families, "a family the dashboard does not show");
    assert_eq!(d["uid"], "origin-region-operator");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
            for t in targets {
                let expr = t["expr"].as_str().expect("expr");
                assert!(expr.contains(PREFIX), "{expr}");
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{expr}");
            }
        }
    }
}

#[test]
fn alerts_name_only_exported_metrics_and_are_documented_and_tested() {
    let e = exported();
    let alerts = alerts();
    assert!(alerts.len() >= 6, "{alerts:?}");
    let readme = read(&repo().join("README.md"));
    let tests: Value =
        serde_yaml::from_str(&read(&repo().join("tests/prometheus/alerts_test.yaml")))
            .expect("test file");
    let mut bad = Vec::new();
    for (name, rule) in &alerts {
        let expr = rule["expr"].as_str().expect("expr");
        if uses(expr).map(|u| u.is_empty()).unwrap_or(false) {
            bad.push(format!("{name}: its expression names no operator metric"));
        }
        let mut strings = Vec::new();
        yaml_strings(rule, &mut strings);
        for s in strings {
            bad.extend(problems(&e, s).into_iter().map(|p| format!("{name}: {p}")));
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        if !["critical", "warning"].contains(&severity) {
            bad.push(format!("{name}: severity {severity:?}"));
        }
        for a in ["summary", "description", "runbook_url"] {
            if rule["annotations"][a].as_str().is_none_or(str::is_empty) {
                bad.push(format!("{name}: no {a} annotation"));
            }
        }
        if !readme.contains(&format!("`{name}`")) {
            bad.push(format!("{name}: not described in README.md"));
        }
        let cases: Vec<&Value> = tests["tests"]
            .as_sequence()
            .expect("tests")
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
            .filter(|c| c["alertname"].as_str() == Some(name))
            .collect();
        let firing = cases
            .iter()
            .any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()));
        let quiet = cases
            .iter()
            .any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| a.is_empty()));
        if !firing || !quiet {
            bad.push(format!(
                "{name}: tests/prometheus/alerts_test.yaml needs a case where it fires and one where it does not"
            ));
        }
    }
    let names: BTreeSet<_> = alerts.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names.len(), alerts.len(), "duplicate alert names");
    assert!(bad.is_empty(), "files/alerts.yaml:\n{}", bad.join("\n"));
}

/// `helm template` of the two optional objects, parsed.
fn render(sets: &[&str]) -> Vec<Value> {
    let helm = testbed::bins::helm().unwrap_or_else(|e| {
        panic!("helm is needed: {e}\nRun `eval \"$(hack/build-kube-bins)\"` first.")
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(helm);
    cmd.args(["template", "origin-region-operator"])
        .arg(chart())
        .args(["-n", "origin-region-operator"])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .args(["--show-only", "templates/grafana-dashboard.yaml"])
        .args([
            "--set",
            "prometheusRule.enabled=true,grafanaDashboard.enabled=true",
        ])
        .env("HELM_CONFIG_HOME", tmp.path().join("config"))
        .env("HELM_CACHE_HOME", tmp.path().join("cache"))
        .env("HELM_DATA_HOME", tmp.path().join("data"))
        .env("KUBECONFIG", tmp.path().join("no-kubeconfig"));
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("running helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}: {docs:?}");
    found[0]
}

#[test]
fn the_chart_ships_these_files() {
    let docs = render(&[]);
    let rule = kind(&docs, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"],
        alerts_file(),
        "the PrometheusRule spec is files/alerts.yaml"
    );
    let cm = kind(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = cm["data"]["origin-region-operator.json"]
        .as_str()
        .expect("dashboard key");
    let shipped: serde_json::Value = serde_json::from_str(json).expect("shipped JSON");
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap holds files/dashboard.json"
    );

    // Labels and namespaces are configurable; an alert's own severity wins.
    let docs = render(&[
        "prometheusRule.additionalRuleLabels.team=platform",
        "prometheusRule.additionalRuleLabels.severity=page",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "grafanaDashboard.labels.grafana_dashboard=null",
        "grafanaDashboard.labels.dashboards=ops",
        "grafanaDashboard.namespace=monitoring",
    ]);
    let rule = kind(&docs, "PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let mut n = 0;
    for g in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            assert_eq!(r["labels"]["team"], "platform", "{r:?}");
            assert!(["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap()));
            n += 1;
        }
    }
    assert_eq!(n, alerts().len());
    let cm = kind(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "ops");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
}
