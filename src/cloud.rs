//! Where the cluster runs, read from its Nodes: the cloud vendor from `spec.providerID` and the
//! region from the topology label. Pure, so every provider's spelling is table-tested.
//!
//! A workload's load balancer lives where its cluster's nodes live, which is what Cloudflare
//! needs to pick upper tiers next to the origin. A cluster spread over several regions gives no
//! single answer, and guessing would route a zone's cache through the wrong continent: such a
//! cluster must name the region on the workload.

use std::collections::BTreeSet;

/// Label with a Node's region (the stable one).
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The deprecated label older clusters still set instead.
pub const LEGACY_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";

/// What one Node says about where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name, for messages.
    pub name: String,
    /// `spec.providerID`, when set.
    pub provider_id: Option<String>,
    /// `topology.kubernetes.io/region` (or the legacy label), when set.
    pub region: Option<String>,
}

/// A vendor and region for Cloudflare, as the catalog spells them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placement {
    /// aws, azure, gcp or oci.
    pub vendor: String,
    /// The vendor's region identifier.
    pub region: String,
}

/// Why the cluster gives no single vendor or region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No Node names a known cloud vendor in its providerID.
    #[error("no Node has a providerID of a known cloud (aws://, gce://, azure://, oci:// or an OCI ocid1. id); set the annotation originregions.io/vendor")]
    NoVendor,
    /// Nodes of several vendors.
    #[error("the cluster's Nodes run on several clouds ({0}); set the annotation originregions.io/vendor")]
    SeveralVendors(String),
    /// No Node carries a region label.
    #[error("no Node has the label topology.kubernetes.io/region; set the annotation originregions.io/region")]
    NoRegion,
    /// Nodes in several regions.
    #[error("the cluster's Nodes are in several regions ({0}); set the annotation originregions.io/region to the region of this load balancer")]
    SeveralRegions(String),
}

/// The vendor a providerID names, if it names one we map.
pub fn vendor_of(provider_id: &str) -> Option<&'static str> {
    let id = provider_id.trim();
    let scheme = id.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("aws") => Some("aws"),
        Some("gce") => Some("gcp"),
        Some("azure") => Some("azure"),
        Some("oci") => Some("oci"),
        // OKE registers nodes with the instance's bare OCID.
        None if id.starts_with("ocid1.") => Some("oci"),
        _ => None,
    }
}

/// OCI's three-letter region keys, as some tooling labels nodes, and the region identifiers
/// the catalog uses.
const OCI_REGION_KEYS: &[(&str, &str)] = &[
    ("iad", "us-ashburn-1"),
    ("phx", "us-phoenix-1"),
    ("sjc", "us-sanjose-1"),
    ("ord", "us-chicago-1"),
    ("yyz", "ca-toronto-1"),
    ("yul", "ca-montreal-1"),
    ("gru", "sa-saopaulo-1"),
    ("vcp", "sa-vinhedo-1"),
    ("scl", "sa-santiago-1"),
    ("qro", "mx-queretaro-1"),
    ("mty", "mx-monterrey-1"),
    ("lhr", "uk-london-1"),
    ("cwl", "uk-cardiff-1"),
    ("fra", "eu-frankfurt-1"),
    ("ams", "eu-amsterdam-1"),
    ("zrh", "eu-zurich-1"),
    ("cdg", "eu-paris-1"),
    ("mrs", "eu-marseille-1"),
    ("lin", "eu-milan-1"),
    ("arn", "eu-stockholm-1"),
    ("mad", "eu-madrid-1"),
    ("bom", "ap-mumbai-1"),
    ("hyd", "ap-hyderabad-1"),
    ("nrt", "ap-tokyo-1"),
    ("kix", "ap-osaka-1"),
    ("icn", "ap-seoul-1"),
    ("yny", "ap-chuncheon-1"),
    ("sin", "ap-singapore-1"),
    ("syd", "ap-sydney-1"),
    ("mel", "ap-melbourne-1"),
    ("jed", "me-jeddah-1"),
    ("dxb", "me-dubai-1"),
    ("auh", "me-abudhabi-1"),
    ("jnb", "af-johannesburg-1"),
];

/// The region as the catalog spells it: OCI's short keys (`iad`, `PHX`) become region
/// identifiers; everything else is kept as written.
pub fn canonical_region(vendor: &str, region: &str) -> String {
    let region = region.trim();
    if vendor == "oci" {
        let key = region.to_ascii_lowercase();
        if let Some((_, name)) = OCI_REGION_KEYS.iter().find(|(k, _)| *k == key) {
            return (*name).to_string();
        }
    }
    region.to_string()
}

/// One vendor and region for the whole cluster, with the workload's overrides applied.
/// Nodes without a known providerID or region label say nothing (a bare-metal node beside
/// cloud ones does not make the answer ambiguous).
pub fn placement(
    nodes: &[NodeFacts],
    vendor_override: Option<&str>,
    region_override: Option<&str>,
) -> Result<Placement, PlacementError> {
    let vendor = match vendor_override {
        Some(v) => v.trim().to_ascii_lowercase(),
        None => {
            let vendors: BTreeSet<&str> = nodes
                .iter()
                .filter_map(|n| n.provider_id.as_deref().and_then(vendor_of))
                .collect();
            match vendors.len() {
                0 => return Err(PlacementError::NoVendor),
                1 => vendors.into_iter().next().unwrap_or_default().to_string(),
                _ => {
                    let list = vendors.into_iter().collect::<Vec<_>>().join(", ");
                    return Err(PlacementError::SeveralVendors(list));
                }
            }
        }
    };
    let region = match region_override {
        Some(r) => canonical_region(&vendor, r),
        None => {
            let regions: BTreeSet<String> = nodes
                .iter()
                .filter_map(|n| n.region.as_deref())
                .filter(|r| !r.trim().is_empty())
                .map(|r| canonical_region(&vendor, r))
                .collect();
            match regions.len() {
                0 => return Err(PlacementError::NoRegion),
                1 => regions.into_iter().next().unwrap_or_default(),
                _ => {
                    let list = regions.into_iter().collect::<Vec<_>>().join(", ");
                    return Err(PlacementError::SeveralRegions(list));
                }
            }
        }
    };
    Ok(Placement { vendor, region })
}

/// What a Node says, from its providerID and labels.
pub fn node_facts(node: &k8s_openapi::api::core::v1::Node) -> NodeFacts {
    let labels = node.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        region: label(REGION_LABEL).or_else(|| label(LEGACY_REGION_LABEL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(provider_id: &str, region: &str) -> NodeFacts {
        NodeFacts {
            name: "n".into(),
            provider_id: (!provider_id.is_empty()).then(|| provider_id.to_string()),
            region: (!region.is_empty()).then(|| region.to_string()),
        }
    }

    #[test]
    fn provider_ids_of_each_cloud() {
        let table = [
            ("aws:///us-east-1a/i-0abc", Some("aws")),
            ("aws://us-east-1a/i-0abc", Some("aws")),
            ("gce://my-project/us-central1-a/gke-node-1", Some("gcp")),
            (
                "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks/virtualMachines/0",
                Some("azure"),
            ),
            ("oci://ocid1.instance.oc1.iad.abc", Some("oci")),
            ("ocid1.instance.oc1.phx.anyhqljt", Some("oci")),
            ("kind://docker/kind/kind-control-plane", None),
            ("k3s://node1", None),
            ("digitalocean://123", None),
            ("", None),
            ("ocid2.instance", None),
        ];
        for (id, want) in table {
            assert_eq!(vendor_of(id), want, "{id}");
        }
    }

    #[test]
    fn oci_short_codes_become_catalog_names() {
        assert_eq!(canonical_region("oci", "iad"), "us-ashburn-1");
        assert_eq!(canonical_region("oci", "PHX"), "us-phoenix-1");
        assert_eq!(canonical_region("oci", "eu-frankfurt-1"), "eu-frankfurt-1");
        // Only OCI has short keys: aws's "iad" is left for the catalog to refuse.
        assert_eq!(canonical_region("aws", "iad"), "iad");
        assert_eq!(canonical_region("gcp", "us-central1"), "us-central1");
    }

    #[test]
    fn one_cloud_one_region() {
        let nodes = [
            node("aws:///us-east-1a/i-1", "us-east-1"),
            node("aws:///us-east-1b/i-2", "us-east-1"),
        ];
        assert_eq!(
            placement(&nodes, None, None),
            Ok(Placement {
                vendor: "aws".into(),
                region: "us-east-1".into()
            })
        );
    }

    #[test]
    fn oke_nodes_with_short_region_labels() {
        let nodes = [
            node("ocid1.instance.oc1.iad.a", "iad"),
            node("ocid1.instance.oc1.iad.b", "us-ashburn-1"),
        ];
        let p = placement(&nodes, None, None).unwrap();
        assert_eq!(
            (p.vendor.as_str(), p.region.as_str()),
            ("oci", "us-ashburn-1")
        );
    }

    #[test]
    fn nodes_in_several_regions_need_the_override() {
        let nodes = [
            node("gce://p/us-central1-a/n1", "us-central1"),
            node("gce://p/europe-west1-b/n2", "europe-west1"),
        ];
        let err = placement(&nodes, None, None).unwrap_err();
        assert_eq!(
            err,
            PlacementError::SeveralRegions("europe-west1, us-central1".into())
        );
        assert!(err.to_string().contains("originregions.io/region"));
        let p = placement(&nodes, None, Some("europe-west1")).unwrap();
        assert_eq!(
            (p.vendor.as_str(), p.region.as_str()),
            ("gcp", "europe-west1")
        );
    }

    #[test]
    fn nodes_of_no_or_several_clouds() {
        assert_eq!(placement(&[], None, None), Err(PlacementError::NoVendor));
        let bare = [node("", "us-east-1"), node("k3s://x", "us-east-1")];
        assert_eq!(placement(&bare, None, None), Err(PlacementError::NoVendor));
        let mixed = [
            node("aws:///a/i", "us-east-1"),
            node("azure:///x", "eastus"),
        ];
        assert_eq!(
            placement(&mixed, None, None),
            Err(PlacementError::SeveralVendors("aws, azure".into()))
        );
        // Overriding both needs no Node at all.
        let p = placement(&[], Some("AWS"), Some("eu-west-1")).unwrap();
        assert_eq!((p.vendor.as_str(), p.region.as_str()), ("aws", "eu-west-1"));
    }

    #[test]
    fn a_bare_metal_node_beside_cloud_nodes_says_nothing() {
        let nodes = [node("aws:///a/i", "us-west-2"), node("", "")];
        let p = placement(&nodes, None, None).unwrap();
        assert_eq!(p.region, "us-west-2");
        let unlabeled = [node("aws:///a/i", "")];
        assert_eq!(
            placement(&unlabeled, None, None),
            Err(PlacementError::NoRegion)
        );
    }

    #[test]
    fn legacy_region_label_is_read() {
        let mut n = k8s_openapi::api::core::v1::Node::default();
        n.metadata.labels = Some([(LEGACY_REGION_LABEL.to_string(), "eastus".to_string())].into());
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            provider_id: Some("azure:///subscriptions/x".into()),
            ..Default::default()
        });
        let f = node_facts(&n);
        assert_eq!(f.region.as_deref(), Some("eastus"));
        assert_eq!(vendor_of(f.provider_id.as_deref().unwrap()), Some("azure"));
    }
}
