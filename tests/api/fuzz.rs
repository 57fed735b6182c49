//! API fuzzing: schemathesis generates requests from the live `/openapi.json` (examples,
//! coverage, fuzzing and stateful phases, every check) and must find nothing: no 5xx, every
//! response conforming to the spec, bad input refused with a 4xx, good input accepted.
//! Skipped (with a notice) where schemathesis is not installed; `.ci/run` installs it.

use std::{path::PathBuf, process::Command};

use crate::helpers::{TestApp, skip};
use testkit::tools::which;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/schemathesis.toml");
const KEY: &str = "fuzz-key";

/// `$SCHEMATHESIS`, or `schemathesis` on the `PATH`.
fn schemathesis() -> Option<PathBuf> {
    std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .or_else(|| which("schemathesis", &[]))
}

crate::on_both_backends!(schemathesis_finds_no_failures);

async fn schemathesis_finds_no_failures(plain: &TestApp) {
    let Some(tool) = schemathesis() else {
        skip(
            "schemathesis is not installed (pip install schemathesis==4.32.5, the version .ci/run pins, or set SCHEMATHESIS)",
        );
        return;
    };
    // Writes need a key, so the run also checks that auth is enforced (`ignored_auth`).
    let app = TestApp::start_like(plain, |s| s.auth.api_keys = Some(KEY.into())).await;
    let spec = app.url("/openapi.json");
    // schemathesis keeps a cache in its working directory; not in the repository.
    let workdir = tempfile::tempdir().expect("temp dir");
    let cwd = workdir.path().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .current_dir(cwd)
            .args(["--config-file", CONFIG, "run", &spec, "--checks", "all"])
            .args(["--max-examples", "200", "--no-color"])
            .args(["--header", &format!("Authorization: Bearer {KEY}")])
            .output()
    })
    .await
    .unwrap()
    .expect("running schemathesis");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The summary says "N generated, N passed".
    let generated = out
        .lines()
        .find_map(|l| l.trim().split_once(" generated, "))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        generated >= 1000,
        "schemathesis ran only {generated} cases (want at least 1000):\n{out}"
    );
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            out.contains(&format!("✅ {phase}")),
            "phase {phase} did not pass:\n{out}"
        );
    }
    eprintln!("schemathesis: {generated} cases, no failures");
    app.stop_shared().await;
}
