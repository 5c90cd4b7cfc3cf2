//! `crds/` must hold exactly what `origin-region-operator crd` prints.

use std::process::Command;

fn generated(kind: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_origin-region-operator"));
    cmd.arg("crd");
    if let Some(k) = kind {
        cmd.args(["--kind", k]);
    }
    let out = cmd.output().expect("running the operator binary");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (kind, file) in [
        (
            "mappings",
            "originregions.io_origincloudregionmappings.yaml",
        ),
        ("zones", "originregions.io_cloudflarezones.yaml"),
    ] {
        let want = generated(Some(kind));
        // The chart carries copies (Helm cannot reach outside its directory); they must never
        // drift from the generated CRDs.
        for dir in ["crds", "deploy/helm/origin-region-operator/crds"] {
            let path = format!("{root}/{dir}/{file}");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                text == want,
                "{path} is stale: run `cargo run -q -- crd --kind {kind} > {path}`"
            );
        }
    }
    // The plain manifests carry both in one file.
    let path = format!("{root}/deploy/manifests/crd.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        text == generated(None),
        "{path} is stale: run `cargo run -q -- crd > {path}`"
    );
}
