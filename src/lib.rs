//! origin-region-operator: keeps Cloudflare Origin Cloud Region mappings equal to the
//! `OriginCloudRegionMapping` objects declared in Kubernetes.

pub mod cli;
pub mod cloudflare;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod error;
pub mod ip;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod planner;
pub mod reconciler;
pub mod telemetry;
pub mod wire;
pub mod zone_state;
