//! `testbed`: the envtest of origin-region-operator.
//!
//! Starts a real etcd and kube-apiserver on free loopback ports, so that end-to-end
//! tests exercise real watches, resourceVersions, finalizers, the status subresource,
//! server-side apply, CRD structural schemas with CEL validation, and RBAC. No mock of
//! the Kubernetes API counts for e2e (issue 3, design.md §6).
//!
//! The API is async (tokio): [`ControlPlane::start`] and [`shared`] return once
//! `/readyz` answers `ok`. Clients are built on demand with [`ControlPlane::client`]
//! and friends, in the caller's runtime, because a `kube::Client` belongs to the
//! runtime that built it and every `#[tokio::test]` has its own runtime.
//!
//! ```no_run
//! # async fn demo() -> testbed::Result<()> {
//! let cp = testbed::shared().await; // one control plane per test binary
//! let ns = cp.create_namespace("my-test").await?; // isolate each test
//! let client = cp.client(); // admin (system:masters)
//! let denied = cp.unprivileged_client(); // no RBAC grants at all
//! # let _ = (ns, client, denied); Ok(()) }
//! ```
//!
//! Binaries: kube-apiserver and kubectl come from `hack/build-kube-bins` (see
//! [`bins`]); etcd comes from the `etcd-bin-vendored` crate. A missing binary makes
//! [`ControlPlane::start`] fail with instructions; tests never skip.
//!
//! Cleanup (details in src/reaper.rs): etcd and kube-apiserver are killed by PID on
//! drop, at process exit for [`shared`], and by the kernel (`PR_SET_PDEATHSIG`) if the
//! test process dies; state dirs of killed runs are swept by the next start.
//!
//! Environment: `KUBE_APISERVER_BIN`, `KUBECTL_BIN`, `HELM_BIN`, `ETCD_BIN` override
//! binaries; `TESTBED_KEEP=1` keeps state dirs and logs; `TESTBED_STATE_DIR` (default
//! `/dev/shm/origin-region-operator-testbed`); `TESTBED_START_TIMEOUT_SECS` (180).

#![warn(missing_docs)]

pub mod bins;
pub mod launch;
mod reaper;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Config};

/// Errors from starting or driving the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required binary is missing; the message says how to build it.
    #[error("{0}")]
    MissingBinary(String),
    /// A filesystem or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// etcd or kube-apiserver did not come up; includes the tail of its log.
    #[error("control plane: {0}")]
    Startup(String),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// kubectl exited unsuccessfully.
    #[error("`kubectl {args}` failed ({status}): {stderr}")]
    Kubectl {
        /// The arguments kubectl ran with.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error.
        stderr: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// User name of the admin identity (member of `system:masters`).
pub const ADMIN_USER: &str = "testbed-admin";
/// User name of the unprivileged identity (no RBAC grants unless a test adds some).
pub const UNPRIVILEGED_USER: &str = "testbed-user";
/// Group of the unprivileged identity, handy as an RBAC subject.
pub const UNPRIVILEGED_GROUP: &str = "testbed-users";
/// The service-account token issuer the apiserver is configured with.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";
/// Label put on every namespace made by [`ControlPlane::create_namespace`].
pub const NAMESPACE_LABEL: &str = "testbed.origin-region-operator.io/test";

/// How long [`ControlPlane::start`] waits for readiness; under heavy contention on a
/// 2-core machine a cold kube-apiserver needed far more than its usual 4 s.
fn start_timeout() -> Duration {
    let secs = std::env::var("TESTBED_START_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// Where state dirs live: RAM-backed /dev/shm keeps etcd fast and leaves no disk litter.
fn state_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESTBED_STATE_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join("origin-region-operator-testbed")
}

/// Running child processes; behind a mutex because restarts go through `&self`
/// (the shared control plane is a `&'static`).
struct Procs {
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

/// A running etcd + kube-apiserver pair, stopped and removed on drop.
pub struct ControlPlane {
    dir: PathBuf,
    server_url: String,
    etcd_url: String,
    admin_token: String,
    unprivileged_token: String,
    kubeconfig: PathBuf,
    kubectl_bin: PathBuf,
    apiserver_bin: PathBuf,
    apiserver_args: Vec<OsString>,
    ca: OnceLock<Vec<Vec<u8>>>,
    procs: Mutex<Procs>,
    keep_dir: bool,
}

impl fmt::Debug for ControlPlane {
    // Hand-written so the tokens never reach test output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("etcd_url", &self.etcd_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Io(what, e)
}

/// Random lowercase hex, for tokens and names.
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("system RNG");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM-encodes DER bytes.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// DER bodies of all `CERTIFICATE` blocks in a PEM file.
fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match line {
            "-----BEGIN CERTIFICATE-----" => body = Some(String::new()),
            "-----END CERTIFICATE-----" => {
                if let Some(b64) = body.take() {
                    if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
                        certs.push(der);
                    }
                }
            }
            _ => {
                if let Some(b) = body.as_mut() {
                    b.push_str(line);
                }
            }
        }
    }
    certs
}

/// A fresh ECDSA P-256 key pair for service-account tokens, as PEM
/// `(private PKCS#8, public SPKI)`.
///
/// `--service-account-signing-key-file` takes the private key and
/// `--service-account-key-file` the public one (it rejects a private key). ring makes
/// them, so no openssl is needed.
pub fn generate_service_account_keys() -> (String, String) {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 =
        ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generating an ECDSA key");
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
        .expect("parsing the key just generated");
    // SubjectPublicKeyInfo for id-ecPublicKey/prime256v1 is this fixed header followed
    // by the 65-byte uncompressed point ring returns.
    const SPKI_P256_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut spki = SPKI_P256_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    (
        pem_encode("PRIVATE KEY", pkcs8.as_ref()),
        pem_encode("PUBLIC KEY", &spki),
    )
}

/// Writes a file only the owner can read: it holds tokens or keys.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

/// `n` distinct free loopback ports. The listeners are held until all are chosen so
/// they differ; another process could still grab one before etcd/kube-apiserver
/// bind it, which `start` handles by retrying on "address already in use".
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_err("binding a loopback port"))?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l
            .local_addr()
            .map_err(io_err("reading a bound port"))?
            .port();
    }
    Ok(ports)
}

/// Last lines of a log file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        all[start..].join("\n")
    )
}

/// Opens a process log for appending (kept across apiserver restarts).
fn log_file(path: &Path) -> Result<(Stdio, Stdio)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    let f2 = f
        .try_clone()
        .map_err(io_err(format!("cloning {}", path.display())))?;
    Ok((f.into(), f2.into()))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on free loopback ports and waits for `/readyz`.
    ///
    /// Fails (never skips) if a binary is missing, with instructions to run
    /// `hack/build-kube-bins`. Set `TESTBED_KEEP=1` to keep the state dir and logs.
    pub async fn start() -> Result<Self> {
        let apiserver_bin = bins::kube_apiserver()?;
        let kubectl_bin = bins::kubectl()?;
        let etcd_bin = bins::etcd()?;
        let root = state_root();
        std::fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
        reaper::sweep_stale(&root);

        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(&root, &etcd_bin, &apiserver_bin, &kubectl_bin).await {
                Err(Error::Startup(msg))
                    if attempt < 3 && msg.to_lowercase().contains("address already in use") =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    async fn try_start(
        root: &Path,
        etcd_bin: &Path,
        apiserver_bin: &Path,
        kubectl_bin: &Path,
    ) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let began = Instant::now();
        let deadline = began + start_timeout();
        // Named `<pid>-<n>` so that a later run can sweep it if this process is killed.
        let dir = root.join(format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let cert_dir = dir.join("certs");
        std::fs::create_dir_all(&cert_dir)
            .map_err(io_err(format!("creating {}", cert_dir.display())))?;

        let [etcd_port, peer_port, api_port] = free_ports::<3>()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let server_url = format!("https://127.0.0.1:{api_port}");

        let admin_token = random_hex(24);
        let unprivileged_token = random_hex(24);
        let tokens = dir.join("tokens.csv");
        // Static token file: token,user,uid,"groups".
        write_private(
            &tokens,
            &format!(
                "{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n\
                 {unprivileged_token},{UNPRIVILEGED_USER},{UNPRIVILEGED_USER},\"{UNPRIVILEGED_GROUP}\"\n"
            ),
        )?;
        let (sa_key, sa_pub) = (dir.join("sa.key"), dir.join("sa.pub"));
        let (private, public) = generate_service_account_keys();
        write_private(&sa_key, &private)?;
        write_private(&sa_pub, &public)?;

        let etcd_data = dir.join("etcd");
        let (out, err) = log_file(&dir.join("etcd.log"))?;
        let mut etcd = Command::new(etcd_bin);
        etcd.args(["--name", "testbed", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(&etcd_data)
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("testbed={peer_url}")])
            // Throwaway data on tmpfs: durability buys nothing and fsync costs a lot.
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let etcd =
            reaper::spawn(etcd).map_err(io_err(format!("starting {}", etcd_bin.display())))?;

        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
            let mut s = OsString::from(format!("--{k}="));
            s.push(v.as_ref());
            args.push(s);
        };
        arg("etcd-servers", &etcd_url);
        arg("bind-address", &"127.0.0.1");
        arg("secure-port", &api_port.to_string());
        arg("advertise-address", &"127.0.0.1");
        // No kubernetes Service endpoints to maintain: nothing in the cluster dials it.
        arg("endpoint-reconciler-type", &"none");
        // The apiserver writes a self-signed serving cert and its CA here.
        arg("cert-dir", &cert_dir);
        arg("token-auth-file", &tokens);
        arg("authorization-mode", &"RBAC");
        arg("service-account-issuer", &SERVICE_ACCOUNT_ISSUER);
        arg("service-account-key-file", &sa_pub);
        arg("service-account-signing-key-file", &sa_key);
        arg("service-cluster-ip-range", &"10.96.0.0/12");
        // No controller-manager creates `default` ServiceAccounts; pods must not need one.
        arg("disable-admission-plugins", &"ServiceAccount");
        arg("profiling", &"false");

        let cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            server_url,
            etcd_url,
            admin_token,
            unprivileged_token,
            kubectl_bin: kubectl_bin.to_path_buf(),
            apiserver_bin: apiserver_bin.to_path_buf(),
            apiserver_args: args,
            ca: OnceLock::new(),
            procs: Mutex::new(Procs {
                etcd: Some(etcd),
                apiserver: None,
            }),
            keep_dir: std::env::var_os("TESTBED_KEEP").is_some_and(|v| v != "0" && !v.is_empty()),
        };
        // From here on, an early return drops `cp`, which kills what was started.
        cp.wait_etcd(etcd_port, deadline).await?;
        cp.spawn_apiserver()?;
        cp.wait_ready(deadline).await?;
        cp.write_kubeconfig()?;
        eprintln!(
            "testbed: control plane ready at {} in {:.1}s (state {})",
            cp.server_url,
            began.elapsed().as_secs_f64(),
            cp.dir.display()
        );
        Ok(cp)
    }

    /// Errors if a process died; `Ok(())` while both that should run are running.
    fn check_alive(&self) -> Result<()> {
        let mut guard = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let procs = &mut *guard;
        for (name, child, log) in [
            ("etcd", procs.etcd.as_mut(), "etcd.log"),
            (
                "kube-apiserver",
                procs.apiserver.as_mut(),
                "kube-apiserver.log",
            ),
        ] {
            if let Some(child) = child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Startup(format!(
                        "{name} exited ({status}); {}",
                        log_tail(&self.dir.join(log), 30)
                    )));
                }
            }
        }
        Ok(())
    }

    async fn wait_etcd(&self, port: u16, deadline: Instant) -> Result<()> {
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Startup(format!(
                    "etcd did not listen on port {port} in time; {}",
                    log_tail(&self.dir.join("etcd.log"), 30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn_apiserver(&self) -> Result<()> {
        let (out, err) = log_file(&self.dir.join("kube-apiserver.log"))?;
        let mut cmd = Command::new(&self.apiserver_bin);
        cmd.args(&self.apiserver_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = reaper::spawn(cmd)
            .map_err(io_err(format!("starting {}", self.apiserver_bin.display())))?;
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apiserver = Some(child);
        Ok(())
    }

    /// Polls `/readyz` as admin until it says `ok`, a process dies, or time runs out.
    async fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let cert = self.dir.join("certs/apiserver.crt");
        let mut last = String::from("no attempt yet");
        loop {
            self.check_alive()?;
            // The apiserver writes its self-signed cert (leaf + CA) at startup.
            let ca = std::fs::read_to_string(&cert)
                .map(|pem| pem_certs(&pem))
                .unwrap_or_default();
            if !ca.is_empty() {
                let mut config = self.config_with_ca(&self.admin_token, ca.clone());
                config.connect_timeout = Some(Duration::from_secs(2));
                config.read_timeout = Some(Duration::from_secs(5));
                match Client::try_from(config) {
                    Ok(client) => {
                        let req = http::Request::get("/readyz")
                            .body(Vec::new())
                            .expect("static request");
                        match client.request_text(req).await {
                            Ok(body) if body.trim() == "ok" => {
                                let _ = self.ca.set(ca);
                                return Ok(());
                            }
                            Ok(body) => last = body,
                            Err(e) => last = e.to_string(),
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Startup(format!(
                    "kube-apiserver not ready after {:?} (last /readyz: {last}); {}",
                    start_timeout(),
                    log_tail(&self.dir.join("kube-apiserver.log"), 30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn write_kubeconfig(&self) -> Result<()> {
        let ca = self.dir.join("certs/apiserver.crt");
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: testbed\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n\
             - name: {ADMIN_USER}\n  user:\n    token: {token}\n\
             - name: {UNPRIVILEGED_USER}\n  user:\n    token: {utoken}\n\
             contexts:\n\
             - name: testbed\n  context:\n    cluster: testbed\n    user: {ADMIN_USER}\n    namespace: default\n\
             - name: testbed-unprivileged\n  context:\n    cluster: testbed\n    user: {UNPRIVILEGED_USER}\n    namespace: default\n\
             current-context: testbed\n",
            server = self.server_url,
            ca = ca.display(),
            token = self.admin_token,
            utoken = self.unprivileged_token,
        );
        write_private(&self.kubeconfig, &text)
    }

    fn config_with_ca(&self, token: &str, ca: Vec<Vec<u8>>) -> Config {
        let mut config = Config::new(self.server_url.parse().expect("server URL is a valid URI"));
        config.root_cert = Some(ca);
        config.auth_info.token = Some(token.to_owned().into());
        config
    }

    /// A client config authenticating with `token` (any bearer token: static or SA).
    pub fn config_for_token(&self, token: &str) -> Config {
        let ca = self.ca.get().expect("CA is loaded once start() returned");
        self.config_with_ca(token, ca.clone())
    }

    /// A client for an arbitrary bearer token, e.g. from [`Self::service_account_token`].
    ///
    /// Must be called inside a tokio runtime; the client lives in that runtime.
    pub fn client_for_token(&self, token: &str) -> Client {
        Client::try_from(self.config_for_token(token)).expect("building a kube client")
    }

    /// Client config of the admin identity (`system:masters`).
    pub fn admin_config(&self) -> Config {
        self.config_for_token(&self.admin_token)
    }

    /// A client for the admin identity (`system:masters`); call inside a tokio runtime.
    pub fn client(&self) -> Client {
        self.client_for_token(&self.admin_token)
    }

    /// A client for [`UNPRIVILEGED_USER`], who has no RBAC grants unless a test adds them.
    pub fn unprivileged_client(&self) -> Client {
        self.client_for_token(&self.unprivileged_token)
    }

    /// Path of the admin kubeconfig (context `testbed`; also `testbed-unprivileged`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The etcd client URL, `http://127.0.0.1:<port>`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The admin bearer token. Secret: never log it.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bearer token of [`UNPRIVILEGED_USER`].
    pub fn unprivileged_token(&self) -> &str {
        &self.unprivileged_token
    }

    /// PEM file with the apiserver's serving cert and its CA.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    /// The state dir (tokens, keys, kubeconfig, logs, etcd data); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the kubectl built from source (same version as the server).
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl_bin
    }

    /// `PATH` with the built kubectl (and helm, if built) first: the machine's own
    /// kubectl is a 1.32 dispatcher, four minors behind the server.
    pub fn path_env(&self) -> OsString {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = self.kubectl_bin.parent() {
            dirs.push(d.to_path_buf());
        }
        if let Some(d) = bins::helm()
            .ok()
            .and_then(|h| h.parent().map(Path::to_path_buf))
        {
            dirs.push(d);
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).unwrap_or_default()
    }

    /// Environment for child processes (operator binary, helm, scripts):
    /// `KUBECONFIG` and [`Self::path_env`].
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("KUBECONFIG", self.kubeconfig.clone().into_os_string()),
            ("PATH", self.path_env()),
        ]
    }

    /// A `Command` for the built kubectl, with `KUBECONFIG` and `PATH` set.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl_bin);
        cmd.envs(self.env());
        cmd
    }

    /// Runs kubectl with `args` as admin; returns stdout, or an error with stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with_stdin(args, None).await
    }

    /// Like [`Self::kubectl`], feeding `stdin` (e.g. for `apply -f -`).
    pub async fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::from(self.kubectl_command());
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("running {}", self.kubectl_bin.display())))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(io_err("writing kubectl's stdin"))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(io_err("waiting for kubectl"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// A token for ServiceAccount `namespace/name` via `kubectl create token`
    /// (TokenRequest API, signed with the apiserver's service-account key).
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let out = self
            .kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"])
            .await?;
        Ok(out.trim().to_owned())
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns its name.
    ///
    /// Namespaces are not deleted afterwards: without kube-controller-manager a deleted
    /// namespace stays `Terminating` forever, and the whole etcd goes away at the end.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(name)
    }

    /// Kills kube-apiserver (SIGKILL, like a crash); etcd and its data stay.
    pub fn stop_apiserver(&self) {
        let child = self
            .procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apiserver
            .take();
        if let Some(mut child) = child {
            reaper::kill(&mut child);
        }
    }

    /// Starts kube-apiserver again with the same port, flags, certs and tokens, and
    /// waits for `/readyz`; existing clients and kubeconfigs keep working.
    pub async fn start_apiserver(&self) -> Result<()> {
        let running = self
            .procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apiserver
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !running {
            self.spawn_apiserver()?;
        }
        self.wait_ready(Instant::now() + start_timeout()).await
    }

    /// [`Self::stop_apiserver`] then [`Self::start_apiserver`], keeping etcd's data.
    ///
    /// On [`shared`] this disrupts every test of the binary: chaos tests should use
    /// their own [`ControlPlane::start`].
    pub async fn restart_apiserver(&self) -> Result<()> {
        self.stop_apiserver();
        self.start_apiserver().await
    }

    /// Stops both processes by PID and removes the state dir; idempotent.
    pub fn shutdown(&self) {
        // try_lock at exit: never block process exit on a lock held by a dying thread;
        // PDEATHSIG still kills the children then.
        let procs = match self.procs.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut procs) = procs {
            // apiserver first, so it does not log a storm of etcd errors.
            for child in [procs.apiserver.take(), procs.etcd.take()]
                .iter_mut()
                .flatten()
            {
                reaper::kill(child);
            }
        }
        if self.keep_dir {
            eprintln!("testbed: TESTBED_KEEP set, kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A unique, DNS-1123-safe name: sanitized `prefix` plus a counter and random suffix.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut clean: String = prefix
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "t" } else { clean };
    format!(
        "{clean}-{}-{}",
        N.fetch_add(1, Ordering::Relaxed),
        random_hex(3)
    )
}

/// The process-wide control plane, cached with its start error so every test of a
/// binary fails the same way instead of retrying a slow start.
static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
    tokio::sync::OnceCell::const_new();

extern "C" fn shutdown_shared_at_exit() {
    if let Some(Ok(cp)) = SHARED.get() {
        cp.shutdown();
    }
}

/// One control plane shared by all tests of a test binary, started on first use.
///
/// Statics are never dropped, so it is stopped by an `atexit` handler (libtest leaves
/// through `exit()`), with `PR_SET_PDEATHSIG` as the backstop if the process is
/// killed. Panics with the start error (e.g. how to build missing binaries): tests
/// must fail, not skip. Give each test its own namespace via
/// [`ControlPlane::create_namespace`].
pub async fn shared() -> &'static ControlPlane {
    let result = SHARED
        .get_or_init(|| async {
            // Nothing started here is tied to this test's runtime: processes belong to
            // the spawner thread and clients are rebuilt per caller.
            let result = ControlPlane::start().await.map_err(|e| e.to_string());
            if result.is_ok() {
                // SAFETY: registering a plain extern "C" fn with no captured state.
                unsafe {
                    libc::atexit(shutdown_shared_at_exit);
                }
            }
            result
        })
        .await;
    match result {
        Ok(cp) => cp,
        Err(e) => panic!("testbed::shared(): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("My_Test::case");
        let b = unique_name("My_Test::case");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test--case-"), "{a}");
        assert!(a.len() <= 63);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(unique_name("___").starts_with("t-"));
    }

    #[test]
    fn pem_round_trip() {
        let der = vec![1u8, 2, 3, 250, 251, 252];
        let pem = pem_encode("CERTIFICATE", &der);
        assert_eq!(pem_certs(&(pem.clone() + &pem)), vec![der.clone(), der]);
    }

    #[test]
    fn service_account_keys_are_pem() {
        let (private, public) = generate_service_account_keys();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let b64: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(der.len(), 26 + 65);
    }
}
