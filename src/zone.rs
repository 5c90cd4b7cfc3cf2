//! The `CloudflareZone` resource: a zone declared by a cluster admin, with the namespaces that
//! may map it, the credentials it is written with, and its adoption policy (the way
//! cert-manager's ClusterIssuer governs who may issue from what). Also the pure decisions it
//! governs: may this namespace map the zone, which credentials apply, may an unmanaged entry
//! be adopted, and may this operator instance write the zone.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::labels::{Selector, SelectorExt};
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::SecretReference;
use crate::error::Problem;

/// Label a Secret's owner sets so mappings of its namespace may use it (when the zone allows).
pub const CREDENTIALS_LABEL: &str = "originregions.io/credentials";

/// Cloudflare's limit of mappings per zone.
pub const ZONE_LIMIT: i64 = 3_500;

/// A Cloudflare zone the operator may write, and who may map it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "originregions.io",
    version = "v1alpha1",
    kind = "CloudflareZone",
    shortname = "cfzone",
    category = "cloudflare",
    status = "CloudflareZoneStatus",
    doc = "A Cloudflare zone declared by a cluster admin: which namespaces may map it, with which credentials, and whether unmanaged entries may be adopted.",
    printcolumn = r#"{"name":"Zone","type":"string","jsonPath":".spec.zoneId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Managed","type":"integer","jsonPath":".status.managed"}"#,
    printcolumn = r#"{"name":"Unmanaged","type":"integer","jsonPath":".status.unmanaged"}"#,
    printcolumn = r#"{"name":"Headroom","type":"integer","jsonPath":".status.headroom"}"#,
    printcolumn = r#"{"name":"Writer","type":"string","jsonPath":".status.writer","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CloudflareZoneSpec {
    /// Cloudflare zone identifier (32 lowercase hex characters); mappings name it in their
    /// spec.zoneId.
    #[schemars(length(equal = 32), pattern(r"^[0-9a-f]{32}$"))]
    pub zone_id: String,

    /// Secret in the operator's namespace with the zone's credentials (key apiToken, or email
    /// and apiKey). When unset, the operator-wide Secret is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// Namespaces that may map this zone, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Namespaces that may map this zone, by label; `{}` admits every namespace. A namespace
    /// is admitted when it is listed in `namespaces` or matches this selector; with neither
    /// set, none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// What happens to a mapping whose entry already exists in Cloudflare and no object owns:
    /// Never (default) refuses it with reason AdoptionRefused; Adopt takes it over.
    #[serde(default)]
    pub adoption: AdoptionPolicy,

    /// Whether mappings may name a Secret of their own namespace (credentialsSecretRef). The
    /// Secret must also carry the label originregions.io/credentials=true, set by its owner.
    #[serde(default)]
    pub allow_namespace_credentials: bool,
}

/// Whether unmanaged remote entries may be adopted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AdoptionPolicy {
    // Refuse mappings whose entry exists and no object owns (the default).
    #[default]
    Never,
    // Take such entries over (an Event says so).
    Adopt,
}

/// Observed state of a zone, written by the operator instance that writes the zone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudflareZoneStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Remote entries owned by a mapping object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<i64>,
    /// Remote entries no mapping object owns (made in the dashboard or by another tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged: Option<i64>,
    /// Cloudflare's limit of entries for the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Entries that can still be created (limit minus entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<i64>,
    /// Regions Cloudflare supports for this zone, by vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_regions: Option<BTreeMap<String, Vec<String>>>,
    /// When the zone was last read in full from Cloudflare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_read: Option<Time>,
    /// The operator instance that writes this zone; other instances write nothing to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// When the writer last confirmed its claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_renewed: Option<Time>,
    /// Conditions; `Ready` is True when the credentials are proven, the zone is listable and
    /// Tiered Cache is on.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The declared zone for `zone_id`: the oldest CloudflareZone naming it (a second one is a
/// mistake the status of the younger one reports).
pub fn declared<'a>(
    zones: impl IntoIterator<Item = &'a CloudflareZone>,
    zone_id: &str,
) -> Option<&'a CloudflareZone> {
    zones
        .into_iter()
        .filter(|z| z.spec.zone_id == zone_id)
        .min_by_key(|z| {
            (
                z.metadata.creation_timestamp.clone().map(|t| t.0),
                z.name_any(),
            )
        })
}

/// Whether `zone` admits mappings of `namespace` (with its labels).
pub fn admit(
    zone: &CloudflareZone,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Problem> {
    if zone.spec.namespaces.iter().any(|n| n == namespace) {
        return Ok(());
    }
    if let Some(sel) = &zone.spec.namespace_selector {
        match Selector::try_from(sel.clone()) {
            Ok(s) if s.matches(labels) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(Problem::NamespaceNotAdmitted {
                    zone: zone.name_any(),
                    namespace: namespace.to_string(),
                    rule: format!("its namespaceSelector is invalid ({e})"),
                })
            }
        }
    }
    Err(Problem::NamespaceNotAdmitted {
        zone: zone.name_any(),
        namespace: namespace.to_string(),
        rule: rule_text(zone),
    })
}

fn rule_text(zone: &CloudflareZone) -> String {
    let mut parts = Vec::new();
    if !zone.spec.namespaces.is_empty() {
        parts.push(format!("namespaces [{}]", zone.spec.namespaces.join(", ")));
    }
    if let Some(sel) = &zone.spec.namespace_selector {
        let labels: Vec<String> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exprs = sel.match_expressions.as_ref().map_or(0, Vec::len);
        parts.push(format!(
            "namespaceSelector [{}]{}",
            labels.join(", "),
            if exprs > 0 {
                format!(" with {exprs} expression(s)")
            } else {
                String::new()
            }
        ));
    }
    if parts.is_empty() {
        "it admits no namespace (set spec.namespaces or spec.namespaceSelector)".into()
    } else {
        format!("it admits {}", parts.join(" or "))
    }
}

/// May this instance write the zone? It may when the zone names no writer, names it, or the
/// named writer has not renewed its claim for `stale_after`. Otherwise the other writer's name.
pub fn writer_check(
    status: Option<&CloudflareZoneStatus>,
    me: &str,
    now: jiff::Timestamp,
    stale_after: std::time::Duration,
) -> Result<(), String> {
    let Some(s) = status else { return Ok(()) };
    match s.writer.as_deref() {
        None => Ok(()),
        Some(w) if w == me => Ok(()),
        Some(w) => {
            let fresh = s.writer_renewed.as_ref().is_some_and(|t| {
                let age = now.duration_since(t.0);
                age < jiff::SignedDuration::try_from(stale_after)
                    .unwrap_or(jiff::SignedDuration::MAX)
            });
            if fresh {
                Err(w.to_string())
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn zone(namespaces: &[&str], selector: Option<serde_json::Value>) -> CloudflareZone {
        let mut z = CloudflareZone::new(
            "shop",
            CloudflareZoneSpec {
                zone_id: Z.into(),
                credentials_secret_ref: None,
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                namespace_selector: selector.map(|v| serde_json::from_value(v).unwrap()),
                adoption: AdoptionPolicy::Never,
                allow_namespace_credentials: false,
            },
        );
        z.metadata.creation_timestamp = None;
        z
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn namespaces_are_admitted_by_name_or_label_and_nothing_else() {
        let z = zone(
            &["shop"],
            Some(serde_json::json!({"matchLabels": {"team": "web"}})),
        );
        assert!(admit(&z, "shop", &labels(&[])).is_ok());
        assert!(admit(&z, "blog", &labels(&[("team", "web")])).is_ok());
        let refused = admit(&z, "blog", &labels(&[("team", "ops")])).unwrap_err();
        assert_eq!(refused.reason(), "NamespaceNotAdmitted");
        let text = refused.to_string();
        assert!(
            text.contains("shop") && text.contains("team=web") && text.contains("blog"),
            "{text}"
        );
        let none = zone(&[], None);
        assert!(admit(&none, "shop", &labels(&[]))
            .unwrap_err()
            .to_string()
            .contains("admits no namespace"));
        let all = zone(&[], Some(serde_json::json!({})));
        assert!(admit(&all, "anything", &labels(&[])).is_ok());
    }

    #[test]
    fn one_writer_until_its_claim_goes_stale() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let ten = std::time::Duration::from_secs(600);
        let claimed = |w: &str, age: i64| CloudflareZoneStatus {
            writer: Some(w.into()),
            writer_renewed: Some(Time(now - jiff::SignedDuration::from_secs(age))),
            ..Default::default()
        };
        assert!(writer_check(None, "a", now, ten).is_ok());
        assert!(writer_check(Some(&claimed("a", 5)), "a", now, ten).is_ok());
        assert_eq!(
            writer_check(Some(&claimed("b", 5)), "a", now, ten),
            Err("b".into())
        );
        assert!(writer_check(Some(&claimed("b", 601)), "a", now, ten).is_ok());
    }

    #[test]
    fn the_oldest_declaration_of_a_zone_wins_and_the_crd_is_cluster_scoped() {
        let mut a = zone(&[], None);
        a.metadata.name = Some("b-newer".into());
        a.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(2).unwrap()));
        let mut b = zone(&[], None);
        b.metadata.name = Some("a-older".into());
        b.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(1).unwrap()));
        assert_eq!(declared([&a, &b], Z).unwrap().name_any(), "a-older");
        assert!(declared([&a, &b], "0".repeat(32).as_str()).is_none());
        let crd = serde_json::to_value(CloudflareZone::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["names"]["categories"][0], "cloudflare");
    }
}
