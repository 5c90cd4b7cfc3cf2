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
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/origin-region-operator/crds/originregions.io_origincloudregionmappings.yaml"
    );
    if let Ok(chart_copy) = std::fs::read_to_string(chart) {
        assert!(
            chart_copy == generated,
            "the chart's crds/ copy is stale: copy crds/ into it"
        );
    }
}
