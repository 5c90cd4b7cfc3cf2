//! Locating the binaries the control plane runs.
//!
//! kube-apiserver, kubectl and helm are built from source by `hack/build-kube-bins`
//! (no registry we reach ships them). That script exports `KUBE_APISERVER_BIN`,
//! `KUBECTL_BIN` and `HELM_BIN`; without those variables we look in the script's cache
//! directory, computed here exactly as the script does:
//! `$HOME/.cache/origin-region-operator/<kube|helm>/<version>-<sha256(go.sum)[..16]>/`.
//! A missing binary is an error, never a reason to skip a test.

use std::path::{Path, PathBuf};

use crate::Error;

/// Env var naming the kube-apiserver binary; set by `hack/build-kube-bins`.
pub const KUBE_APISERVER_ENV: &str = "KUBE_APISERVER_BIN";
/// Env var naming the kubectl binary; set by `hack/build-kube-bins`.
pub const KUBECTL_ENV: &str = "KUBECTL_BIN";
/// Env var naming the helm binary; set by `hack/build-kube-bins`.
pub const HELM_ENV: &str = "HELM_BIN";
/// Env var overriding the vendored etcd binary (normally not needed).
pub const ETCD_ENV: &str = "ETCD_BIN";

/// The command that builds the Go binaries, for error messages.
pub const BUILD_HINT: &str = "build them with `hack/build-kube-bins` from the repository root \
     (cold build ~6 min on 2 cores, then cached); its output also sets KUBE_APISERVER_BIN, \
     KUBECTL_BIN and HELM_BIN for `eval \"$(hack/build-kube-bins)\"`";

/// The repository root, known at compile time (the tests run from this workspace).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Root of the binary cache shared with `hack/build-kube-bins`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("ORIGIN_REGION_OPERATOR_CACHE") {
        return PathBuf::from(dir);
    }
    // Same as the script's `$HOME/.cache/origin-region-operator`.
    std::env::home_dir()
        .unwrap_or_default()
        .join(".cache/origin-region-operator")
}

/// The version a Go wrapper module pins for `module` (`require module vX` in go.mod).
fn module_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        let (name, version) = if first == "require" {
            (words.next()?, words.next()?)
        } else {
            (first, words.next()?)
        };
        (name == module && version.starts_with('v')).then(|| version.to_owned())
    })
}

/// `<version>-<first 16 hex digits of sha256(go.sum)>`, the same key as the script's
/// `cache_key`: a change to the pinned dependencies never reuses a stale binary.
fn cache_key(module_dir: &Path, module: &str) -> Result<String, Error> {
    let read = |name: &str| {
        let path = module_dir.join(name);
        std::fs::read(&path).map_err(|e| Error::Io(format!("reading {}", path.display()), e))
    };
    let go_mod = String::from_utf8_lossy(&read("go.mod")?).into_owned();
    let version = module_version(&go_mod, module).ok_or_else(|| {
        Error::MissingBinary(format!(
            "no `{module}` version in {}/go.mod",
            module_dir.display()
        ))
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &read("go.sum")?);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{version}-{hex}"))
}

/// Cache directory holding kube-apiserver and kubectl for the pinned Kubernetes.
pub fn kube_cache_dir() -> Result<PathBuf, Error> {
    let key = cache_key(&repo_root().join("tools/kubebin"), "k8s.io/kubernetes")?;
    Ok(cache_root().join("kube").join(key))
}

/// Cache directory holding helm for the pinned helm version.
pub fn helm_cache_dir() -> Result<PathBuf, Error> {
    let key = cache_key(&repo_root().join("tools/helm"), "helm.sh/helm/v3")?;
    Ok(cache_root().join("helm").join(key))
}

/// `$env` if set, else `dir()/name`; either must exist.
fn locate(env: &str, name: &str, dir: fn() -> Result<PathBuf, Error>) -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingBinary(format!(
                "{env}={} does not exist; {BUILD_HINT}",
                path.display()
            )))
        };
    }
    let path = dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary(format!(
            "{name} not found: {env} is unset and {} does not exist; {BUILD_HINT}",
            path.display()
        )))
    }
}

/// Path of the kube-apiserver built by `hack/build-kube-bins`.
pub fn kube_apiserver() -> Result<PathBuf, Error> {
    locate(KUBE_APISERVER_ENV, "kube-apiserver", kube_cache_dir)
}

/// Path of the kubectl built by `hack/build-kube-bins` (same version as the server).
pub fn kubectl() -> Result<PathBuf, Error> {
    locate(KUBECTL_ENV, "kubectl", kube_cache_dir)
}

/// Path of the helm built by `hack/build-kube-bins`.
pub fn helm() -> Result<PathBuf, Error> {
    locate(HELM_ENV, "helm", helm_cache_dir)
}

/// Path of upstream etcd shipped by the `etcd-bin-vendored` crate (or `$ETCD_BIN`).
pub fn etcd() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(ETCD_ENV) {
        return Ok(PathBuf::from(path));
    }
    let path = etcd_bin_vendored::etcd_bin_path()
        .map_err(|e| Error::MissingBinary(format!("etcd: {e}")))?;
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::MissingBinary(format!(
            "etcd-bin-vendored's binary {} is missing",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_version_reads_both_require_forms() {
        let single = "module x\n\nrequire k8s.io/kubernetes v1.36.3\n";
        let block = "require (\n\thelm.sh/helm/v3 v3.22.0\n)\nreplace (\n\tk8s.io/api => k8s.io/api v0.36.3\n)\n";
        assert_eq!(
            module_version(single, "k8s.io/kubernetes").as_deref(),
            Some("v1.36.3")
        );
        assert_eq!(
            module_version(block, "helm.sh/helm/v3").as_deref(),
            Some("v3.22.0")
        );
        assert_eq!(module_version(block, "k8s.io/api"), None);
    }

    #[test]
    fn missing_binary_error_says_how_to_build() {
        let err = locate("TESTBED_SURELY_UNSET_VAR", "nothing-here", || {
            Ok(PathBuf::from("/nonexistent"))
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("hack/build-kube-bins"), "{msg}");
        assert!(msg.contains("/nonexistent/nothing-here"), "{msg}");
    }
}
