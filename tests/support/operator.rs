//! Runs the operator binary as a child process against a test control plane and simulator.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running operator; killed (SIGKILL) when dropped. Its logs go to a file the test reads.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT` of /metrics, /healthz and /readyz.
    pub metrics_addr: String,
    args: Vec<String>,
}

/// A free loopback port (bound then released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    testbed::launch::free_port().expect("a free loopback port")
}

impl Operator {
    /// Starts `origin-region-operator run` with the kubeconfig and extra arguments.
    pub fn start(kubeconfig: &std::path::Path, args: &[String]) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut all = vec![
            "run".to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--metrics-addr".into(),
            metrics_addr.clone(),
        ];
        all.extend(args.iter().cloned());
        let mut op = Operator {
            child: None,
            // OPERATOR_LOG=<path> keeps the log after the test (to study a chaos failure).
            log: std::env::var_os("OPERATOR_LOG")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| dir.path().join("operator.log")),
            _dir: dir,
            metrics_addr,
            args: all,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_origin-region-operator"))
            .args(&self.args)
            .env("RUST_LOG", "info,origin_region_operator=debug")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn origin-region-operator");
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe_kill(c.id(), "TERM");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the process again with the same arguments (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's /metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .unwrap()
    }

    /// Sum of a metric's samples whose line contains every `filter` substring.
    pub async fn metric_sum(&self, name: &str, filters: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Panics if the log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "operator panicked:\n{log}");
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- operator log ---\n{}", self.log());
        }
    }
}
