//! Drives `cf-origin-sim` over real HTTP with reqwest: every operation of both path
//! families, every error code, auth, faults, rate limiting, admin routes and persistence.

mod support;

use std::time::{Duration, Instant};

use origin_region_operator::wire::MappingInput;
use reqwest::Method;
use serde_json::{json, Value};
use support::sim::Sim;

const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const Z2: &str = "9a7806061c88ada191ed06f989cc3dac";

fn cur(path: &str) -> String {
    format!("/zones/{Z}/origin/cloud_regions{path}")
}

fn old(path: &str) -> String {
    format!("/zones/{Z}/cache/origin_cloud_regions{path}")
}

fn input(ip: &str, vendor: &str, region: &str) -> MappingInput {
    MappingInput {
        origin_ip: ip.into(),
        vendor: vendor.into(),
        region: region.into(),
    }
}

/// Asserts a failure envelope with one error of `code`; returns its message.
#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, code: i64) -> String {
    let (s, body) = got;
    assert_eq!(*s, status, "status; body {body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[track_caller]
fn assert_ok(got: &(u16, Value)) -> Value {
    let (s, body) = got;
    assert_eq!(*s, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["errors"], json!([]), "{body}");
    body["result"].clone()
}

async fn put(sim: &Sim, ip: &str, vendor: &str, region: &str) -> (u16, Value) {
    let path = cur(&format!("/{ip}"));
    let body = json!({"origin_ip": ip, "vendor": vendor, "region": region});
    sim.api(Method::PUT, &path, Some(body)).await
}

#[tokio::test]
async fn current_family_crud() {
    let sim = Sim::start_default();
    let empty = sim.api(Method::GET, &cur(""), None).await;
    assert_eq!(assert_ok(&empty), json!([]));
    assert_eq!(
        empty.1["result_info"],
        json!({"count": 0, "page": 1, "per_page": 20, "total_count": 0, "total_pages": 0})
    );

    let created = assert_ok(&put(&sim, "192.0.2.1", "aws", "us-east-1").await);
    assert_eq!(created["origin_ip"], "192.0.2.1");
    assert_eq!(created["vendor"], "aws");
    assert_eq!(created["region"], "us-east-1");
    let t1 = created["modified_on"].as_str().unwrap().to_string();
    jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.fZ", &t1)
        .or_else(|_| t1.parse::<jiff::Timestamp>())
        .expect("modified_on is RFC 3339");
    assert!(t1.ends_with('Z'));

    let got = assert_ok(&sim.api(Method::GET, &cur("/192.0.2.1"), None).await);
    assert_eq!(got, created);

    // Same body again: idempotent, modified_on unchanged.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = assert_ok(&put(&sim, "192.0.2.1", "aws", "us-east-1").await);
    assert_eq!(again["modified_on"], t1.as_str());

    // Replace: new region, new modified_on.
    let replaced = assert_ok(&put(&sim, "192.0.2.1", "aws", "us-west-2").await);
    assert_eq!(replaced["region"], "us-west-2");
    assert_ne!(replaced["modified_on"], t1.as_str());

    assert_ok(&put(&sim, "198.51.100.7", "gcp", "us-central1").await);
    let list = sim.api(Method::GET, &cur(""), None).await;
    let items = assert_ok(&list);
    let ips: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["origin_ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["192.0.2.1", "198.51.100.7"]);
    assert_eq!(list.1["result_info"]["total_count"], 2);
    assert_eq!(list.1["result_info"]["total_pages"], 1);

    let deleted = assert_ok(&sim.api(Method::DELETE, &cur("/192.0.2.1"), None).await);
    assert_eq!(deleted, json!({"origin_ip": "192.0.2.1"}));
    assert_error(
        &sim.api(Method::GET, &cur("/192.0.2.1"), None).await,
        404,
        1142,
    );
    assert_error(
        &sim.api(Method::DELETE, &cur("/192.0.2.1"), None).await,
        404,
        1142,
    );
    assert_eq!(sim.dump_zone(Z).await.len(), 1);
    // Another zone is independent.
    assert!(sim.dump_zone(Z2).await.is_empty());
}

#[tokio::test]
async fn ipv6_canonicalisation_through_path_and_body() {
    let sim = Sim::start_default();
    // Percent-encoded, upper-case, uncompressed path; differently spelled body.
    let path = cur("/2001%3A0DB8%3A0%3A0%3A0%3A0%3A0%3A1");
    let body = json!({"origin_ip": "2001:db8::0:1", "vendor": "gcp", "region": "europe-west1"});
    let r = assert_ok(&sim.api(Method::PUT, &path, Some(body)).await);
    assert_eq!(r["origin_ip"], "2001:db8::1");
    let got = assert_ok(&sim.api(Method::GET, &cur("/2001:DB8::1"), None).await);
    assert_eq!(got["origin_ip"], "2001:db8::1");

    // IPv4-mapped IPv6 is canonicalised to the dotted tail.
    let body = json!({"origin_ip": "::FFFF:c000:0201", "vendor": "aws", "region": "us-east-1"});
    let r = assert_ok(
        &sim.api(Method::PUT, &cur("/::ffff:192.0.2.1"), Some(body))
            .await,
    );
    assert_eq!(r["origin_ip"], "::ffff:192.0.2.1");

    // Batch items and deletes canonicalise too; one address is one mapping.
    let batch = json!([{"origin_ip": "2001:0db8::0001", "vendor": "aws", "region": "us-east-2"}]);
    let r = assert_ok(&sim.api(Method::PUT, &cur("/batch"), Some(batch)).await);
    assert_eq!(r["succeeded"][0]["origin_ip"], "2001:db8::1");
    let dump = sim.dump_zone(Z).await;
    assert_eq!(dump.len(), 2);
    // Byte order of the canonical strings: '2' sorts before ':'.
    assert_eq!(dump[0].origin_ip, "2001:db8::1");
    assert_eq!(dump[0].region, "us-east-2");
    assert_eq!(dump[1].origin_ip, "::ffff:192.0.2.1");
    let r = assert_ok(&sim.api(Method::DELETE, &cur("/2001:db8:0::1"), None).await);
    assert_eq!(r["origin_ip"], "2001:db8::1");
}

#[tokio::test]
async fn put_validation_errors() {
    let sim = Sim::start_default();
    let msg = assert_error(&put(&sim, "not-an-ip", "aws", "us-east-1").await, 400, 1146);
    assert_eq!(msg, "Invalid or missing origin IP address.");
    assert_error(
        &put(&sim, "192.0.2.0%2F24", "aws", "us-east-1").await,
        400,
        1146,
    );
    assert_error(
        &put(&sim, "192.0.02.1", "aws", "us-east-1").await,
        400,
        1146,
    );

    let mismatch = json!({"origin_ip": "192.0.2.2", "vendor": "aws", "region": "us-east-1"});
    let r = sim
        .api(Method::PUT, &cur("/192.0.2.1"), Some(mismatch))
        .await;
    assert!(assert_error(&r, 400, 1146).contains("does not match"));
    let missing = json!({"vendor": "aws", "region": "us-east-1"});
    let r = sim
        .api(Method::PUT, &cur("/192.0.2.1"), Some(missing))
        .await;
    assert_error(&r, 400, 1146);

    let msg = assert_error(&put(&sim, "192.0.2.1", "ibm", "us-east-1").await, 400, 1157);
    assert_eq!(
        msg,
        "The vendor provided doesn't exist or the region provided does not exist for the specified cloud vendor"
    );
    assert_error(
        &put(&sim, "192.0.2.1", "aws", "mars-north-1").await,
        400,
        1157,
    );
    assert_error(&put(&sim, "192.0.2.1", "aws", "").await, 400, 1157);
    let no_region = json!({"origin_ip": "192.0.2.1", "vendor": "aws"});
    assert_error(
        &sim.api(Method::PUT, &cur("/192.0.2.1"), Some(no_region))
            .await,
        400,
        1157,
    );
    let msg = assert_error(
        &put(&sim, "192.0.2.1", "aws", "us-central1").await,
        400,
        1156,
    );
    assert_eq!(msg, "Failed to validate region against cloud vendor");

    // Malformed JSON and wrong shapes.
    let resp = sim
        .http()
        .put(format!("{}{}", sim.base_url(), cur("/192.0.2.1")))
        .bearer_auth("dev-token")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let r = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    assert_error(&r, 400, 10001);
    let r = sim
        .api(Method::PUT, &cur("/192.0.2.1"), Some(json!([1])))
        .await;
    assert_error(&r, 400, 10001);
    let r = sim
        .api(Method::PUT, &cur("/batch"), Some(json!({"a": 1})))
        .await;
    assert_error(&r, 400, 10001);
    assert!(sim.dump_zone(Z).await.is_empty());
}

#[tokio::test]
async fn zone_limit_1164() {
    let sim = Sim::start(&["--max-mappings", "3"]);
    for i in 1..=3 {
        assert_ok(&put(&sim, &format!("192.0.2.{i}"), "aws", "us-east-1").await);
    }
    let msg = assert_error(&put(&sim, "192.0.2.4", "aws", "us-east-1").await, 403, 1164);
    assert_eq!(msg, "Maximum number of IP mappings configured for zone.");
    // Replacing an existing IP at the limit is fine.
    assert_ok(&put(&sim, "192.0.2.3", "azure", "eastus").await);

    // Batch put: existing IPs succeed, new ones fail one by one.
    let batch = json!([
        {"origin_ip": "192.0.2.1", "vendor": "oci", "region": "us-ashburn-1"},
        {"origin_ip": "192.0.2.9", "vendor": "aws", "region": "us-east-1"},
    ]);
    let r = assert_ok(&sim.api(Method::PUT, &cur("/batch"), Some(batch)).await);
    assert_eq!(r["succeeded"].as_array().unwrap().len(), 1);
    assert_eq!(r["failed"][0]["origin_ip"], "192.0.2.9");
    assert_eq!(
        r["failed"][0]["error"],
        "Maximum number of IP mappings configured for zone."
    );

    // Older family: create and edit of a new IP fail; batch fails as a whole.
    let body = json!({"ip": "192.0.2.5", "vendor": "aws", "region": "us-east-1"});
    assert_error(
        &sim.api(Method::POST, &old(""), Some(body.clone())).await,
        403,
        1164,
    );
    assert_error(
        &sim.api(Method::PATCH, &old(""), Some(body)).await,
        403,
        1164,
    );
    let batch = json!([
        {"ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"},
        {"ip": "192.0.2.6", "vendor": "aws", "region": "us-east-1"},
    ]);
    assert_error(
        &sim.api(Method::PATCH, &old("/batch"), Some(batch)).await,
        403,
        1164,
    );
    let dump = sim.dump_zone(Z).await;
    assert_eq!(dump.len(), 3);
    assert_eq!(dump[0].vendor, "oci", "the whole legacy batch was refused");

    // Freeing a slot lets a new IP in.
    assert_ok(&sim.api(Method::DELETE, &cur("/192.0.2.2"), None).await);
    assert_ok(&put(&sim, "192.0.2.4", "aws", "us-east-1").await);
}

#[tokio::test]
async fn batch_put_semantics() {
    let sim = Sim::start_default();
    sim.seed_zone(Z, &[input("203.0.113.1", "aws", "eu-west-1")])
        .await;
    let batch = json!([
        {"origin_ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"},
        {"origin_ip": "2001:db8::1", "vendor": "gcp", "region": "us-central1"},
        {"origin_ip": "bogus", "vendor": "aws", "region": "us-east-1"},
        {"vendor": "aws", "region": "us-east-1"},
        {"origin_ip": "192.0.2.2", "vendor": "nope", "region": "us-east-1"},
        {"origin_ip": "192.0.2.3", "vendor": "azure", "region": "us-central1"},
        {"origin_ip": "192.0.2.1", "vendor": "aws", "region": "us-west-2"},
    ]);
    let r = assert_ok(&sim.api(Method::PUT, &cur("/batch"), Some(batch)).await);
    let succeeded = r["succeeded"].as_array().unwrap();
    assert_eq!(succeeded.len(), 3);
    assert_eq!(
        succeeded[0],
        json!({"origin_ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"})
    );
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 4);
    assert_eq!(failed[0]["origin_ip"], "bogus");
    assert_eq!(failed[0]["error"], "Invalid or missing origin IP address.");
    assert_eq!(failed[1]["origin_ip"], "");
    assert_eq!(
        failed[2]["error"],
        "The vendor provided doesn't exist or the region provided does not exist for the specified cloud vendor"
    );
    assert_eq!(
        failed[3]["error"],
        "Failed to validate region against cloud vendor"
    );
    assert!(failed[0].get("vendor").is_none());

    let dump = sim.dump_zone(Z).await;
    let ips: Vec<_> = dump.iter().map(|m| m.origin_ip.as_str()).collect();
    assert_eq!(
        ips,
        ["192.0.2.1", "2001:db8::1", "203.0.113.1"],
        "merge keeps others"
    );
    assert_eq!(dump[0].region, "us-west-2", "last duplicate wins");

    let empty = assert_ok(&sim.api(Method::PUT, &cur("/batch"), Some(json!([]))).await);
    assert_eq!(empty, json!({"failed": [], "succeeded": []}));

    let too_many: Vec<Value> = (0..101)
        .map(
            |i| json!({"origin_ip": format!("10.0.0.{i}"), "vendor": "aws", "region": "us-east-1"}),
        )
        .collect();
    let r = sim
        .api(Method::PUT, &cur("/batch"), Some(json!(too_many)))
        .await;
    assert_error(&r, 400, 10001);
    let exactly: Vec<Value> = (0..100)
        .map(
            |i| json!({"origin_ip": format!("10.0.0.{i}"), "vendor": "aws", "region": "us-east-1"}),
        )
        .collect();
    let r = assert_ok(
        &sim.api(Method::PUT, &cur("/batch"), Some(json!(exactly)))
            .await,
    );
    assert_eq!(r["succeeded"].as_array().unwrap().len(), 100);
    assert_eq!(sim.dump_zone(Z).await.len(), 103);
}

#[tokio::test]
async fn batch_delete_semantics() {
    let sim = Sim::start_default();
    sim.seed_zone(
        Z,
        &[
            input("192.0.2.1", "aws", "us-east-1"),
            input("2001:db8::1", "gcp", "us-central1"),
            input("192.0.2.3", "oci", "us-ashburn-1"),
        ],
    )
    .await;
    // No body (as the Python SDK sends): nothing deleted, success.
    let resp = sim
        .http()
        .delete(format!("{}{}", sim.base_url(), cur("/batch")))
        .bearer_auth("dev-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"], json!({"failed": [], "succeeded": []}));

    let items = json!([
        {"origin_ip": "192.0.2.1"},
        {"origin_ip": "2001:DB8:0::1"},
        {"origin_ip": "192.0.2.99"},
        {"origin_ip": "nonsense"},
        {"origin_ip": "192.0.2.1"},
    ]);
    let r = assert_ok(&sim.api(Method::DELETE, &cur("/batch"), Some(items)).await);
    assert_eq!(
        r["succeeded"],
        json!([
            {"origin_ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"},
            {"origin_ip": "2001:db8::1", "vendor": "gcp", "region": "us-central1"},
        ])
    );
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["origin_ip"], "192.0.2.99");
    assert_eq!(
        failed[0]["error"],
        "No origin cloud region mapping exists for the specified IP."
    );
    assert_eq!(failed[1]["error"], "Invalid or missing origin IP address.");
    assert_eq!(failed[2]["origin_ip"], "192.0.2.1");
    assert_eq!(sim.dump_zone(Z).await.len(), 1);

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"origin_ip": format!("10.0.0.{i}")}))
        .collect();
    let r = sim
        .api(Method::DELETE, &cur("/batch"), Some(json!(too_many)))
        .await;
    assert_error(&r, 400, 10001);
}

#[tokio::test]
async fn pagination_edges() {
    let sim = Sim::start_default();
    let seed: Vec<MappingInput> = (0..250)
        .map(|i| input(&format!("10.{}.{}.1", i / 100, i % 100), "aws", "us-east-1"))
        .collect();
    sim.seed_zone(Z, &seed).await;

    for bad in [
        "per_page=0",
        "per_page=101",
        "per_page=-1",
        "per_page=abc",
        "per_page=",
    ] {
        let r = sim.api(Method::GET, &cur(&format!("?{bad}")), None).await;
        let msg = assert_error(&r, 400, 1146);
        assert_eq!(
            msg, "invalid per_page parameter, must be between 1 and 100",
            "{bad}"
        );
    }
    for bad in ["page=0", "page=-3", "page=x"] {
        assert_error(
            &sim.api(Method::GET, &cur(&format!("?{bad}")), None).await,
            400,
            1146,
        );
    }

    let r = sim.api(Method::GET, &cur(""), None).await;
    assert_eq!(assert_ok(&r).as_array().unwrap().len(), 20);
    assert_eq!(
        r.1["result_info"],
        json!({"count": 20, "page": 1, "per_page": 20, "total_count": 250, "total_pages": 13})
    );
    let r = sim
        .api(Method::GET, &cur("?per_page=1&page=250"), None)
        .await;
    assert_eq!(assert_ok(&r).as_array().unwrap().len(), 1);
    assert_eq!(r.1["result_info"]["total_pages"], 250);

    let mut all = Vec::new();
    for page in 1..=3 {
        let r = sim
            .api(
                Method::GET,
                &cur(&format!("?per_page=100&page={page}")),
                None,
            )
            .await;
        let items = assert_ok(&r);
        let n = items.as_array().unwrap().len();
        assert_eq!(n, if page < 3 { 100 } else { 50 });
        assert_eq!(r.1["result_info"]["count"], n);
        assert_eq!(r.1["result_info"]["total_pages"], 3);
        all.extend(
            items
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["origin_ip"].as_str().unwrap().to_string()),
        );
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all.len(), 250);
    assert_eq!(
        all, sorted,
        "pages are ordered by canonical IP and disjoint"
    );

    let r = sim
        .api(Method::GET, &cur("?per_page=100&page=4"), None)
        .await;
    assert_eq!(assert_ok(&r), json!([]));
    assert_eq!(
        r.1["result_info"],
        json!({"count": 0, "page": 4, "per_page": 100, "total_count": 250, "total_pages": 3})
    );
}

#[tokio::test]
async fn supported_regions_and_tiered_cache_precondition() {
    let sim = Sim::start_default();
    let r = assert_ok(&sim.api(Method::GET, &cur("/supported_regions"), None).await);
    assert_eq!(r["obtained_codes"], true);
    let vendors = r["vendors"].as_object().unwrap();
    assert_eq!(vendors.len(), 4);
    for v in ["aws", "azure", "gcp", "oci"] {
        let regions = vendors[v].as_array().unwrap();
        assert!(regions.len() >= 8, "{v}");
        assert!(regions
            .iter()
            .all(|r| r["upper_tier_colos"].as_array().is_some()));
    }
    let us_east_1 = vendors["aws"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "us-east-1")
        .unwrap();
    assert_eq!(us_east_1["upper_tier_colos"], json!(["IAD", "EWR"]));
    let legacy = assert_ok(&sim.api(Method::GET, &old("/supported_regions"), None).await);
    assert_eq!(legacy, r);

    sim.set_tiered_cache(Z, false).await;
    assert_eq!(sim.dump_zone_raw(Z).await["tiered_cache"], false);
    assert_error(
        &sim.api(Method::GET, &cur("/supported_regions"), None).await,
        400,
        1155,
    );
    assert_error(
        &sim.api(Method::GET, &old("/supported_regions"), None).await,
        400,
        1155,
    );
    // Other operations are unaffected, and other zones too.
    assert_ok(&put(&sim, "192.0.2.1", "aws", "us-east-1").await);
    assert_ok(&sim.api(Method::GET, &cur(""), None).await);
    let other = format!("/zones/{Z2}/origin/cloud_regions/supported_regions");
    assert_ok(&sim.api(Method::GET, &other, None).await);
    sim.set_tiered_cache(Z, true).await;
    assert_ok(&sim.api(Method::GET, &cur("/supported_regions"), None).await);
}

#[tokio::test]
async fn custom_regions_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regions.json");
    std::fs::write(
        &path,
        r#"{"aws": [{"name": "moon-base-1", "upper_tier_colos": ["XYZ"]}], "gcp": [{"name": "europe-west1", "upper_tier_colos": []}]}"#,
    )
    .unwrap();
    let sim = Sim::start(&["--regions", path.to_str().unwrap()]);
    let r = assert_ok(&sim.api(Method::GET, &cur("/supported_regions"), None).await);
    assert_eq!(
        r["vendors"]["aws"],
        json!([{"name": "moon-base-1", "upper_tier_colos": ["XYZ"]}])
    );
    assert_ok(&put(&sim, "192.0.2.1", "aws", "moon-base-1").await);
    assert_error(&put(&sim, "192.0.2.1", "aws", "us-east-1").await, 400, 1157);
    assert_error(
        &put(&sim, "192.0.2.1", "aws", "europe-west1").await,
        400,
        1156,
    );
}

#[tokio::test]
async fn legacy_family() {
    let sim = Sim::start_default();
    let body = json!({"ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"});
    let r = assert_ok(&sim.api(Method::POST, &old(""), Some(body.clone())).await);
    assert_eq!(r["id"], "origin_public_cloud_region");
    assert_eq!(r["editable"], true);
    assert_eq!(r["value"]["origin-ip"], "192.0.2.1");
    assert_eq!(r["value"]["vendor"], "aws");
    assert_eq!(r["modified_on"], r["value"]["modified_on"]);
    let msg = assert_error(
        &sim.api(Method::POST, &old(""), Some(body)).await,
        400,
        1145,
    );
    assert_eq!(
        msg,
        "Unable to create new origin_public_cloud_region setting. The zone setting already exists."
    );
    let bad_ip = json!({"ip": "1.2.3", "vendor": "aws", "region": "us-east-1"});
    assert_error(
        &sim.api(Method::POST, &old(""), Some(bad_ip)).await,
        400,
        1146,
    );
    let bad_vendor = json!({"ip": "192.0.2.9", "vendor": "aws", "region": "westeurope"});
    assert_error(
        &sim.api(Method::PATCH, &old(""), Some(bad_vendor)).await,
        400,
        1156,
    );

    // PATCH edit: upsert, whole list back.
    let edit = json!({"ip": "2001:DB8::1", "vendor": "gcp", "region": "us-central1"});
    let r = assert_ok(&sim.api(Method::PATCH, &old(""), Some(edit)).await);
    let value = r["value"].as_array().unwrap();
    assert_eq!(value.len(), 2);
    assert_eq!(value[1]["origin-ip"], "2001:db8::1");
    assert!(r["modified_on"].is_string());

    // Shared store with the current family.
    let got = assert_ok(&sim.api(Method::GET, &cur("/2001:db8::1"), None).await);
    assert_eq!(got["vendor"], "gcp");

    // PATCH batch.
    let batch = json!([
        {"ip": "192.0.2.1", "vendor": "azure", "region": "westeurope"},
        {"ip": "192.0.2.2", "vendor": "oci", "region": "us-ashburn-1"},
        {"ip": "x", "vendor": "oci", "region": "us-ashburn-1"},
    ]);
    let r = assert_ok(&sim.api(Method::PATCH, &old("/batch"), Some(batch)).await);
    assert_eq!(r["id"], "origin_public_cloud_region");
    assert_eq!(r["value"]["succeeded"].as_array().unwrap().len(), 2);
    assert_eq!(r["value"]["succeeded"][0]["origin-ip"], "192.0.2.1");
    assert_eq!(r["value"]["succeeded"][0]["region"], "westeurope");
    assert_eq!(r["value"]["failed"][0]["origin-ip"], "x");
    assert!(r["modified_on"].is_string());
    let r = assert_ok(
        &sim.api(
            Method::PATCH,
            &old("/batch"),
            Some(json!([{"ip": "y", "vendor": "aws", "region": "us-east-1"}])),
        )
        .await,
    );
    assert_eq!(r["modified_on"], Value::Null, "nothing applied");
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"ip": format!("10.0.0.{i}"), "vendor": "aws", "region": "us-east-1"}))
        .collect();
    assert_error(
        &sim.api(Method::PATCH, &old("/batch"), Some(json!(too_many)))
            .await,
        400,
        10001,
    );

    // GET list / GET one / DELETE one.
    let r = assert_ok(&sim.api(Method::GET, &old(""), None).await);
    assert_eq!(r["value"].as_array().unwrap().len(), 3);
    let r = assert_ok(&sim.api(Method::GET, &old("/192.0.2.2"), None).await);
    assert_eq!(r["value"]["origin-ip"], "192.0.2.2");
    assert_error(
        &sim.api(Method::GET, &old("/192.0.2.200"), None).await,
        404,
        1142,
    );
    assert_error(&sim.api(Method::GET, &old("/zzz"), None).await, 400, 1146);
    let r = assert_ok(&sim.api(Method::DELETE, &old("/192.0.2.2"), None).await);
    assert_eq!(r["value"], json!({"origin-ip": "192.0.2.2"}));
    assert_error(
        &sim.api(Method::DELETE, &old("/192.0.2.2"), None).await,
        404,
        1142,
    );
    assert_ok(&sim.api(Method::DELETE, &old("/192.0.2.1"), None).await);
    let r = assert_ok(&sim.api(Method::DELETE, &old("/2001:db8::1"), None).await);
    assert_eq!(r["modified_on"], Value::Null, "no mappings left");
    let r = assert_ok(&sim.api(Method::GET, &old(""), None).await);
    assert_eq!(r["value"], json!([]));
    assert_eq!(r["modified_on"], Value::Null);
}

async fn raw_list(sim: &Sim, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = sim.http().get(format!("{}{}", sim.base_url(), cur("")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn authentication() {
    let sim = Sim::start(&[
        "--token",
        "tok-a",
        "--token",
        "tok-b",
        "--auth-email",
        "ops@example.com",
        "--auth-key",
        "k3y",
    ]);
    let msg = assert_error(&raw_list(&sim, &[]).await, 401, 10000);
    assert_eq!(msg, "Authentication error");
    assert_error(
        &raw_list(&sim, &[("Authorization", "Bearer dev-token")]).await,
        403,
        10000,
    );
    assert_error(
        &raw_list(&sim, &[("Authorization", "Basic Zm9vOmJhcg==")]).await,
        403,
        10000,
    );
    assert_ok(&raw_list(&sim, &[("Authorization", "Bearer tok-a")]).await);
    assert_ok(&raw_list(&sim, &[("Authorization", "Bearer tok-b")]).await);
    let pair = [("X-Auth-Email", "ops@example.com"), ("X-Auth-Key", "k3y")];
    assert_ok(&raw_list(&sim, &pair).await);
    let wrong = [("X-Auth-Email", "ops@example.com"), ("X-Auth-Key", "nope")];
    assert_error(&raw_list(&sim, &wrong).await, 403, 10000);
    assert_error(
        &raw_list(&sim, &[("X-Auth-Email", "ops@example.com")]).await,
        403,
        10000,
    );

    // Rotation at runtime.
    sim.set_auth(json!({"tokens": ["tok-new"], "auth_email": null, "auth_key": null}))
        .await;
    assert_error(
        &raw_list(&sim, &[("Authorization", "Bearer tok-a")]).await,
        403,
        10000,
    );
    assert_error(&raw_list(&sim, &pair).await, 403, 10000);
    assert_ok(&raw_list(&sim, &[("Authorization", "Bearer tok-new")]).await);
    // Email without key is refused by the admin route.
    let resp = sim
        .http()
        .put(format!("{}/auth", sim.admin_url()))
        .json(&json!({"tokens": [], "auth_email": "a@b.c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Reset restores the start-up credentials.
    sim.reset().await;
    assert_ok(&raw_list(&sim, &[("Authorization", "Bearer tok-a")]).await);
    assert_eq!(sim.op_count("list", "401").await, 0, "reset cleared stats");

    // Auth failures are counted.
    raw_list(&sim, &[]).await;
    assert_eq!(sim.op_count("list", "401").await, 1);

    // Default: only dev-token.
    let dev = Sim::start_default();
    assert_ok(&raw_list(&dev, &[("Authorization", "Bearer dev-token")]).await);
    assert_error(
        &raw_list(&dev, &[("Authorization", "Bearer other")]).await,
        403,
        10000,
    );
    // Only a legacy pair: dev-token is not accepted.
    let legacy_only = Sim::start(&["--auth-email", "a@example.com", "--auth-key", "k"]);
    assert_error(
        &raw_list(&legacy_only, &[("Authorization", "Bearer dev-token")]).await,
        403,
        10000,
    );
    let pair = [("X-Auth-Email", "a@example.com"), ("X-Auth-Key", "k")];
    assert_ok(&raw_list(&legacy_only, &pair).await);
}

#[tokio::test]
async fn routing_errors() {
    let sim = Sim::start_default();
    for zone in [
        "abc",
        "023E105F4ECEF8AD9CA31A8372D0C353",
        "023e105f4ecef8ad9ca31a8372d0c35g",
    ] {
        let path = format!("/zones/{zone}/origin/cloud_regions");
        let msg = assert_error(&sim.api(Method::GET, &path, None).await, 404, 7003);
        assert_eq!(
            msg,
            format!("Could not route to /zones/{zone}/origin/cloud_regions, perhaps your object identifier is invalid?")
        );
    }
    // Routing errors come before auth.
    let resp = sim
        .http()
        .get(format!("{}/zones/abc/origin/cloud_regions", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let msg = assert_error(&sim.api(Method::GET, "/zones", None).await, 404, 7000);
    assert_eq!(msg, "No route for that URI");
    assert_error(
        &sim.api(Method::GET, &cur("/192.0.2.1/extra"), None).await,
        404,
        7000,
    );
    let resp = sim
        .http()
        .get(format!("{}/nope", sim.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");

    let resp = sim
        .http()
        .post(format!("{}{}", sim.base_url(), cur("")))
        .bearer_auth("dev-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 7001);
    assert_error(&sim.api(Method::GET, &cur("/batch"), None).await, 405, 7001);
    assert_error(
        &sim.api(Method::PATCH, &cur("/192.0.2.1"), None).await,
        405,
        7001,
    );
    assert_error(&sim.api(Method::PUT, &old(""), None).await, 405, 7001);
    assert_eq!(sim.op_count("unknown", "405").await, 4);
    assert_eq!(sim.op_count("list", "404").await, 4);
}

#[tokio::test]
async fn rate_limit_429() {
    let sim = Sim::start(&["--rate-limit", "5/60"]);
    for _ in 0..5 {
        assert_ok(&sim.api(Method::GET, &cur(""), None).await);
    }
    // Admin calls do not count.
    sim.stats().await;
    sim.dump_zone(Z).await;
    let resp = sim
        .http()
        .get(format!("{}{}", sim.base_url(), cur("")))
        .bearer_auth("dev-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["errors"][0]["code"], 10013);
    assert_eq!(sim.op_count("list", "200").await, 5);
    assert_eq!(sim.op_count("list", "429").await, 1);
    // Unauthenticated requests are not counted against the budget (401, not 429).
    assert_error(&raw_list(&sim, &[]).await, 401, 10000);
    // Reset clears the window.
    sim.reset().await;
    assert_ok(&sim.api(Method::GET, &cur(""), None).await);
}

#[tokio::test]
async fn fault_injection() {
    let sim = Sim::start_default();
    assert_eq!(
        sim.admin_get("/faults").await,
        json!({"rate_429": 0.0, "retry_after_secs": 1, "rate_500": 0.0, "rate_1140": 0.0,
               "rate_drop": 0.0, "latency_ms": 0, "refuse_deletes": false, "truncate_body_rate": 0.0})
    );

    sim.set_faults(json!({"rate_429": 1.0, "retry_after_secs": 7}))
        .await;
    assert_eq!(sim.admin_get("/faults").await["retry_after_secs"], 7);
    let resp = sim
        .http()
        .get(format!("{}{}", sim.base_url(), cur("")))
        .bearer_auth("dev-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    // Faults fire before auth, too.
    assert_error(&raw_list(&sim, &[]).await, 429, 10013);

    sim.set_faults(json!({"rate_500": 1.0})).await;
    assert_error(&sim.api(Method::GET, &cur(""), None).await, 500, 10002);
    sim.set_faults(json!({"rate_1140": 1.0})).await;
    let msg = assert_error(&put(&sim, "192.0.2.1", "aws", "us-east-1").await, 500, 1140);
    assert_eq!(
        msg,
        "Unable to update origin_public_cloud_region setting value. Internal error."
    );
    assert!(
        sim.dump_zone(Z).await.is_empty(),
        "a faulted request has no effect"
    );

    sim.set_faults(json!({"rate_drop": 1.0})).await;
    let err = sim
        .http()
        .get(format!("{}{}", sim.base_url(), cur("")))
        .bearer_auth("dev-token")
        .send()
        .await;
    assert!(
        err.is_err(),
        "dropped connection must be an error, got {err:?}"
    );

    sim.set_faults(json!({"truncate_body_rate": 1.0})).await;
    let resp = sim
        .http()
        .get(format!("{}{}", sim.base_url(), cur("")))
        .bearer_auth("dev-token")
        .send()
        .await;
    let body_failed = match resp {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(body_failed, "truncated body must fail to read");

    sim.set_faults(json!({"latency_ms": 300})).await;
    let start = Instant::now();
    assert_ok(&sim.api(Method::GET, &cur(""), None).await);
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Bad fault configurations are refused.
    for bad in [
        json!({"rate_429": 1.5}),
        json!({"rate_4299": 1.0}),
        json!({"rate_drop": -0.1}),
    ] {
        let resp = sim
            .http()
            .put(format!("{}/faults", sim.admin_url()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }

    sim.clear_faults().await;
    assert_ok(&put(&sim, "192.0.2.1", "aws", "us-east-1").await);
    assert_eq!(sim.op_count("list", "429").await, 2);
    assert_eq!(sim.op_count("list", "500").await, 1);
    assert_eq!(sim.op_count("put", "500").await, 1);
    assert_eq!(sim.op_count("list", "dropped").await, 1);
    assert_eq!(sim.op_count("list", "truncated").await, 1);
    assert_eq!(sim.op_count("put", "200").await, 1);
}

#[tokio::test]
async fn fractional_fault_rates_are_probabilistic() {
    let sim = Sim::start_default();
    sim.set_faults(json!({"rate_500": 0.5})).await;
    let mut errors = 0;
    for _ in 0..200 {
        if sim.api(Method::GET, &cur(""), None).await.0 == 500 {
            errors += 1;
        }
    }
    assert!((40..=160).contains(&errors), "{errors} of 200");
}

#[tokio::test]
async fn refuse_deletes_9109() {
    let sim = Sim::start_default();
    sim.seed_zone(Z, &[input("192.0.2.1", "aws", "us-east-1")])
        .await;
    sim.set_faults(json!({"refuse_deletes": true})).await;
    let msg = assert_error(
        &sim.api(Method::DELETE, &cur("/192.0.2.1"), None).await,
        403,
        9109,
    );
    assert_eq!(msg, "Unauthorized to access requested resource");
    let items = json!([{"origin_ip": "192.0.2.1"}]);
    assert_error(
        &sim.api(Method::DELETE, &cur("/batch"), Some(items)).await,
        403,
        9109,
    );
    assert_error(
        &sim.api(Method::DELETE, &old("/192.0.2.1"), None).await,
        403,
        9109,
    );
    // Writes still work.
    assert_ok(&put(&sim, "192.0.2.2", "aws", "us-east-1").await);
    assert_eq!(sim.dump_zone(Z).await.len(), 2);
    sim.clear_faults().await;
    assert_ok(&sim.api(Method::DELETE, &cur("/192.0.2.1"), None).await);
}

#[tokio::test]
async fn stats_seed_dump_and_reset() {
    let sim = Sim::start_default();
    let stats = sim.stats().await;
    assert_eq!(stats["requests_total"], 0);
    for op in [
        "list",
        "get",
        "put",
        "delete",
        "batch_put",
        "batch_delete",
        "supported_regions",
        "legacy_create",
        "legacy_edit",
        "legacy_batch_edit",
        "legacy_list",
        "legacy_get",
        "legacy_delete",
        "legacy_supported_regions",
        "unknown",
    ] {
        assert_eq!(
            stats["operations"][op],
            json!({"total": 0, "by_status": {}}),
            "{op}"
        );
    }

    // Seeding is out of band: canonicalised, sorted, not counted, no catalog check.
    sim.seed_zone(
        Z,
        &[
            input("2001:DB8::2", "gcp", "us-central1"),
            input("192.0.2.10", "aws", "retired-region-1"),
            input("192.0.2.9", "aws", "us-east-1"),
        ],
    )
    .await;
    let dump = sim.dump_zone_raw(Z).await;
    assert_eq!(dump["zone_id"], Z);
    assert_eq!(dump["tiered_cache"], true);
    let ips: Vec<&str> = dump["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["origin_ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["192.0.2.10", "192.0.2.9", "2001:db8::2"]);
    assert_eq!(sim.requests_total().await, 0);
    // Seeding replaces, never merges.
    sim.seed_zone(Z, &[input("192.0.2.1", "aws", "us-east-1")])
        .await;
    assert_eq!(sim.dump_zone(Z).await.len(), 1);
    // An invalid IP is refused whole.
    let resp = sim
        .http()
        .put(format!("{}/zones/{Z}", sim.admin_url()))
        .json(&json!({"mappings": [{"origin_ip": "bad", "vendor": "aws", "region": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(sim.dump_zone(Z).await.len(), 1);

    sim.api(Method::GET, &cur("/192.0.2.1"), None).await;
    sim.api(Method::GET, &cur("/192.0.2.2"), None).await;
    sim.api(Method::GET, &old(""), None).await;
    assert_eq!(sim.op_count("get", "200").await, 1);
    assert_eq!(sim.op_count("get", "404").await, 1);
    assert_eq!(sim.op_total("get").await, 2);
    assert_eq!(sim.op_total("legacy_list").await, 1);
    assert_eq!(sim.requests_total().await, 3);

    sim.clear_stats().await;
    assert_eq!(sim.requests_total().await, 0);
    assert_eq!(
        sim.dump_zone(Z).await.len(),
        1,
        "clearing stats keeps mappings"
    );

    sim.set_tiered_cache(Z, false).await;
    sim.set_faults(json!({"latency_ms": 1})).await;
    sim.api(Method::GET, &cur(""), None).await;
    sim.reset().await;
    assert!(sim.dump_zone(Z).await.is_empty());
    assert_eq!(sim.dump_zone_raw(Z).await["tiered_cache"], true);
    assert_eq!(sim.admin_get("/faults").await["latency_ms"], 0);
    assert_eq!(sim.requests_total().await, 0);
}

#[tokio::test]
async fn state_file_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let arg = path.to_str().unwrap();
    let modified_on;
    {
        let sim = Sim::start(&["--state-file", arg]);
        assert_ok(&put(&sim, "192.0.2.1", "aws", "us-east-1").await);
        let body = json!({"ip": "2001:db8::5", "vendor": "oci", "region": "ap-tokyo-1"});
        assert_ok(&sim.api(Method::POST, &old(""), Some(body)).await);
        assert_ok(&put(&sim, "192.0.2.2", "aws", "us-east-1").await);
        assert_ok(&sim.api(Method::DELETE, &cur("/192.0.2.2"), None).await);
        sim.set_tiered_cache(Z2, false).await;
        modified_on = sim.dump_zone(Z).await[0].modified_on.clone();
        // Dropping the Sim kills the process without any chance to flush.
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["version"], 1);
    assert!(!dir.path().join("state.json.tmp").exists());

    let sim = Sim::start(&["--state-file", arg]);
    let dump = sim.dump_zone(Z).await;
    let ips: Vec<_> = dump.iter().map(|m| m.origin_ip.as_str()).collect();
    assert_eq!(ips, ["192.0.2.1", "2001:db8::5"]);
    assert_eq!(dump[0].modified_on, modified_on);
    assert_eq!(sim.dump_zone_raw(Z2).await["tiered_cache"], false);
    let got = assert_ok(&sim.api(Method::GET, &cur("/2001:db8::5"), None).await);
    assert_eq!(got["region"], "ap-tokyo-1");

    // Reset empties the file too.
    sim.reset().await;
    drop(sim);
    let sim = Sim::start(&["--state-file", arg]);
    assert!(sim.dump_zone(Z).await.is_empty());
}

#[tokio::test]
async fn unreadable_state_file_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, "{broken").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cf-origin-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--state-file",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no listening line on failure");
}

#[tokio::test]
async fn latency_flag() {
    let sim = Sim::start(&["--latency-ms", "150"]);
    let start = Instant::now();
    assert_ok(&sim.api(Method::GET, &cur(""), None).await);
    assert!(start.elapsed() >= Duration::from_millis(150));
    // Admin routes are not delayed.
    let start = Instant::now();
    sim.stats().await;
    assert!(start.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn full_zone_lists_fast() {
    let sim = Sim::start_default();
    let seed: Vec<MappingInput> = (0..3500u32)
        .map(|i| {
            input(
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                "aws",
                "us-east-1",
            )
        })
        .collect();
    sim.seed_zone(Z, &seed).await;
    assert_error(&put(&sim, "192.0.2.1", "aws", "us-east-1").await, 403, 1164);
    let start = Instant::now();
    let mut n = 0;
    for page in 1..=35 {
        let r = sim
            .api(
                Method::GET,
                &cur(&format!("?per_page=100&page={page}")),
                None,
            )
            .await;
        n += assert_ok(&r).as_array().unwrap().len();
    }
    assert_eq!(n, 3500);
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "35 pages took {elapsed:?}"
    );
}

#[tokio::test]
async fn history_says_when_each_entry_came_changed_and_went() {
    let sim = Sim::start_default();
    assert_ok(&put(&sim, "2001:DB8::5", "aws", "us-east-1").await);
    // The same vendor and region again changes nothing, so it is no history either.
    assert_ok(&put(&sim, "2001:db8::5", "aws", "us-east-1").await);
    assert_ok(&put(&sim, "2001:db8::5", "gcp", "us-central1").await);
    let del = sim.api(Method::DELETE, &cur("/2001:db8::5"), None).await;
    assert_ok(&del);
    assert_ok(&put(&sim, "192.0.2.7", "oci", "us-ashburn-1").await);
    let h = sim.history(Z, "2001:db8::5").await;
    let ops: Vec<&str> = h
        .iter()
        .map(|e| e.split_once(' ').expect("time then change").1)
        .collect();
    assert_eq!(
        ops,
        [
            "created aws/us-east-1",
            "updated gcp/us-central1",
            "removed"
        ]
    );
    // Each change starts with its time, in order.
    let times: Vec<jiff::Timestamp> = h
        .iter()
        .map(|e| {
            e.split(' ')
                .next()
                .unwrap()
                .parse()
                .expect("an RFC 3339 time")
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{h:?}");
    assert_eq!(sim.history(Z, "192.0.2.7").await.len(), 1);
    assert!(sim.history(Z, "192.0.2.8").await.is_empty());
}
