//! Command-line flags of `cf-origin-sim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// A local, stateful Cloudflare Origin Cloud Regions API for tests, demos and benchmarks.
// No `Debug` derive: the struct holds credentials and must never end up in a log line.
#[derive(Parser, Clone)]
#[command(
    name = "cf-origin-sim",
    version,
    about = "A local, stateful Cloudflare Origin Cloud Regions API for tests, demos and benchmarks"
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8787", env = "CF_SIM_LISTEN")]
    pub listen: SocketAddr,

    /// Accepted API token (repeatable; or CF_SIM_TOKENS, comma-separated). Without any
    /// credential flag, `dev-token` is accepted.
    // `hide_env`, not `hide_env_values`: clap prints multi-valued env values regardless.
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "CF_SIM_TOKENS",
        value_delimiter = ',',
        hide_env = true
    )]
    pub tokens: Vec<String>,

    /// Accepted legacy `X-Auth-Email` (needs --auth-key).
    #[arg(
        long,
        requires = "auth_key",
        env = "CF_SIM_AUTH_EMAIL",
        hide_env_values = true
    )]
    pub auth_email: Option<String>,

    /// Accepted legacy `X-Auth-Key` (needs --auth-email).
    #[arg(
        long,
        requires = "auth_email",
        env = "CF_SIM_AUTH_KEY",
        hide_env_values = true
    )]
    pub auth_key: Option<String>,

    /// JSON catalog of supported regions: `{"aws": [{"name", "upper_tier_colos"}], ...}`.
    #[arg(long, value_name = "FILE")]
    pub regions: Option<PathBuf>,

    /// Persist mappings and Tiered Cache flags in this JSON file (loaded at start).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Latency added to every API request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Rate limit as N/SECONDS (e.g. 1200/300); beyond N API requests in the window → 429.
    #[arg(long, value_name = "N/SECONDS")]
    pub rate_limit: Option<RateLimitSpec>,

    /// Largest number of mappings one zone may hold.
    #[arg(long, default_value_t = origin_region_operator::wire::MAX_MAPPINGS_PER_ZONE)]
    pub max_mappings: usize,
}

/// A parsed `--rate-limit N/SECONDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSpec {
    /// Requests allowed per window.
    pub limit: usize,
    /// Length of the sliding window.
    pub window: Duration,
}

impl FromStr for RateLimitSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, secs) = s
            .split_once('/')
            .ok_or_else(|| format!("rate limit {s:?} is not N/SECONDS"))?;
        let limit: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("rate limit count {n:?} is not a number"))?;
        let secs: u64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("rate limit window {secs:?} is not a number of seconds"))?;
        if limit == 0 || secs == 0 {
            return Err("rate limit count and window must both be positive".into());
        }
        Ok(RateLimitSpec {
            limit,
            window: Duration::from_secs(secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_limit() {
        let spec: RateLimitSpec = "1200/300".parse().unwrap();
        assert_eq!(spec.limit, 1200);
        assert_eq!(spec.window, Duration::from_secs(300));
        assert!("5".parse::<RateLimitSpec>().is_err());
        assert!("0/5".parse::<RateLimitSpec>().is_err());
        assert!("a/5".parse::<RateLimitSpec>().is_err());
    }
}
