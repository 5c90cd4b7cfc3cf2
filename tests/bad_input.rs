//! Bad input, tabled (issue 7): every row is one bad (or deliberately borderline good) input
//! with its expected outcome. Each table runs all of its rows, collects every row that did not
//! behave, and fails once with the whole list, so one run shows every problem.
//!
//! - [`admission_table`]: raw JSON objects sent to the real kube-apiserver with the CRD
//!   installed. Bad rows must be refused (HTTP 422/400) with a message naming the field; good
//!   rows must be stored, proving the schema and CEL rules are not over-strict.
//! - [`secrets_table`]: one operator, one simulator, one namespace; each row has its own zone
//!   and its own Secret (or none), so rows cannot disturb each other. Each must reach its
//!   expected Ready reason, and no secret value may appear in a status, an Event or the log.
//!   The same run covers spec values that admission rightly lets through but the operator
//!   must judge (regions; origin IPs stored under an older, looser CRD).
//! - [`hostile_responses_table`]: each row gets its own namespace, simulator, operator and a
//!   hostile HTTP server (tests/support/hostile.rs) between the operator and the simulator.
//!   See [`run_hostile`] for the phases and what "nothing already applied is lost" means.
//!
//! [`the_tables_hold_at_least_100_bad_inputs`] counts the rows without running them.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use origin_region_operator::crd::{OriginCloudRegionMapping, SecretReference};
use serde_json::{json, Value};
use support::e2e::{install_crd, random_zone, Env};
use support::hostile::{Hostile, Misbehave, Scope};
use support::operator::Operator;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

// ───────────────────────────── 1. Admission ─────────────────────────────

/// What the apiserver must do with an object.
#[derive(Debug, Clone)]
enum Admit {
    /// Store it (and, when given, the stored spec must hold this field with this value).
    Accept(Option<(&'static str, Value)>),
    /// Refuse it with 422/400 and a message containing this text (the field path).
    Reject(&'static str),
}

/// One admission row: how the object is sent and what must happen.
struct AdmissionCase {
    label: String,
    /// The `spec` to send; `None` sends no spec at all.
    spec: Option<Value>,
    /// Merge patch sent to an accepted copy of the good spec instead of a create.
    update: Option<Value>,
    expect: Admit,
}

fn good_spec() -> Value {
    json!({
        "zoneId": ZONE,
        "originIp": "192.0.2.1",
        "vendor": "aws",
        "region": "us-east-1",
    })
}

fn spec_with(field: &str, value: Value) -> Value {
    let mut s = good_spec();
    s[field] = value;
    s
}

fn spec_without(field: &str) -> Value {
    let mut s = good_spec();
    s.as_object_mut().unwrap().remove(field);
    s
}

fn reject(label: impl Into<String>, spec: Value, field: &'static str) -> AdmissionCase {
    AdmissionCase {
        label: label.into(),
        spec: Some(spec),
        update: None,
        expect: Admit::Reject(field),
    }
}

fn accept(label: impl Into<String>, spec: Value) -> AdmissionCase {
    AdmissionCase {
        label: label.into(),
        spec: Some(spec),
        update: None,
        expect: Admit::Accept(None),
    }
}

/// Every admission row. Labels say what is wrong; the last argument is the text the refusal
/// must contain.
fn admission_cases() -> Vec<AdmissionCase> {
    let mut v = Vec::new();
    let z = "spec.zoneId";
    // zoneId: 32 lowercase hex characters, nothing else.
    for (label, val) in [
        ("zoneId uppercase hex", json!(ZONE.to_uppercase())),
        (
            "zoneId one uppercase char",
            json!(format!("{}A", &ZONE[..31])),
        ),
        ("zoneId 31 chars", json!(&ZONE[..31])),
        ("zoneId 33 chars", json!(format!("{ZONE}0"))),
        ("zoneId non-hex g", json!(format!("{}g", &ZONE[..31]))),
        ("zoneId empty", json!("")),
        ("zoneId leading space", json!(format!(" {}", &ZONE[..31]))),
        ("zoneId trailing newline", json!(format!("{ZONE}\n"))),
        ("zoneId 0x prefix", json!(format!("0x{}", &ZONE[..30]))),
        (
            "zoneId UUID dashes",
            json!("023e105f-4ece-f8ad-9ca3-1a8372d0c353"),
        ),
        (
            "zoneId fullwidth digits",
            json!("０２３e105f4ecef8ad9ca31a8372d0c3"),
        ),
        ("zoneId integer", json!(12345)),
        ("zoneId boolean", json!(true)),
        ("zoneId array", json!([ZONE])),
        ("zoneId object", json!({"id": ZONE})),
        ("zoneId null", Value::Null),
    ] {
        v.push(reject(label, spec_with("zoneId", val), z));
    }
    v.push(reject("zoneId missing", spec_without("zoneId"), z));

    // originIp: one IPv4 or IPv6 address, no decoration.
    let ip = "spec.originIp";
    for (label, val) in [
        ("originIp empty", json!("")),
        ("originIp leading space", json!(" 192.0.2.1")),
        ("originIp trailing space", json!("192.0.2.1 ")),
        ("originIp trailing newline", json!("192.0.2.1\n")),
        ("originIp space inside", json!("192.0. 2.1")),
        ("originIp leading tab on IPv6", json!("\t2001:db8::1")),
        ("originIp IPv6 trailing space", json!("2001:db8::1 ")),
        ("originIp IPv4 CIDR /24", json!("192.0.2.0/24")),
        ("originIp IPv4 CIDR /32", json!("192.0.2.1/32")),
        ("originIp IPv6 CIDR /32", json!("2001:db8::/32")),
        ("originIp IPv6 CIDR /128", json!("2001:db8::1/128")),
        ("originIp mapped CIDR", json!("::ffff:192.0.2.1/128")),
        ("originIp zone suffix %eth0", json!("fe80::1%eth0")),
        ("originIp zone suffix %25eth0", json!("fe80::1%25eth0")),
        ("originIp numeric zone suffix", json!("fe80::1%1")),
        (
            "originIp mapped with zone suffix",
            json!("::ffff:1.2.3.4%eth0"),
        ),
        ("originIp leading-zero octet", json!("192.0.02.1")),
        ("originIp leading-zero first octet", json!("010.0.0.1")),
        ("originIp zero-padded octets", json!("192.168.001.001")),
        (
            "originIp mapped leading-zero octet",
            json!("::ffff:192.0.02.1"),
        ),
        (
            "originIp mapped leading-zero first",
            json!("::ffff:01.2.3.4"),
        ),
        ("originIp IPv6 9 groups", json!("1:2:3:4:5:6:7:8:9")),
        ("originIp IPv6 10 groups", json!("1:2:3:4:5:6:7:8:9:10")),
        ("originIp IPv6 triple colon", json!("2001:db8:::1")),
        ("originIp IPv6 two ellipses", json!("2001::db8::1")),
        ("originIp IPv6 5-digit group", json!("12345::1")),
        ("originIp IPv6 non-hex group", json!("2001:db8::g")),
        ("originIp octet 256", json!("256.0.0.1")),
        ("originIp three octets", json!("1.2.3")),
        ("originIp five octets", json!("1.2.3.4.5")),
        ("originIp trailing dot", json!("1.2.3.4.")),
        ("originIp hostname", json!("example.com")),
        ("originIp localhost", json!("localhost")),
        ("originIp with port", json!("192.0.2.1:443")),
        ("originIp bracketed IPv6", json!("[2001:db8::1]")),
        (
            "originIp bracketed IPv6 with port",
            json!("[2001:db8::1]:443"),
        ),
        ("originIp hex octet", json!("0x7f.0.0.1")),
        ("originIp one char", json!("1")),
        ("originIp decimal integer form", json!("3232235777")),
        (
            "originIp 46 chars",
            json!("1111:2222:3333:4444:5555:6666:7777:8888:9999:a"),
        ),
        ("originIp mapped octet 999", json!("::ffff:999.1.1.1")),
        ("originIp mapped octet 256", json!("::ffff:1.2.3.256")),
        ("originIp mapped three octets", json!("::ffff:1.2.3")),
        ("originIp mapped then ellipsis", json!("::ffff:::1")),
        ("originIp NUL byte", json!("1.2.3.4\u{0}")),
        ("originIp Arabic-Indic digits", json!("١٩٢.٠.٢.١")),
        ("originIp fullwidth digits", json!("１９２.０.２.１")),
        ("originIp plus sign", json!("+1.2.3.4")),
        ("originIp negative octet", json!("1.2.3.-4")),
        ("originIp URL", json!("http://192.0.2.1")),
        ("originIp two addresses", json!("192.0.2.1,192.0.2.2")),
        ("originIp integer", json!(3232235777u64)),
        ("originIp array", json!(["192.0.2.1"])),
        ("originIp null", Value::Null),
    ] {
        v.push(reject(label, spec_with("originIp", val), ip));
    }
    v.push(reject("originIp missing", spec_without("originIp"), ip));

    // vendor: exactly aws, azure, gcp or oci.
    let vd = "spec.vendor";
    for (label, val) in [
        ("vendor uppercase", json!("AWS")),
        ("vendor capitalised", json!("Gcp")),
        ("vendor uppercase OCI", json!("OCI")),
        ("vendor empty", json!("")),
        ("vendor unknown amazon", json!("amazon")),
        ("vendor unknown google", json!("google")),
        ("vendor unknown alibaba", json!("alibaba")),
        ("vendor trailing space", json!("aws ")),
        ("vendor leading space", json!(" gcp")),
        ("vendor trailing newline", json!("azure\n")),
        ("vendor integer", json!(5)),
        ("vendor array", json!(["aws"])),
        ("vendor null", Value::Null),
    ] {
        v.push(reject(label, spec_with("vendor", val), vd));
    }
    v.push(reject("vendor missing", spec_without("vendor"), vd));

    // region: 1..=64 characters of [A-Za-z0-9._-], starting with a letter or digit.
    let rg = "spec.region";
    for (label, val) in [
        ("region empty", json!("")),
        ("region 65 chars", json!("a".repeat(65))),
        ("region with spaces", json!("us east 1")),
        ("region leading space", json!(" us-east-1")),
        ("region trailing newline", json!("us-east-1\n")),
        ("region trailing tab", json!("us-east-1\t")),
        ("region leading dash", json!("-us-east-1")),
        ("region leading dot", json!(".hidden")),
        ("region slash", json!("us/east-1")),
        ("region path traversal", json!("../../etc")),
        ("region semicolon", json!("us-east-1;drop")),
        ("region non-ASCII", json!("üs-east-1")),
        ("region integer", json!(1)),
        ("region null", Value::Null),
    ] {
        v.push(reject(label, spec_with("region", val), rg));
    }
    v.push(reject("region missing", spec_without("region"), rg));

    // credentialsSecretRef: an object with the name of a Secret (a DNS subdomain).
    let cr = "spec.credentialsSecretRef";
    for (label, val) in [
        ("credentialsSecretRef without name", json!({})),
        ("credentialsSecretRef empty name", json!({"name": ""})),
        ("credentialsSecretRef name null", json!({"name": null})),
        ("credentialsSecretRef name integer", json!({"name": 42})),
        (
            "credentialsSecretRef name 254 chars",
            json!({"name": "a".repeat(254)}),
        ),
        (
            "credentialsSecretRef name uppercase",
            json!({"name": "Team-Token"}),
        ),
        (
            "credentialsSecretRef name with space",
            json!({"name": "team token"}),
        ),
        (
            "credentialsSecretRef name with slash",
            json!({"name": "other-ns/token"}),
        ),
        (
            "credentialsSecretRef name leading dash",
            json!({"name": "-token"}),
        ),
        (
            "credentialsSecretRef name underscore",
            json!({"name": "team_token"}),
        ),
        ("credentialsSecretRef a string", json!("cf-token")),
        ("credentialsSecretRef an array", json!(["cf-token"])),
    ] {
        v.push(reject(label, spec_with("credentialsSecretRef", val), cr));
    }

    // deletionPolicy: exactly Delete or Orphan.
    let dp = "spec.deletionPolicy";
    for (label, val) in [
        ("deletionPolicy lowercase delete", json!("delete")),
        ("deletionPolicy lowercase orphan", json!("orphan")),
        ("deletionPolicy uppercase", json!("DELETE")),
        ("deletionPolicy unknown Retain", json!("Retain")),
        ("deletionPolicy empty", json!("")),
        ("deletionPolicy trailing space", json!("Delete ")),
        ("deletionPolicy boolean", json!(true)),
        ("deletionPolicy integer", json!(0)),
    ] {
        v.push(reject(label, spec_with("deletionPolicy", val), dp));
    }

    // The spec as a whole.
    for (label, spec, field) in [
        ("spec a string", json!("zoneId=x"), "spec"),
        ("spec an array", json!([good_spec()]), "spec"),
        ("spec empty object", json!({}), "spec.zoneId"),
        (
            "spec field names in wrong case (zoneID)",
            {
                let mut s = spec_without("zoneId");
                s["zoneID"] = json!(ZONE);
                s
            },
            "spec.zoneId",
        ),
        (
            "spec field names in snake_case (origin_ip)",
            {
                let mut s = spec_without("originIp");
                s["origin_ip"] = json!("192.0.2.1");
                s
            },
            "spec.originIp",
        ),
    ] {
        v.push(reject(label, spec, field));
    }
    v.push(AdmissionCase {
        label: "spec missing".into(),
        spec: None,
        update: None,
        expect: Admit::Reject("spec"),
    });
    v.push(reject("spec null", Value::Null, "spec"));

    // Updates are validated too.
    for (label, patch, field) in [
        (
            "update originIp to a hostname",
            json!({"spec": {"originIp": "example.com"}}),
            ip,
        ),
        (
            "update vendor to uppercase",
            json!({"spec": {"vendor": "AWS"}}),
            vd,
        ),
        (
            "update zoneId to 31 chars",
            json!({"spec": {"zoneId": &ZONE[..31]}}),
            z,
        ),
        (
            "update removes region",
            json!({"spec": {"region": null}}),
            rg,
        ),
    ] {
        v.push(AdmissionCase {
            label: label.into(),
            spec: Some(good_spec()),
            update: Some(patch),
            expect: Admit::Reject(field),
        });
    }

    // Good inputs: the rules must not be over-strict.
    v.push(accept("good: baseline IPv4", good_spec()));
    // Every spelling of an address is admitted, IPv4-mapped ones included (design: "any valid
    // spelling"). 0.0.0.0, ::, ::1 and 255.255.255.255 are well-formed, so admission takes them;
    // whether Cloudflare serves them is Cloudflare's call (its 1146 becomes InvalidOriginIP, see
    // the hostile table).
    for val in [
        "2001:DB8::1",
        "2001:db8::1",
        "::ffff:192.0.2.1",
        "::FFFF:192.0.2.1",
        "0:0:0:0:0:ffff:192.0.2.1",
        "::ffff:c000:201",
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "64:ff9b::192.0.2.1",
        "1:2:3:4:5:6:7::",
        "0000:0000:0000:0000:0000:ffff:255.255.255.255",
    ] {
        v.push(accept(
            format!("good: originIp {val:?}"),
            spec_with("originIp", json!(val)),
        ));
    }
    for vendor in ["azure", "gcp", "oci"] {
        v.push(accept(
            format!("good: vendor {vendor}"),
            spec_with("vendor", json!(vendor)),
        ));
    }
    for (label, region) in [
        ("good: region 64 chars", "a".repeat(64)),
        (
            "good: region in upper case (the operator judges it)",
            "US-EAST-1".into(),
        ),
        ("good: region with underscore and dot", "eu_west.1".into()),
    ] {
        v.push(accept(label, spec_with("region", json!(region))));
    }
    v.push(accept(
        "good: deletionPolicy Orphan",
        spec_with("deletionPolicy", json!("Orphan")),
    ));
    v.push(AdmissionCase {
        label: "good: deletionPolicy omitted defaults to Delete".into(),
        spec: Some(good_spec()),
        update: None,
        expect: Admit::Accept(Some(("deletionPolicy", json!("Delete")))),
    });
    v.push(accept(
        "good: credentialsSecretRef null",
        spec_with("credentialsSecretRef", Value::Null),
    ));
    v.push(accept(
        "good: credentialsSecretRef 253-char DNS subdomain",
        spec_with(
            "credentialsSecretRef",
            json!({"name": format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61))}),
        ),
    ));
    v.push(accept(
        "good: credentialsSecretRef dotted name",
        spec_with("credentialsSecretRef", json!({"name": "cf.team-1"})),
    ));
    v.push(AdmissionCase {
        label: "good: unknown spec field is pruned, not stored".into(),
        spec: Some(spec_with("comment", json!("hello"))),
        update: None,
        expect: Admit::Accept(Some(("comment", Value::Null))),
    });
    v
}

fn mapping_resource() -> ApiResource {
    ApiResource::erase::<OriginCloudRegionMapping>(&())
}

fn raw_object(name: &str, spec: Option<&Value>) -> DynamicObject {
    let mut obj = json!({
        "apiVersion": "originregions.io/v1alpha1",
        "kind": "OriginCloudRegionMapping",
        "metadata": {"name": name},
    });
    if let Some(spec) = spec {
        obj["spec"] = spec.clone();
    }
    serde_json::from_value(obj).expect("a DynamicObject")
}

/// Runs one admission row; `Err` says how it misbehaved.
async fn run_admission(
    api: &Api<DynamicObject>,
    name: &str,
    case: &AdmissionCase,
) -> Result<(), String> {
    let created = if let Some(patch) = &case.update {
        api.create(
            &PostParams::default(),
            &raw_object(name, Some(&good_spec())),
        )
        .await
        .map_err(|e| format!("creating the good object to update failed: {e}"))?;
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    } else {
        api.create(
            &PostParams::default(),
            &raw_object(name, case.spec.as_ref()),
        )
        .await
    };
    match (&case.expect, created) {
        (Admit::Accept(check), Ok(obj)) => {
            if let Some((field, want)) = check {
                let got = obj.data["spec"].get(*field).cloned().unwrap_or(Value::Null);
                if &got != want {
                    return Err(format!("stored spec.{field} is {got}, expected {want}"));
                }
            }
            Ok(())
        }
        (Admit::Accept(_), Err(kube::Error::Api(status))) => Err(format!(
            "REJECTED (HTTP {}) but should be accepted: {}",
            status.code, status.message
        )),
        (Admit::Accept(_), Err(e)) => Err(format!("failed but should be accepted: {e}")),
        (Admit::Reject(_), Ok(obj)) => Err(format!(
            "ACCEPTED but should be rejected; stored spec: {}",
            obj.data["spec"]
        )),
        (Admit::Reject(field), Err(kube::Error::Api(status))) => {
            if status.code != 422 && status.code != 400 {
                return Err(format!(
                    "HTTP {} (want 422/400): {}",
                    status.code, status.message
                ));
            }
            if !status.message.contains(field) {
                return Err(format!(
                    "message does not name {field:?}: {}",
                    status.message
                ));
            }
            Ok(())
        }
        (Admit::Reject(_), Err(e)) => Err(format!("failed without an API status: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_table() {
    let cp = testbed::shared().await;
    install_crd(cp).await;
    let ns = cp
        .create_namespace("bad-admission")
        .await
        .expect("namespace");
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client(), &ns, &mapping_resource());
    let cases = admission_cases();
    let results: Vec<(usize, Result<(), String>)> = stream::iter(cases.iter().enumerate())
        .map(|(i, case)| {
            let api = api.clone();
            async move { (i, run_admission(&api, &format!("adm-{i:03}"), case).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut failures: Vec<String> = results
        .into_iter()
        .filter_map(|(i, r)| r.err().map(|e| format!("[{i:03}] {}: {e}", cases[i].label)))
        .collect();
    failures.sort();
    let bad = cases
        .iter()
        .filter(|c| matches!(c.expect, Admit::Reject(_)))
        .count();
    assert!(
        failures.is_empty(),
        "{} of {} admission rows ({} bad, {} good) misbehaved:\n{}",
        failures.len(),
        cases.len(),
        bad,
        cases.len() - bad,
        failures.join("\n")
    );
}

// ───────────────────── 2. Secrets (and other operator-judged input) ─────────────────────

/// What a Secret row's object must end up as.
const READY: &str = "Ready";

/// The simulator's accepted credentials in the secrets table.
const GOOD_TOKEN: &str = "dev-token";
const GOOD_EMAIL: &str = "ops@example.com";
const GOOD_KEY: &str = "c2547eb745079dac9320b638f5e225cf483cc";

/// One row: the Secret's data (`None`: no Secret at all) and the expected Ready reason.
struct SecretCase {
    label: &'static str,
    data: Option<Vec<(&'static str, Vec<u8>)>>,
    expect: &'static str,
    /// Values that must never appear in a status, an Event or the log.
    secrets: Vec<&'static str>,
}

fn secret_case(
    label: &'static str,
    data: &[(&'static str, &[u8])],
    expect: &'static str,
    secrets: &[&'static str],
) -> SecretCase {
    SecretCase {
        label,
        data: Some(data.iter().map(|(k, v)| (*k, v.to_vec())).collect()),
        expect,
        secrets: secrets.to_vec(),
    }
}

fn secret_cases() -> Vec<SecretCase> {
    let invalid = "CredentialsInvalid";
    let auth = "CloudflareAuthFailed";
    vec![
        SecretCase {
            label: "Secret does not exist",
            data: None,
            expect: "CredentialsMissing",
            secrets: vec![],
        },
        secret_case("Secret without data", &[], invalid, &[]),
        secret_case(
            "token under an unknown key name",
            &[("token", b"secretish-tok-a1")],
            invalid,
            &["secretish-tok-a1"],
        ),
        secret_case("empty apiToken", &[("apiToken", b"")], invalid, &[]),
        secret_case(
            "whitespace-only apiToken",
            &[("apiToken", b" \n\t ")],
            invalid,
            &[],
        ),
        secret_case(
            "apiToken not UTF-8",
            &[("apiToken", b"\xff\xfesecretish-tok-a2")],
            invalid,
            &["secretish-tok-a2"],
        ),
        secret_case(
            "apiToken with a space inside",
            &[("apiToken", b"secretish tok-a3")],
            invalid,
            &["secretish tok-a3", "tok-a3"],
        ),
        secret_case(
            "apiToken with a control character",
            &[("apiToken", b"secretish\x07tok-a4")],
            invalid,
            &["tok-a4"],
        ),
        secret_case(
            "apiToken with a non-ASCII character",
            &[("apiToken", "secretish-tök-a5".as_bytes())],
            invalid,
            &["secretish-tök-a5"],
        ),
        secret_case(
            "apiToken with a trailing newline (--from-file) is trimmed",
            &[("apiToken", b"dev-token\n")],
            READY,
            &[GOOD_TOKEN],
        ),
        secret_case(
            "apiToken with CRLF and spaces around is trimmed",
            &[("apiToken", b"  dev-token\r\n")],
            READY,
            &[GOOD_TOKEN],
        ),
        secret_case(
            "wrong apiToken",
            &[("apiToken", b"secretish-wrong-a6")],
            auth,
            &["secretish-wrong-a6"],
        ),
        secret_case(
            "good token and a bogus key pair: the token wins",
            &[
                ("apiToken", b"dev-token"),
                ("email", b"nobody@example.com"),
                ("apiKey", b"secretish-bogus-key-a7"),
            ],
            READY,
            &[GOOD_TOKEN, "secretish-bogus-key-a7"],
        ),
        secret_case(
            "wrong token and a good key pair: the token wins (and fails)",
            &[
                ("apiToken", b"secretish-wrong-a8"),
                ("email", GOOD_EMAIL.as_bytes()),
                ("apiKey", GOOD_KEY.as_bytes()),
            ],
            auth,
            &["secretish-wrong-a8", GOOD_KEY],
        ),
        secret_case(
            "empty token next to a good key pair is an error, not a silent fallback",
            &[
                ("apiToken", b""),
                ("email", GOOD_EMAIL.as_bytes()),
                ("apiKey", GOOD_KEY.as_bytes()),
            ],
            invalid,
            &[GOOD_KEY],
        ),
        secret_case(
            "email without apiKey",
            &[("email", GOOD_EMAIL.as_bytes())],
            invalid,
            &[],
        ),
        secret_case(
            "apiKey without email",
            &[("apiKey", b"secretish-key-a9")],
            invalid,
            &["secretish-key-a9"],
        ),
        secret_case(
            "empty apiKey with email",
            &[("email", GOOD_EMAIL.as_bytes()), ("apiKey", b"")],
            invalid,
            &[],
        ),
        secret_case(
            "apiKey not UTF-8",
            &[
                ("email", GOOD_EMAIL.as_bytes()),
                ("apiKey", b"\xc3\x28secretish-key-b1"),
            ],
            invalid,
            &["secretish-key-b1"],
        ),
        secret_case(
            "apiKey with a non-ASCII character",
            &[
                ("email", GOOD_EMAIL.as_bytes()),
                ("apiKey", "secretish-kéy-b2".as_bytes()),
            ],
            invalid,
            &["secretish-kéy-b2"],
        ),
        secret_case(
            "good email and apiKey (with a trailing newline)",
            &[
                ("email", GOOD_EMAIL.as_bytes()),
                ("apiKey", format!("{GOOD_KEY}\n").as_bytes()),
            ],
            READY,
            &[GOOD_KEY],
        ),
        secret_case(
            "wrong apiKey",
            &[
                ("email", GOOD_EMAIL.as_bytes()),
                ("apiKey", b"secretish-wrong-key-b3"),
            ],
            auth,
            &["secretish-wrong-key-b3"],
        ),
    ]
}

/// Spec values admission lets through on purpose (or that an older CRD let through): the
/// operator must judge them. `stored` rows are written straight to etcd, as objects created
/// under an earlier, looser CRD would be: a CRD change never re-validates stored objects.
struct JudgedCase {
    label: &'static str,
    ip: &'static str,
    vendor: &'static str,
    region: &'static str,
    stored: bool,
    expect: &'static str,
}

fn judged_cases() -> Vec<JudgedCase> {
    let rns = "RegionNotSupported";
    let bad_ip = "InvalidOriginIP";
    let row = |label, ip, vendor, region, stored, expect| JudgedCase {
        label,
        ip,
        vendor,
        region,
        stored,
        expect,
    };
    vec![
        row(
            "region in upper case",
            "192.0.2.61",
            "aws",
            "US-EAST-1",
            false,
            rns,
        ),
        row(
            "region of another vendor",
            "192.0.2.62",
            "aws",
            "us-central1",
            false,
            rns,
        ),
        row(
            "region nobody offers",
            "192.0.2.63",
            "gcp",
            "mars-north1",
            false,
            rns,
        ),
        row(
            "region with underscores",
            "192.0.2.64",
            "aws",
            "us_east_1",
            false,
            rns,
        ),
        row(
            "stored mapped IPv4 with octet 999",
            "::ffff:999.1.1.1",
            "aws",
            "us-east-1",
            true,
            bad_ip,
        ),
        row(
            "stored CIDR",
            "192.0.2.0/24",
            "aws",
            "us-east-1",
            true,
            bad_ip,
        ),
        row(
            "stored leading-zero octet",
            "192.0.02.1",
            "aws",
            "us-east-1",
            true,
            bad_ip,
        ),
        row(
            "stored hostname",
            "origin.example.com",
            "aws",
            "us-east-1",
            true,
            bad_ip,
        ),
    ]
}

/// Writes an object into etcd directly, bypassing admission (see [`JudgedCase`]).
async fn store_bypassing_admission(cp: &testbed::ControlPlane, ns: &str, name: &str, spec: Value) {
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rand::random::<u32>(),
        rand::random::<u16>(),
        rand::random::<u16>() & 0xfff,
        rand::random::<u16>() & 0xfff,
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    let obj = json!({
        "apiVersion": "originregions.io/v1alpha1",
        "kind": "OriginCloudRegionMapping",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "generation": 1,
            "creationTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
        "spec": spec,
    });
    let key = format!("/registry/originregions.io/origincloudregionmappings/{ns}/{name}");
    let body = json!({"key": base64(key.as_bytes()), "value": base64(obj.to_string().as_bytes())});
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/kv/put", cp.etcd_url()))
        .json(&body)
        .send()
        .await
        .expect("etcd put");
    assert!(resp.status().is_success(), "etcd put: {}", resp.status());
}

/// Standard base64 with padding (etcd's JSON gateway wants keys and values so).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Polls an object until `pred` holds or `timeout` passes; `Err` carries its last condition.
async fn wait_until(
    api: &Api<OriginCloudRegionMapping>,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&OriginCloudRegionMapping) -> bool,
) -> Result<OriginCloudRegionMapping, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| format!("get {name}: {e}"))?;
        if let Some(o) = &obj {
            if pred(o) {
                return Ok(o.clone());
            }
        }
        if Instant::now() > deadline {
            return Err(match obj {
                None => format!("{name} does not exist"),
                Some(o) => match o.ready_condition() {
                    Some(c) => format!(
                        "{name} is Ready={} reason {} after {timeout:?}: {}",
                        c.status, c.reason, c.message
                    ),
                    None => format!("{name} has no Ready condition after {timeout:?}"),
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Whether the object's Ready condition, for its current generation, has this outcome
/// (`READY` for status True, else a reason of status False).
fn has_outcome(o: &OriginCloudRegionMapping, expect: &str) -> bool {
    let current = o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation;
    current
        && o.ready_condition().is_some_and(|c| {
            if expect == READY {
                c.status == "True"
            } else {
                c.status == "False" && c.reason == expect
            }
        })
}

async fn event_notes(client: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            (
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_table() {
    let mut env = Env::without_operator(&[]).await;
    env.sim
        .set_auth(json!({"tokens": [GOOD_TOKEN], "auth_email": GOOD_EMAIL, "auth_key": GOOD_KEY}))
        .await;
    let cases = secret_cases();
    let judged = judged_cases();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let mut zones = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let (name, secret) = (format!("sec-{i:02}"), format!("creds-{i:02}"));
        if let Some(data) = &case.data {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(secret.clone()),
                    ..Default::default()
                },
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                        .collect(),
                ),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &s)
                .await
                .expect("create Secret");
        }
        let zone = random_zone();
        let mut m = env.mapping_in(
            &zone,
            &name,
            &format!("192.0.2.{}", 10 + i),
            "aws",
            "us-east-1",
        );
        m.spec.credentials_secret_ref = Some(SecretReference { name: secret });
        env.create(&m).await;
        zones.insert(name, zone);
    }
    for (i, case) in judged.iter().enumerate() {
        let name = format!("judged-{i:02}");
        let spec = json!({
            "zoneId": random_zone(),
            "originIp": case.ip,
            "vendor": case.vendor,
            "region": case.region,
        });
        if case.stored {
            store_bypassing_admission(env.cp, &env.ns, &name, spec).await;
        } else {
            env.api()
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "apiVersion": "originregions.io/v1alpha1",
                        "kind": "OriginCloudRegionMapping",
                        "metadata": {"name": name},
                        "spec": spec,
                    }))
                    .unwrap(),
                )
                .await
                .unwrap_or_else(|e| panic!("{}: admission refused it: {e}", case.label));
        }
    }
    env.start_operator(&[]);

    let api = env.api();
    let rows: Vec<(String, String, &'static str, Vec<&'static str>)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("sec-{i:02}"),
                c.label.to_string(),
                c.expect,
                c.secrets.clone(),
            )
        })
        .chain(judged.iter().enumerate().map(|(i, c)| {
            (
                format!("judged-{i:02}"),
                c.label.to_string(),
                c.expect,
                vec![],
            )
        }))
        .collect();
    let results: Vec<Option<String>> = stream::iter(rows.iter())
        .map(|(name, label, expect, secrets)| {
            let api = api.clone();
            async move {
                let o = match wait_until(&api, name, Duration::from_secs(45), |o| {
                    has_outcome(o, expect)
                })
                .await
                {
                    Ok(o) => o,
                    Err(e) => return Some(format!("{name} {label}: expected {expect}; {e}")),
                };
                let c = o.ready_condition().unwrap();
                if c.message.is_empty() {
                    return Some(format!("{name} {label}: empty message"));
                }
                if let Some(s) = secrets.iter().find(|s| c.message.contains(**s)) {
                    return Some(format!(
                        "{name} {label}: message leaks {s:?}: {}",
                        c.message
                    ));
                }
                None
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut failures: Vec<String> = results.into_iter().flatten().collect();

    // Ready rows really applied their mapping; the rest wrote nothing.
    for (i, case) in cases.iter().enumerate() {
        let name = format!("sec-{i:02}");
        let remote = env.remote(&zones[&name]).await;
        let want = usize::from(case.expect == READY);
        if remote.len() != want {
            failures.push(format!("{name} {}: remote holds {remote:?}", case.label));
        }
    }
    // Stay a while: terminal outcomes must not turn into a retry loop or a change of mind.
    let before = env.sim.requests_total().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = env.sim.requests_total().await;
    if after - before > 4 {
        failures.push(format!(
            "{} Cloudflare requests in 3 s of steady state (hot loop?)",
            after - before
        ));
    }
    for (name, label, expect, _) in &rows {
        let o = api.get(name).await.expect("get");
        if !has_outcome(&o, expect) {
            failures.push(format!(
                "{name} {label}: changed its mind: {:?}",
                o.ready_condition()
            ));
        }
    }
    let all_secrets: Vec<&str> = cases
        .iter()
        .flat_map(|c| c.secrets.iter().copied())
        .collect();
    for (object, note) in event_notes(&env.client, &env.ns).await {
        if let Some(s) = all_secrets.iter().find(|s| note.contains(**s)) {
            failures.push(format!("Event on {object} leaks {s:?}: {note}"));
        }
    }
    let log = env.op().log();
    for s in &all_secrets {
        if log.contains(s) {
            failures.push(format!("operator log contains the secret {s:?}"));
        }
    }
    if log.contains("panicked") {
        failures.push("operator panicked".into());
    }
    if !env.op_mut().is_running() {
        failures.push("operator exited".into());
    }
    assert!(
        failures.is_empty(),
        "{} of {} secret/judged rows misbehaved:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

// ───────────────────────────── 3. Hostile Cloudflare ─────────────────────────────

/// How a hostile answer must be classified.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// May pass by itself: CloudflareUnavailable, retried with backoff; a delete is not
    /// declared blocked, just retried.
    Transient,
    /// Retrying repeats it: CloudflareRejected, no retry loop; a delete is DeletionBlocked.
    Terminal,
    /// Cloudflare said what is wrong: this reason; a delete is DeletionBlocked.
    Reason(&'static str),
}

impl Class {
    fn write_reason(self) -> &'static str {
        match self {
            Class::Transient => "CloudflareUnavailable",
            Class::Terminal => "CloudflareRejected",
            Class::Reason(r) => r,
        }
    }

    fn delete_reason(self) -> &'static str {
        // Whatever the cause, a delete that cannot proceed says so and names force-orphan
        // (a transient cause is retried meanwhile).
        "DeletionBlocked"
    }
}

struct HostileCase {
    label: &'static str,
    behaviour: Misbehave,
    class: Class,
}

fn hostile_cases() -> Vec<HostileCase> {
    use Class::*;
    use Misbehave as M;
    let row = |label, behaviour, class| HostileCase {
        label,
        behaviour,
        class,
    };
    vec![
        row("malformed JSON", M::MalformedJson, Terminal),
        row(
            "HTML with text/html content type",
            M::WrongContentType,
            Terminal,
        ),
        row("empty body on 200", M::EmptyBody, Transient),
        row(
            "body shorter than Content-Length",
            M::TruncatedByLength,
            Transient,
        ),
        row(
            "JSON cut off, connection closed",
            M::TruncatedJson,
            Transient,
        ),
        row(
            "success:false on HTTP 200, no errors",
            M::SuccessFalseOn200,
            Terminal,
        ),
        row(
            "success:false on HTTP 200, unknown code",
            M::UnknownCodeOn200,
            Terminal,
        ),
        row(
            "unknown error code on HTTP 400",
            M::UnknownCodeOn400,
            Terminal,
        ),
        row(
            "unknown error code on HTTP 503",
            M::UnknownCodeOn503,
            Transient,
        ),
        row("result of the wrong shape", M::WrongShapeResult, Terminal),
        row("JSON null body", M::NullBody, Terminal),
        row("success as a string", M::StringlySuccess, Terminal),
        row("9 MiB body with Content-Length", M::HugeDeclared, Terminal),
        row("9 MiB chunked body", M::HugeChunked, Terminal),
        row("headers then a stall", M::StallAfterHeaders, Transient),
        row("no answer at all", M::NeverAnswer, Transient),
        row(
            "connection closed without a byte",
            M::CloseAtOnce,
            Transient,
        ),
        row("non-HTTP bytes", M::NotHttp, Transient),
        row(
            "307 redirect to another URL",
            M::RedirectElsewhere,
            Terminal,
        ),
        row(
            "429 with Retry-After 1e300",
            M::RateLimited("1e300"),
            Transient,
        ),
        row(
            "429 with Retry-After u64::MAX",
            M::RateLimited("18446744073709551615"),
            Transient,
        ),
        row(
            "429 with Retry-After in the year 9999",
            M::RateLimited("Fri, 31 Dec 9999 23:59:59 GMT"),
            Transient,
        ),
        row(
            "error text echoing the credential",
            M::EchoesCredentials,
            Terminal,
        ),
        row("502 HTML page from a proxy", M::ProxyHtml502, Transient),
        row(
            "400 code 1146 invalid IP",
            M::InvalidIp,
            Reason("InvalidOriginIP"),
        ),
    ]
}

/// One hostile row, in its own namespace, simulator, operator (`--request-timeout 2s
/// --max-attempts 2`) and hostile server. "Nothing already applied is lost" is checked by
/// keeping a mapping that was applied *before* the server turned hostile, with the simulator
/// as the backing store behind the hostile server:
///
/// 0. The server forwards everything: `keeper` (192.0.2.10) becomes Ready and is stored.
/// 1. Writes turn hostile; `victim` (192.0.2.11) is created: it must get the row's reason
///    while `keeper` stays Ready=True and stored, and the operator must not hammer the server.
/// 2. `keeper` is deleted: its remote delete meets the hostile answer, so the object must stay
///    (finalizer held) with a reason saying why, and the stored entry must stay.
/// 3. Everything turns hostile, list included, and the operator restarts with an empty cache:
///    the failed list must be reported on the objects, never read as "the zone is empty".
///
/// Throughout: the operator never panics or exits, no redirect is followed, the credential
/// never shows in a status, and the stored entry of `keeper` is never removed.
async fn run_hostile(case: &HostileCase) -> Vec<String> {
    let mut fails = Vec::new();
    let mut env = Env::without_operator(&[]).await;
    let hostile = Hostile::start(env.sim.origin(), case.behaviour.clone()).await;
    let mut args = env.base_args();
    let url = args
        .iter()
        .position(|a| a == "--cloudflare-api-url")
        .unwrap()
        + 1;
    args[url] = hostile.base_url();
    args.extend(["--request-timeout", "2s", "--max-attempts", "2"].map(String::from));
    env.op = Some(Operator::start(env.cp.kubeconfig_path(), &args));
    let api = env.api();
    let wait = Duration::from_secs(45);
    let keeper_stored = |remote: &BTreeMap<String, (String, String)>| {
        remote.get("192.0.2.10") == Some(&("aws".to_string(), "us-east-1".to_string()))
    };

    // 0. Applied before the trouble starts.
    env.create(&env.mapping("keeper", "192.0.2.10", "aws", "us-east-1"))
        .await;
    if let Err(e) = wait_until(&api, "keeper", wait, |o| has_outcome(o, READY)).await {
        return vec![format!("setup: keeper never Ready through the proxy: {e}")];
    }

    // 1. Hostile writes.
    hostile.set_scope(Scope::Writes);
    env.create(&env.mapping("victim", "192.0.2.11", "aws", "us-east-1"))
        .await;
    let want = case.class.write_reason();
    match wait_until(&api, "victim", wait, |o| has_outcome(o, want)).await {
        Ok(o) => {
            let msg = &o.ready_condition().unwrap().message;
            if msg.contains(GOOD_TOKEN) {
                fails.push(format!("write: message leaks the token: {msg}"));
            }
        }
        Err(e) => fails.push(format!("write: expected {want}; {e}")),
    }
    if hostile.hostile_total() == 0 {
        fails.push("write: the hostile server was never asked".into());
    }
    let before = hostile.hostile_total() + hostile.forwarded();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = hostile.hostile_total() + hostile.forwarded() - before;
    let limit = match case.class {
        Class::Transient => 12,
        _ => 2,
    };
    if calls > limit {
        fails.push(format!(
            "write: {calls} requests in 3 s after the verdict (limit {limit})"
        ));
    }
    match api.get("keeper").await {
        Ok(k) if has_outcome(&k, READY) => {}
        Ok(k) => fails.push(format!(
            "write: keeper lost Ready: {:?}",
            k.ready_condition()
        )),
        Err(e) => fails.push(format!("write: get keeper: {e}")),
    }
    if !keeper_stored(&env.remote(&env.zone).await) {
        fails.push("write: keeper's stored entry changed".into());
    }

    // 2. Deleting an applied mapping through a hostile server.
    if let Err(e) = api.delete("keeper", &DeleteParams::default()).await {
        fails.push(format!("delete: {e}"));
    }
    let want = case.class.delete_reason();
    match wait_until(&api, "keeper", wait, |o| has_outcome(o, want)).await {
        Ok(o) if !o.has_finalizer() => {
            fails.push("delete: finalizer gone while the remote delete failed".into())
        }
        Ok(_) => {}
        Err(e) => fails.push(format!("delete: expected {want}; {e}")),
    }
    if !keeper_stored(&env.remote(&env.zone).await) {
        fails.push("delete: keeper's stored entry changed".into());
    }

    // 3. Everything hostile, cold cache.
    hostile.set_scope(Scope::Everything);
    let lists_before = hostile.hostile_counts().get("list").copied().unwrap_or(0);
    env.op_mut().restart();
    let want = case.class.write_reason();
    let listed = wait_until(&api, "victim", wait, |o| {
        has_outcome(o, want)
            && o.ready_condition()
                .is_some_and(|c| c.message.contains("cloudflare list"))
    })
    .await;
    if let Err(e) = listed {
        fails.push(format!("list: expected {want} from a failed list; {e}"));
    }
    if hostile.hostile_counts().get("list").copied().unwrap_or(0) <= lists_before {
        fails.push("list: the operator never listed after its restart".into());
    }
    let remote = env.remote(&env.zone).await;
    if !keeper_stored(&remote) || remote.contains_key("192.0.2.11") {
        fails.push(format!("end: stored entries changed: {remote:?}"));
    }
    if api.get_opt("keeper").await.ok().flatten().is_none() {
        fails.push("end: keeper was released although its remote delete never succeeded".into());
    }
    for o in api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if let Some(c) = o.ready_condition() {
            if c.message.contains(GOOD_TOKEN) {
                fails.push(format!("end: status leaks the token: {}", c.message));
            }
        }
    }
    for (object, note) in event_notes(&env.client, &env.ns).await {
        if note.contains(GOOD_TOKEN) {
            fails.push(format!("end: Event on {object} leaks the token: {note}"));
        }
    }
    if hostile.stolen() > 0 {
        fails.push(format!(
            "end: {} requests followed the redirect",
            hostile.stolen()
        ));
    }
    let log = env.op().log();
    if log.contains("panicked") {
        let line = log.lines().find(|l| l.contains("panicked")).unwrap_or("");
        fails.push(format!("end: operator panicked: {line}"));
    }
    if !env.op_mut().is_running() {
        fails.push("end: operator exited".into());
    }
    fails
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_responses_table() {
    let cases: Vec<Arc<HostileCase>> = hostile_cases().into_iter().map(Arc::new).collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(9));
    let tasks: Vec<_> = cases
        .iter()
        .map(|case| {
            let (case, gate) = (case.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                run_hostile(&case).await
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (case, task) in cases.iter().zip(tasks) {
        match task.await {
            Ok(fails) => failures.extend(fails.into_iter().map(|f| format!("{}: {f}", case.label))),
            Err(e) => failures.push(format!("{}: the case itself panicked: {e}", case.label)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems across {} hostile rows:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ───────────────────────────── The count ─────────────────────────────

#[test]
fn the_tables_hold_at_least_100_bad_inputs() {
    let admission = admission_cases();
    let bad_admission = admission
        .iter()
        .filter(|c| matches!(c.expect, Admit::Reject(_)))
        .count();
    let good_admission = admission.len() - bad_admission;
    let secrets = secret_cases().len() + judged_cases().len();
    let hostile = hostile_cases().len();
    let total = admission.len() + secrets + hostile;
    println!(
        "admission {} ({bad_admission} bad, {good_admission} good), secrets/judged {secrets}, \
         hostile {hostile}: {total} rows",
        admission.len()
    );
    assert!(good_admission >= 10, "{good_admission} good admission rows");
    assert!(
        bad_admission + secrets + hostile >= 100,
        "only {} bad inputs",
        bad_admission + secrets + hostile
    );
}
