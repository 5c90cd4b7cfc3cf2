//! The supported-regions catalog: which vendor/region pairs a mapping may name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use origin_region_operator::wire::{RegionInfo, SupportedRegions};
use serde::Deserialize;

/// The regions the simulator accepts, with lookup indexes built once at start.
#[derive(Debug, Clone)]
pub struct Catalog {
    supported: SupportedRegions,
    by_vendor: HashMap<String, HashSet<String>>,
    all_regions: HashSet<String>,
}

/// How a vendor/region pair fares against the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The vendor offers the region.
    Known,
    /// The region exists, but under another vendor (→ code 1156).
    OtherVendor,
    /// Unknown vendor, or a region no vendor offers (→ code 1157).
    Unknown,
}

impl Catalog {
    /// Builds a catalog from the `supported_regions` result it should serve.
    pub fn new(supported: SupportedRegions) -> Catalog {
        let mut by_vendor: HashMap<String, HashSet<String>> = HashMap::new();
        let mut all_regions = HashSet::new();
        for (vendor, regions) in &supported.vendors {
            let set = by_vendor.entry(vendor.clone()).or_default();
            for r in regions {
                set.insert(r.name.clone());
                all_regions.insert(r.name.clone());
            }
        }
        Catalog {
            supported,
            by_vendor,
            all_regions,
        }
    }

    /// Reads a catalog file: either `{vendor: [region...]}` or a whole `supported_regions`
    /// result (`{obtained_codes, vendors}`), so a captured real response can be replayed.
    pub fn load(path: &Path) -> Result<Catalog, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading regions file {}: {e}", path.display()))?;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum File {
            Full(SupportedRegions),
            Vendors(BTreeMap<String, Vec<RegionInfo>>),
        }
        let parsed: File = serde_json::from_str(&text)
            .map_err(|e| format!("parsing regions file {}: {e}", path.display()))?;
        let supported = match parsed {
            File::Full(s) => s,
            File::Vendors(vendors) => SupportedRegions {
                obtained_codes: true,
                vendors,
            },
        };
        if supported.vendors.is_empty() {
            return Err(format!("regions file {} names no vendor", path.display()));
        }
        Ok(Catalog::new(supported))
    }

    /// The `supported_regions` result.
    pub fn supported(&self) -> &SupportedRegions {
        &self.supported
    }

    /// Checks a vendor/region pair.
    pub fn check(&self, vendor: &str, region: &str) -> Check {
        match self.by_vendor.get(vendor) {
            Some(regions) if regions.contains(region) => Check::Known,
            Some(_) if self.all_regions.contains(region) => Check::OtherVendor,
            _ => Check::Unknown,
        }
    }
}

/// A built-in region: name and upper-tier colos.
type Region = (&'static str, &'static [&'static str]);

impl Default for Catalog {
    /// A realistic catalog of the four vendors with plausible upper-tier colos.
    fn default() -> Catalog {
        let table: &[(&str, &[Region])] = &[
            (
                "aws",
                &[
                    ("us-east-1", &["IAD", "EWR"]),
                    ("us-east-2", &["CMH"]),
                    ("us-west-1", &["SJC"]),
                    ("us-west-2", &["SEA"]),
                    ("ca-central-1", &["YUL"]),
                    ("sa-east-1", &["GRU"]),
                    ("eu-west-1", &["DUB"]),
                    ("eu-west-2", &["LHR"]),
                    ("eu-central-1", &["FRA"]),
                    ("eu-north-1", &["ARN"]),
                    ("ap-south-1", &["BOM"]),
                    ("ap-northeast-1", &["NRT"]),
                    ("ap-southeast-1", &["SIN"]),
                    ("ap-southeast-2", &["SYD"]),
                ],
            ),
            (
                "azure",
                &[
                    ("eastus", &["IAD"]),
                    ("eastus2", &["IAD"]),
                    ("centralus", &["ORD"]),
                    ("westus", &["SJC"]),
                    ("westus2", &["SEA"]),
                    ("canadacentral", &["YYZ"]),
                    ("brazilsouth", &["GRU"]),
                    ("northeurope", &["DUB"]),
                    ("westeurope", &["AMS"]),
                    ("uksouth", &["LHR"]),
                    ("germanywestcentral", &["FRA"]),
                    ("japaneast", &["NRT"]),
                    ("southeastasia", &["SIN"]),
                    ("australiaeast", &["SYD"]),
                ],
            ),
            (
                "gcp",
                &[
                    ("us-central1", &["ORD"]),
                    ("us-east1", &["ATL"]),
                    ("us-east4", &["IAD"]),
                    ("us-west1", &["PDX"]),
                    ("us-west2", &["LAX"]),
                    ("southamerica-east1", &["GRU"]),
                    ("europe-west1", &["BRU"]),
                    ("europe-west2", &["LHR"]),
                    ("europe-west3", &["FRA"]),
                    ("europe-west4", &["AMS"]),
                    ("asia-east1", &["TPE"]),
                    ("asia-northeast1", &["NRT"]),
                    ("asia-southeast1", &["SIN"]),
                    ("australia-southeast1", &["SYD"]),
                ],
            ),
            (
                "oci",
                &[
                    ("us-ashburn-1", &["IAD"]),
                    ("us-phoenix-1", &["PHX"]),
                    ("us-sanjose-1", &["SJC"]),
                    ("ca-toronto-1", &["YYZ"]),
                    ("sa-saopaulo-1", &["GRU"]),
                    ("uk-london-1", &["LHR"]),
                    ("eu-frankfurt-1", &["FRA"]),
                    ("eu-amsterdam-1", &["AMS"]),
                    ("ap-mumbai-1", &["BOM"]),
                    ("ap-tokyo-1", &["NRT"]),
                    ("ap-singapore-1", &["SIN"]),
                    ("ap-sydney-1", &["SYD"]),
                ],
            ),
        ];
        let vendors = table
            .iter()
            .map(|(vendor, regions)| {
                let regions = regions
                    .iter()
                    .map(|(name, colos)| RegionInfo {
                        name: (*name).to_string(),
                        upper_tier_colos: colos.iter().map(|c| (*c).to_string()).collect(),
                    })
                    .collect();
                ((*vendor).to_string(), regions)
            })
            .collect();
        Catalog::new(SupportedRegions {
            obtained_codes: true,
            vendors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalog_checks() {
        let c = Catalog::default();
        assert_eq!(c.supported().vendors.len(), 4);
        assert_eq!(c.check("aws", "us-east-1"), Check::Known);
        assert_eq!(c.check("aws", "us-central1"), Check::OtherVendor);
        assert_eq!(c.check("aws", "mars-1"), Check::Unknown);
        assert_eq!(c.check("ibm", "us-east-1"), Check::Unknown);
        assert_eq!(c.check("gcp", "us-central1"), Check::Known);
    }
}
