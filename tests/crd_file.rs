//! `crds/` must hold exactly what `origin-region-operator crd` prints.

use std::process::Command;

#[test]
fn committed_crd_matches_the_generated_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_origin-region-operator"))
        .arg("crd")
        .output()
        .expect("running the operator binary");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/originregions.io_origincloudregionmappings.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("crds/ file exists");
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run -q -- crd > {path}`"
    );
    // The chart and the plain manifests carry copies (Helm and kustomize cannot reach
    // outside their directories); they must never drift from the generated CRD.
    for copy in [
        "/deploy/helm/origin-region-operator/crds/originregions.io_origincloudregionmappings.yaml",
        "/deploy/manifests/crd.yaml",
    ] {
        let path = format!("{}{copy}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(text == generated, "{path} is stale: copy crds/ into it");
    }
}
