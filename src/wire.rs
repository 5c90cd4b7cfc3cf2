//! Wire types of Cloudflare's Origin Cloud Regions API (shared/seeds, shared/spec).
//!
//! These are the only types the operator's client and the simulator share: the JSON each side
//! reads and writes. Fields the API marks optional stay `Option` so a lenient reader accepts
//! what the real API omits.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Cloudflare's error codes for this API, named by what they mean.
pub mod codes {
    /// Internal error updating the setting; retrying can help.
    pub const INTERNAL: i64 = 1140;
    /// The mapping (or the zone's rule record) was not found.
    pub const NOT_FOUND: i64 = 1142;
    /// Create (older family) found a mapping for the IP already.
    pub const ALREADY_EXISTS: i64 = 1145;
    /// Invalid or missing origin IP; also an invalid `per_page`.
    pub const INVALID_IP: i64 = 1146;
    /// The region could not be validated against the cloud vendor.
    pub const REGION_VALIDATION_FAILED: i64 = 1156;
    /// The vendor does not exist, or the region does not exist for the vendor.
    pub const UNKNOWN_VENDOR_OR_REGION: i64 = 1157;
    /// The zone holds the maximum number of mappings (3,500).
    pub const ZONE_LIMIT: i64 = 1164;
    /// Generic authentication error (missing or bad credentials).
    pub const AUTH_ERROR: i64 = 10000;
    /// The request was malformed (bad JSON, wrong shape).
    pub const BAD_REQUEST: i64 = 10001;
    /// Too many requests; the client is rate limited.
    pub const RATE_LIMITED: i64 = 10013;
    /// Tiered Cache is off for the zone, so `supported_regions` cannot answer (simulator's
    /// choice: the seeds name the precondition but no code).
    pub const TIERED_CACHE_REQUIRED: i64 = 1155;
    /// No route for that URI (unknown path).
    pub const NO_ROUTE: i64 = 7000;
    /// The path exists but not with this HTTP method.
    pub const METHOD_NOT_ALLOWED: i64 = 7001;
    /// Malformed object identifier in the path, e.g. a zone id that is not 32 hex chars.
    pub const INVALID_OBJECT_ID: i64 = 7003;
    /// The credentials may not touch this resource (e.g. a token lacking delete rights).
    pub const UNAUTHORIZED_RESOURCE: i64 = 9109;
    /// Generic internal server error.
    pub const INTERNAL_SERVER_ERROR: i64 = 10002;
}

/// Largest number of items one batch call accepts.
pub const MAX_BATCH: usize = 100;
/// Largest `per_page` a list accepts.
pub const MAX_PER_PAGE: u32 = 100;
/// Default `per_page` of a list when none is given.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// Largest number of mappings one zone may hold.
pub const MAX_MAPPINGS_PER_ZONE: usize = 3500;
/// The zone-setting id of the older path family.
pub const LEGACY_SETTING_ID: &str = "origin_public_cloud_region";

/// Cloudflare's response envelope around every result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    /// Whether the call succeeded.
    pub success: bool,
    /// Errors, each with a numeric code.
    #[serde(default)]
    pub errors: Vec<ApiMessage>,
    /// Informational messages.
    #[serde(default)]
    pub messages: Vec<ApiMessage>,
    /// The result; null on failure.
    pub result: Option<T>,
    /// Pagination information on list responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_info: Option<ResultInfo>,
}

/// One error or message in an envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiMessage {
    /// Cloudflare's numeric code.
    pub code: i64,
    /// Human-readable text.
    pub message: String,
}

/// Pagination information of a list response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ResultInfo {
    /// Items on this page.
    pub count: u64,
    /// This page's number, from 1.
    pub page: u64,
    /// Page size asked for.
    pub per_page: u64,
    /// Items on all pages.
    pub total_count: u64,
    /// Number of pages.
    pub total_pages: u64,
}

/// A cloud vendor that Cloudflare knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
    /// Google Cloud.
    Gcp,
    /// Oracle Cloud Infrastructure.
    Oci,
}

impl Vendor {
    /// Every vendor, in the API's order.
    pub const ALL: [Vendor; 4] = [Vendor::Aws, Vendor::Azure, Vendor::Gcp, Vendor::Oci];

    /// The API's spelling of the vendor.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Aws => "aws",
            Vendor::Azure => "azure",
            Vendor::Gcp => "gcp",
            Vendor::Oci => "oci",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Vendor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vendor::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("vendor {s:?} is not one of aws, azure, gcp, oci"))
    }
}

/// A stored mapping as the current path family returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mapping {
    /// Canonical origin IP.
    pub origin_ip: String,
    /// Cloud vendor (kept as text so an unexpected value still reads).
    pub vendor: String,
    /// Vendor's region identifier.
    pub region: String,
    /// RFC 3339 time of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_on: Option<String>,
}

/// Body of a single PUT and one item of a batch PUT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct MappingInput {
    /// Origin IP; must match the path IP on a single PUT.
    pub origin_ip: String,
    /// Cloud vendor.
    pub vendor: String,
    /// Vendor's region identifier.
    pub region: String,
}

/// One item of a batch result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchItem {
    /// The origin IP this item is about.
    pub origin_ip: String,
    /// Why the item failed; only on failed items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Vendor (new value on upsert, deleted value on delete); only on succeeded items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Region (new value on upsert, deleted value on delete); only on succeeded items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Result of a batch PUT or batch DELETE.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BatchResult {
    /// Items that could not be applied.
    #[serde(default)]
    pub failed: Vec<BatchItem>,
    /// Items that were applied.
    #[serde(default)]
    pub succeeded: Vec<BatchItem>,
}

/// One item of a batch DELETE body (our documented choice; the seeds are silent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteItem {
    /// Origin IP to delete.
    pub origin_ip: String,
}

/// Result of a single DELETE.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteResult {
    /// Canonical IP whose mapping was deleted.
    pub origin_ip: String,
}

/// One supported region of a vendor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region identifier.
    pub name: String,
    /// Tiered Cache upper-tier colos (IATA codes) next to the region.
    #[serde(default)]
    pub upper_tier_colos: Vec<String>,
}

/// Result of `supported_regions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SupportedRegions {
    /// Whether colo codes were resolved; when false the colo lists may be empty.
    pub obtained_codes: bool,
    /// Vendor name to its regions.
    pub vendors: BTreeMap<String, Vec<RegionInfo>>,
}

impl SupportedRegions {
    /// Finds a region of a vendor in the catalog.
    pub fn region(&self, vendor: &str, region: &str) -> Option<&RegionInfo> {
        self.vendors.get(vendor)?.iter().find(|r| r.name == region)
    }
}

/// Body of the older family's POST and PATCH (and one item of its PATCH batch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyInput {
    /// Origin IP.
    pub ip: String,
    /// Cloud vendor.
    pub vendor: String,
    /// Vendor's region identifier.
    pub region: String,
}

/// A mapping as the older family spells it inside `value` (`origin-ip`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyMapping {
    /// Canonical origin IP.
    #[serde(rename = "origin-ip")]
    pub origin_ip: String,
    /// Cloud vendor.
    pub vendor: String,
    /// Vendor's region identifier.
    pub region: String,
    /// RFC 3339 time of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_on: Option<String>,
}

/// One item of the older family's batch result (`origin-ip`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyBatchItem {
    /// Origin IP of the item.
    #[serde(rename = "origin-ip")]
    pub origin_ip: String,
    /// Why the item failed; only on failed items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Vendor; only on succeeded items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Region; only on succeeded items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Batch result of the older family.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct LegacyBatchResult {
    /// Items that could not be applied.
    #[serde(default)]
    pub failed: Vec<LegacyBatchItem>,
    /// Items that were applied.
    #[serde(default)]
    pub succeeded: Vec<LegacyBatchItem>,
}

/// The older family's zone-setting envelope (`id: origin_public_cloud_region`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacySetting<T> {
    /// Always `origin_public_cloud_region`.
    pub id: String,
    /// Whether the current user may change the setting.
    pub editable: bool,
    /// Time the setting last changed; null when nothing was applied.
    pub modified_on: Option<String>,
    /// The setting's value.
    pub value: T,
}
