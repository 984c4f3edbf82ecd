#!/usr/bin/env bash
# Tests the aarch64 wheel on an x86-64 Debian machine, under qemu's user-mode emulation: an
# arm64 CPython from Debian's packages (unpacked, not installed), numpy, Pillow, click, pytest
# and face_recognition_models as PyPI's aarch64 wheels, then the package's own tests and
# face_recognition 1.3.0's test suite, as .ci/run runs them on x86-64.
#
#   scripts/test-aarch64-wheel.sh WHEEL [WORK_DIR]
#
# Needs root (apt-get), network access to Debian's and PyPI's mirrors, and pip. The wheel is
# built as the README says (maturin build --zig --target aarch64-unknown-linux-gnu ...).
# Under emulation everything runs 10 to 30 times slower than natively.
set -euo pipefail

wheel=$(realpath "${1:?usage: test-aarch64-wheel.sh WHEEL [WORK_DIR]}")
work=${2:-/tmp/facedetect-aarch64}
repo=$(cd "$(dirname "$0")/.." && pwd)
root="$work/root"
site="$work/site"
python_version=3.11

if ! command -v qemu-aarch64-static >/dev/null; then
    apt-get install -y -q qemu-user-static >/dev/null
fi
if [ ! -x "$root/usr/bin/python$python_version" ]; then
    dpkg --add-architecture arm64
    apt-get update -q >/dev/null
    mkdir -p "$work/debs" "$root"
    (cd "$work/debs" && apt-get download -q \
        "python$python_version-minimal:arm64" "libpython$python_version-minimal:arm64" \
        "libpython$python_version-stdlib:arm64" libc6:arm64 libexpat1:arm64 zlib1g:arm64 \
        libffi8:arm64 libssl3:arm64 libgcc-s1:arm64 libstdc++6:arm64 libbz2-1.0:arm64 \
        liblzma5:arm64 libsqlite3-0:arm64 libuuid1:arm64 libncursesw6:arm64 libtinfo6:arm64 \
        libreadline8:arm64 libcrypt1:arm64 libnsl2:arm64 libtirpc3:arm64 libdb5.3:arm64 \
        libgdbm6:arm64)
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$root"; done
fi

rm -rf "$site"
pip_arm64() {
    pip install --quiet --disable-pip-version-check --target "$site" --only-binary=:all: \
        --implementation cp --python-version "$python_version" \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 "$@"
}
pip_arm64 numpy pillow click pytest face_recognition_models
pip_arm64 --no-deps --upgrade "$wheel"

python_arm64() {
    QEMU_LD_PREFIX="$root" PYTHONPATH="$site" \
        qemu-aarch64-static "$root/usr/bin/python$python_version" "$@"
}
python_arm64 -c 'import platform, facedetect; print(platform.machine(), "facedetect", facedetect.__version__)'
python_arm64 -m pytest -q -p no:cacheprovider "$repo/python/tests"

frdir="$work/face_recognition"
rm -rf "$frdir" && mkdir -p "$frdir"
pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    face_recognition==1.3.0 -d "$frdir"
tar -xzf "$frdir/face_recognition-1.3.0.tar.gz" -C "$frdir"
tests="$frdir/face_recognition-1.3.0/tests/test_face_recognition.py"
sed -i 's/^from face_recognition import /from facedetect import /' "$tests"
test "$(grep -c 'face_recognition import' "$tests")" = 0
(cd "$frdir/face_recognition-1.3.0" && python_arm64 -m pytest -q -p no:cacheprovider tests/test_face_recognition.py)
