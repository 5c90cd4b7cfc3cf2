//! Command line of the `origin-region-operator` binary; every flag has an environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use std::sync::Arc;

use crate::cloudflare::{ClientConfig, Clients, Observer};
use crate::telemetry::LogFormat;

/// Keeps Cloudflare Origin Cloud Region mappings equal to OriginCloudRegionMapping objects.
#[derive(Debug, Parser)]
#[command(name = "origin-region-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions' YAML (what crds/ holds).
    Crd(CrdArgs),
    /// Print, per zone, what `run` would change in Cloudflare; changes nothing.
    Plan(PlanArgs),
}

/// Flags of `crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Print only this CRD (one file of crds/); both when unset.
    #[arg(long, value_enum)]
    pub kind: Option<CrdKind>,
}

/// The operator's CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdKind {
    /// OriginCloudRegionMapping (namespaced).
    Mappings,
    /// CloudflareZone (cluster-scoped).
    Zones,
}

/// Connection to Kubernetes.
#[derive(Debug, Args, Clone)]
pub struct KubeArgs {
    /// Kubeconfig file; in-cluster config or ~/.kube/config when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Connection to Cloudflare.
#[derive(Debug, Args, Clone)]
pub struct CloudflareArgs {
    /// Cloudflare API base URL (the simulator's, in tests and the demo).
    #[arg(
        long,
        env = "CLOUDFLARE_API_URL",
        default_value = "https://api.cloudflare.com/client/v4"
    )]
    pub cloudflare_api_url: String,
    /// Operator-wide credentials Secret as namespace/name (keys apiToken, or email + apiKey).
    #[arg(long, env = "DEFAULT_CREDENTIALS_SECRET", value_parser = parse_secret_ref)]
    pub default_credentials_secret: Option<(String, String)>,
    /// Read Secrets named by credentialsSecretRef in watched namespaces (needs list/watch on
    /// Secrets there).
    #[arg(long, env = "WATCH_SECRET_REFS")]
    pub watch_secret_refs: bool,
    /// Cloudflare requests allowed per --rate-period and credential.
    #[arg(long, env = "CLOUDFLARE_RATE_LIMIT", default_value_t = 1200)]
    pub rate_limit: u32,
    /// Window of --rate-limit.
    #[arg(long, env = "CLOUDFLARE_RATE_PERIOD", default_value = "5m", value_parser = humantime::parse_duration)]
    pub rate_period: Duration,
    /// Attempts per Cloudflare call, the first included.
    #[arg(long, env = "CLOUDFLARE_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: usize,
    /// Timeout of one Cloudflare request, body included.
    #[arg(long, env = "CLOUDFLARE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubernetes connection.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Cloudflare connection.
    #[command(flatten)]
    pub cloudflare: CloudflareArgs,
    /// Share (0.01..1) of each credential's Cloudflare budget (--rate-limit per
    /// --rate-period) that drift checks may use; changes always come first, and when the share
    /// cannot cover every zone per --resync-interval, the interval stretches.
    #[arg(long, env = "DRIFT_BUDGET_SHARE", default_value_t = 0.5, value_parser = parse_share)]
    pub drift_budget_share: f64,
    /// Full re-read of every zone (drift repair) this often.
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// How long a zone's supported-regions catalog is trusted; a drift check past it fetches
    /// the catalog again, a change plans with the one it has.
    #[arg(long, env = "CATALOG_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub catalog_ttl: Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Zones reconciled at once.
    #[arg(long, env = "WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Quiet time after a change before a zone is planned, so bursts batch together.
    #[arg(long, env = "DEBOUNCE", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Elect a leader through a Lease, so several replicas are safe.
    #[arg(long, env = "LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "origin-region-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Lease duration: a standby takes over this long after the leader stops renewing.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// On SIGTERM, time zones in flight get to finish before they are stopped (their
    /// write-ahead records let the next leader finish them), so a new leader never waits on
    /// Cloudflare retries.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// This replica's identity (default: the pod name, POD_NAME, or the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Zone governance.
    #[command(flatten)]
    pub zones: ZoneArgs,
    /// Workload sources.
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// Workloads the operator makes mappings from.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Make mappings from workloads annotated with originregions.io/zone: `service`
    /// (LoadBalancer Services) and/or `gateway` (Gateway API Gateways); repeat or separate
    /// with commas. Off when unset.
    #[arg(long = "source", env = "SOURCES", value_enum, value_delimiter = ',')]
    pub sources: Vec<SourceKind>,
    /// DNS server (ip:port) for load-balancer hostnames; the system resolver when unset.
    #[arg(long, env = "SOURCE_DNS_SERVER")]
    pub source_dns_server: Option<SocketAddr>,
}

/// A kind of workload source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Services of type LoadBalancer.
    Service,
    /// Gateway API Gateways.
    Gateway,
}

/// How zones are governed.
#[derive(Debug, Args, Clone)]
pub struct ZoneArgs {
    /// Map any zone the credentials reach, without CloudflareZone declarations (a
    /// single-tenant cluster); by default a mapping's zone must be declared by a
    /// CloudflareZone that admits its namespace.
    #[arg(long, env = "ALLOW_UNDECLARED_ZONES")]
    pub allow_undeclared_zones: bool,
    /// The operator's namespace, where CloudflareZones' credential Secrets live (default:
    /// POD_NAMESPACE, else "default").
    #[arg(long, env = "OPERATOR_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Name under which this installation claims the zones it writes (default:
    /// "<operator namespace>/<lease name>"): two installations on one zone do not fight.
    #[arg(long, env = "INSTANCE_NAME")]
    pub instance_name: Option<String>,
}

impl ZoneArgs {
    /// The operator's namespace.
    pub fn namespace(&self) -> String {
        self.operator_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }
}

/// Flags of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Kubernetes connection.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Cloudflare connection.
    #[command(flatten)]
    pub cloudflare: CloudflareArgs,
    /// Print the plan as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Zone governance (as for `run`).
    #[command(flatten)]
    pub zones: ZoneArgs,
}

impl KubeArgs {
    /// Builds a Kubernetes client from the flags (kubeconfig, context) or the environment.
    pub async fn client(&self) -> Result<kube::Client, String> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| format!("kubeconfig: {e}"))?,
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("finding Kubernetes config: {e}"))?,
        };
        kube::Client::try_from(config).map_err(|e| format!("building the Kubernetes client: {e}"))
    }
}

impl CloudflareArgs {
    /// Builds the Cloudflare client factory from the flags.
    pub fn clients(&self, observer: Option<Arc<dyn Observer>>) -> Clients {
        Clients::new(
            ClientConfig {
                base_url: self.cloudflare_api_url.clone(),
                rate_limit: self.rate_limit,
                rate_period: self.rate_period,
                max_attempts: self.max_attempts,
                request_timeout: self.request_timeout,
                ..ClientConfig::default()
            },
            observer,
        )
    }
}

fn parse_secret_ref(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not namespace/name")),
    }
}

/// A share between 0.01 and 1.
fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number between 0.01 and 1"))?;
    if (0.01..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is outside 0.01..1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_and_bad_values_are_named() {
        let cli = Cli::try_parse_from([
            "x",
            "run",
            "--resync-interval",
            "2m",
            "--default-credentials-secret",
            "ops/cf",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        assert_eq!(run.resync_interval, Duration::from_secs(120));
        assert_eq!(
            run.cloudflare.default_credentials_secret,
            Some(("ops".into(), "cf".into()))
        );
        let err =
            Cli::try_parse_from(["x", "run", "--default-credentials-secret", "cf"]).unwrap_err();
        assert!(
            err.to_string().contains("\"cf\" is not namespace/name"),
            "{err}"
        );
        let err = Cli::try_parse_from(["x", "run", "--resync-interval", "soon"]).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
