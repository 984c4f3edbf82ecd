#!/usr/bin/env bash
# Builds the Lambda function as a zip for the provided.al2023 runtime: cargo-lambda compiles
# facedetect-lambda with the deployment profile, linking with zig against an older glibc than
# the runtime's 2.34, and packages it as `bootstrap` with weights/ beside it (the function finds
# weights/ in its working directory, /var/task). Then checks the binary's glibc symbols and
# prints the zip's path and size.
#
#   pip install cargo-lambda ziglang      # once
#   scripts/build-lambda-zip.sh
#
# The zip lands in $CARGO_TARGET_DIR/lambda/facedetect-lambda/bootstrap.zip (target/ by default);
# upload it with `aws lambda update-function-code --zip-file fileb://...` or use the container
# image (Dockerfile.cpu), which Terraform deploys.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
export CARGO_TARGET_DIR=$target_dir

# The deploy profile sets strip, LTO, one codegen unit and panic=unwind itself, so cargo-lambda
# adds none of its release defaults (one of which is panic=abort).
cargo lambda build --profile deploy --no-default-features --features lambda --bin facedetect-lambda \
    --output-format zip --include weights

zip_path="$target_dir/lambda/facedetect-lambda/bootstrap.zip"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
unzip -q "$zip_path" -d "$unpacked"
for file in bootstrap weights/dlib_face_recognition_resnet_model_v1.safetensors \
    weights/shape_predictor_5_face_landmarks.safetensors \
    weights/frontal_face_detector.safetensors weights/mmod_human_face_detector.safetensors; do
    [ -f "$unpacked/$file" ] || { echo "$zip_path lacks $file" >&2; exit 1; }
done
scripts/check-glibc.sh "$unpacked/bootstrap" 2.34
if readelf --dynamic "$unpacked/bootstrap" | grep -iE 'cuda|cublas|nvrtc'; then
    echo "the Lambda binary links CUDA" >&2
    exit 1
fi
echo "$zip_path: $(stat -c %s "$zip_path") bytes (bootstrap $(stat -c %s "$unpacked/bootstrap") bytes unpacked)"
