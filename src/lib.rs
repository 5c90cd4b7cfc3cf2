//! origin-region-operator: keeps Cloudflare Origin Cloud Region mappings equal to the
//! `OriginCloudRegionMapping` objects declared in Kubernetes.

pub mod cached;
pub mod changes;
pub mod cli;
pub mod cloud;
pub mod cloudflare;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod dns;
pub mod error;
pub mod intern;
pub mod ip;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod plan;
pub mod planner;
pub mod reconciler;
pub mod schedule;
pub mod source;
pub mod source_controller;
pub mod status;
pub mod telemetry;
pub mod tombstones;
pub mod verdict;
pub mod wire;
pub mod zone;
pub mod zone_state;
