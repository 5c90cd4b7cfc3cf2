//! The `OriginCloudRegionMapping` custom resource: spec, status and the CRD built from them.
//!
//! The CRD YAML in `crds/` is generated from these types (`origin-region-operator crd`), never
//! edited by hand; a test fails when the two differ.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the CRD.
pub const GROUP: &str = "originregions.io";
/// Finalizer that guards remote cleanup.
pub const FINALIZER: &str = "originregions.io/cleanup";
/// Annotation that releases a deletion that cannot clean up remotely.
pub const FORCE_ORPHAN_ANNOTATION: &str = "originregions.io/force-orphan";
/// Type of the one condition the operator reports.
pub const READY: &str = "Ready";
/// Label on mappings the operator generates from a workload: the workload's kind.
pub const SOURCE_KIND_LABEL: &str = "originregions.io/source-kind";
/// Label on generated mappings: the workload's name.
pub const SOURCE_NAME_LABEL: &str = "originregions.io/source-name";
/// Label on generated mappings: the workload's uid, so a recreated workload is a new owner.
pub const SOURCE_UID_LABEL: &str = "originregions.io/source-uid";
/// The standard label naming the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on generated mappings.
pub const MANAGED_BY: &str = "origin-region-operator";

/// Desired mapping of one origin IP of a Cloudflare zone to a cloud vendor and region.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "originregions.io",
    version = "v1alpha1",
    kind = "OriginCloudRegionMapping",
    namespaced,
    shortname = "ocrm",
    category = "cloudflare",
    status = "OriginCloudRegionMappingStatus",
    doc = "Maps one origin IP of a Cloudflare zone to the cloud vendor and region that host it.",
    printcolumn = r#"{"name":"Zone","type":"string","jsonPath":".spec.zoneId"}"#,
    printcolumn = r#"{"name":"Origin IP","type":"string","description":"Canonical IP the operator applied","jsonPath":".status.originIp"}"#,
    printcolumn = r#"{"name":"Vendor","type":"string","jsonPath":".spec.vendor"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Spec IP","type":"string","priority":1,"description":"originIp as written in the spec","jsonPath":".spec.originIp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OriginCloudRegionMappingSpec {
    /// Cloudflare zone identifier: 32 lowercase hexadecimal characters, as shown on the zone's
    /// overview page in the dashboard.
    #[schemars(length(equal = 32), pattern(r"^[0-9a-f]{32}$"))]
    pub zone_id: String,

    /// IPv4 or IPv6 address of the origin, in any valid spelling; the operator applies its
    /// canonical form (dotted quad, or RFC 5952 for IPv6) and reports it in status.originIp.
    /// No CIDR prefixes, zone suffixes, whitespace or zero-padded IPv4 octets.
    #[schemars(length(min = 2, max = 45))]
    // CEL's isIP refuses IPv4-mapped addresses (::ffff:a.b.c.d) in every spelling. The second
    // branch accepts them, and only them, by checking the same text with the ffff group (after
    // leading zero groups) swapped for 1: the result parses exactly when the original does, so
    // "::ffff:999.1.1.1" and "::ffff:01.2.3.4" are refused and "0:0:0:0:0:ffff:c000:201" is not.
    #[x_kube(validation = kube::core::Rule::new(
        "isIP(self) || (self.matches('^(?i)[0:]*:ffff:') && isIP(self.lowerAscii().replace(':ffff:', ':1:', 1)))"
    ).message("originIp must be a single IPv4 or IPv6 address, e.g. 192.0.2.1 or 2001:db8::1"))]
    pub origin_ip: String,

    /// Cloud vendor that hosts the origin: aws, azure, gcp or oci.
    #[schemars(extend("enum" = ["aws", "azure", "gcp", "oci"]))]
    pub vendor: String,

    /// The vendor's region identifier, e.g. us-east-1 (aws) or us-central1 (gcp); it must be
    /// one of the regions Cloudflare supports for the vendor.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub region: String,

    /// Secret in this object's namespace holding Cloudflare credentials: key `apiToken`, or
    /// keys `email` and `apiKey`. When unset, the operator-wide credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// What happens to the remote mapping when this object is deleted or moved: Delete
    /// (default) removes it from Cloudflare, Orphan leaves it in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Reference to a Secret in the same namespace as the mapping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret (a DNS subdomain: lowercase letters, digits, '-' and '.').
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Fate of the remote mapping when the object goes away.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    // Remove the remote mapping (the default).
    #[default]
    Delete,
    // Keep the remote mapping.
    Orphan,
}

/// Observed state of a mapping, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginCloudRegionMappingStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Zone of the remote mapping this object owns, used to clean up after a move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Canonical origin IP actually applied in Cloudflare (RFC 5952 for IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_ip: Option<String>,
    /// Vendor of the remote mapping this object owns, as last applied or read from Cloudflare
    /// (differs from spec.vendor while an edit cannot be applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Region of the remote mapping this object owns, as last applied or read from Cloudflare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Tiered Cache upper-tier data centers (IATA codes) that serve this origin, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_tier_colos: Option<Vec<String>>,
    /// When the remote mapping was last written or last found to change state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Conditions; `Ready` is True only when the remote mapping equals the spec.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl OriginCloudRegionMapping {
    /// The Ready condition, if the operator has written one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
    }

    /// Whether the object carries the operator's finalizer.
    pub fn has_finalizer(&self) -> bool {
        self.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
    }

    /// Whether the operator generated this object from a Service or Gateway.
    pub fn is_generated(&self) -> bool {
        let labels = self.metadata.labels.as_ref();
        labels.is_some_and(|l| {
            l.get(MANAGED_BY_LABEL).is_some_and(|v| v == MANAGED_BY)
                && l.contains_key(SOURCE_UID_LABEL)
        })
    }

    /// Whether a person asked to release the object without remote cleanup.
    pub fn force_orphan(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FORCE_ORPHAN_ANNOTATION))
            .is_some_and(|v| v == "true")
    }
}

/// Renders the CRDs as YAML, exactly as committed under `crds/` (one kind per file there; both
/// in one stream when `kind` is unset, as the plain manifests carry them).
pub fn crd_yaml(kind: Option<crate::cli::CrdKind>) -> String {
    use crate::cli::CrdKind;
    let mut out = String::from("# Generated by `origin-region-operator crd`; do not edit.\n");
    let kinds = match kind {
        Some(k) => vec![k],
        None => vec![CrdKind::Mappings, CrdKind::Zones],
    };
    for k in kinds {
        let crd = match k {
            CrdKind::Mappings => OriginCloudRegionMapping::crd(),
            CrdKind::Zones => crate::zone::CloudflareZone::crd(),
        };
        let body = serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML");
        out.push_str("---\n");
        out.push_str(&body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_names_columns_and_rules() {
        let crd = serde_json::to_value(OriginCloudRegionMapping::crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "ocrm");
        assert_eq!(crd["spec"]["names"]["categories"][0], "cloudflare");
        let version = &crd["spec"]["versions"][0];
        let cols: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cols,
            [
                "Zone",
                "Origin IP",
                "Vendor",
                "Region",
                "Ready",
                "Reason",
                "Age",
                "Spec IP"
            ]
        );
        let columns = version["additionalPrinterColumns"].as_array().unwrap();
        // What `kubectl get` shows is what Cloudflare holds; the spec's spelling is in -o wide.
        assert_eq!(columns[1]["jsonPath"], ".status.originIp");
        assert_eq!(columns[7]["jsonPath"], ".spec.originIp");
        assert_eq!(columns[7]["priority"], 1);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["zoneId"]["pattern"], "^[0-9a-f]{32}$");
        assert!(spec["properties"]["originIp"]["x-kubernetes-validations"].is_array());
        assert_eq!(
            spec["properties"]["deletionPolicy"]["enum"],
            serde_json::json!(["Delete", "Orphan"])
        );
        assert!(version["subresources"]["status"].is_object());
    }

    #[test]
    fn every_spec_field_has_a_description() {
        let crd = serde_json::to_value(OriginCloudRegionMapping::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        for part in ["spec", "status"] {
            for (name, prop) in schema[part]["properties"].as_object().unwrap() {
                assert!(
                    prop["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{part}.{name} has no description"
                );
            }
        }
    }
}
