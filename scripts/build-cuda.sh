#!/usr/bin/env bash
# Builds `facedetect` with the `cuda` feature on a machine with no GPU and no CUDA install.
#
# NVIDIA's CUDA 13.0 toolkit comes from PyPI wheels, installed into a virtual environment outside
# the repository. The wheels lack two things a toolkit has, so the script builds a toolkit-shaped
# folder over them: unversioned `libX.so` links for the linker, and `lib64/stubs/libcuda.so`, a
# stub of the driver library (soname libcuda.so.1) that defines the driver functions cudarc calls;
# at run time the driver's own libcuda.so.1 is loaded instead. CUDA 13.0, not a newer 13.x:
# candle's kernels are PTX that the driver compiles when loading them, and a driver refuses PTX
# from an nvcc newer than itself (13.0 needs driver 580 or later).
#
# Usage: scripts/build-cuda.sh [--compute-cap N] [--venv DIR] [--xz] [--toolkit-only]
#   --compute-cap N  GPU compute capability the kernels are built for (default: $CUDA_COMPUTE_CAP,
#                    else 90): 90 H100/H200, 89 L4 (g6), 86 A10G (g5), 80 A100.
#   --venv DIR       where the toolkit wheels go (default: $FACEDETECT_CUDA_VENV, else
#                    ~/.cache/concrexit-facedetection/cuda-13.0; about 2.2 GB with cuDNN).
#   --xz             also write a stripped, xz-compressed copy of the binary,
#                    $CARGO_TARGET_DIR/facedetect-cuda.xz, for carrying to a GPU machine.
#   --toolkit-only   only install and prepare the toolkit, then print the environment variables
#                    that use it (for `eval`, e.g. before `cargo clippy --features cuda`).
# The build goes to $CARGO_TARGET_DIR (default: target/cuda), so that it and the CPU build do
# not rebuild each other. The binary is $CARGO_TARGET_DIR/release/facedetect.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
compute_cap="${CUDA_COMPUTE_CAP:-90}"
venv="${FACEDETECT_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/concrexit-facedetection/cuda-13.0}"
compress=false
toolkit_only=false
while [ $# -gt 0 ]; do
    case "$1" in
        --compute-cap) compute_cap="${2:?--compute-cap needs a value}"; shift 2 ;;
        --venv) venv="${2:?--venv needs a directory}"; shift 2 ;;
        --xz) compress=true; shift ;;
        --toolkit-only) toolkit_only=true; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-cuda.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$compute_cap" in
    [0-9][0-9] | [0-9][0-9][0-9]) ;;
    *) echo "build-cuda.sh: --compute-cap must be a number such as 90, 89, 86 or 80" >&2; exit 2 ;;
esac

# The CUDA 13.0 toolkit: compiler, headers, and the libraries candle links.
pins=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
    nvidia-cudnn-cu13==9.21.1.3
)
log() { echo "build-cuda.sh: $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv"
fi
log "installing the CUDA 13.0 wheels"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cu13="$site/nvidia/cu13"
[ -x "$cu13/bin/nvcc" ] || { log "no nvcc in $cu13/bin"; exit 1; }

# A toolkit-shaped folder over the wheels' cu13 folder. Updated in place, never removed, so that
# builds sharing the virtual environment do not pull it from under one another.
home="$venv/cuda-home"
mkdir -p "$home/lib64/stubs"
for dir in bin include nvvm; do ln -sfn "$cu13/$dir" "$home/$dir"; done
# cuDNN 9 (the convolutions) comes from its own wheel, in nvidia/cudnn/lib.
for lib in "$cu13"/lib/lib*.so.* "$site"/nvidia/cudnn/lib/libcudnn*.so.*; do
    name="$(basename "$lib")"
    ln -sfn "$lib" "$home/lib64/$name"
    ln -sfn "$lib" "$home/lib64/${name%%.so.*}.so"
done

export CUDA_HOME="$home" CUDA_PATH="$home" CUDA_ROOT="$home" CUDA_COMPUTE_CAP="$compute_cap"
export PATH="$home/bin:$PATH"
export LIBRARY_PATH="$home/lib64:$home/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda}"
if $toolkit_only; then
    for var in CUDA_HOME CUDA_PATH CUDA_ROOT CUDA_COMPUTE_CAP PATH LIBRARY_PATH CARGO_TARGET_DIR; do
        printf 'export %s=%q\n' "$var" "${!var}"
    done
    exit 0
fi

cd "$repo"
start=$SECONDS
log "building the library (CUDA_COMPUTE_CAP=$compute_cap, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release --features cuda --lib

# The driver stub: one empty function for each driver symbol (cu[A-Z]...) cudarc's code refers to.
mapfile -t symbols < <(
    for rlib in "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib; do nm "$rlib" 2>/dev/null || true; done |
        awk '$1 == "U" && $2 ~ /^cu[A-Z]/ { print $2 }' | sort -u
)
[ "${#symbols[@]}" -gt 0 ] || { log "no driver symbols found in libcudarc's rlib"; exit 1; }
stub="$home/lib64/stubs/libcuda.so"
printf 'void %s(void) {}\n' "${symbols[@]}" >"$stub.$$.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub.$$" "$stub.$$.c"
mv -f "$stub.$$" "$stub"
rm -f "$stub.$$.c"
log "driver stub: ${#symbols[@]} functions"

cargo build --release --features cuda --bin facedetect
binary="$CARGO_TARGET_DIR/release/facedetect"
log "built $binary in $((SECONDS - start)) s ($(du -m "$binary" | cut -f1) MB); it loads:"
readelf -d "$binary" | awk '/NEEDED/ { gsub(/[][]/, "", $5); print "  " $5 }' >&2

if $compress; then
    stripped="$CARGO_TARGET_DIR/facedetect-cuda"
    strip -o "$stripped" "$binary"
    xz -T0 -9 -c "$stripped" >"$stripped.xz.tmp"
    mv "$stripped.xz.tmp" "$stripped.xz"
    rm "$stripped"
    log "wrote $stripped.xz ($(du -m "$stripped.xz" | cut -f1) MB; $(xz -l --robot "$stripped.xz" | awk '$1 == "totals" { printf "%d", $5 / 1048576 }') MB stripped)"
fi
