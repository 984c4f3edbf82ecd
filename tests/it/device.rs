//! `--device cuda` never falls back to the CPU: a build without the `cuda` feature refuses it,
//! from the flag or from FACEDETECT_DEVICE, with an error that says so, before any photo is read.

use std::process::Command;

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_build_without_the_feature_is_refused() {
    let photo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pkg/images/large/t1.webp"
    );
    let facedetect = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect"));
        command.env_remove("FACEDETECT_DEVICE");
        command
    };
    let by_flag = facedetect()
        .args(["encode", "--device", "cuda", photo])
        .output()
        .expect("facedetect runs");
    let by_env = facedetect()
        .args(["encode", photo])
        .env("FACEDETECT_DEVICE", "cuda")
        .output()
        .expect("facedetect runs");
    for output in [by_flag, by_env] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing is encoded on the CPU");
        assert!(
            stderr.contains("--device cuda: this facedetect was built without the `cuda` feature"),
            "{stderr}"
        );
    }
}
