#!/usr/bin/env bash
# Puts the CUDA 13 libraries a `--features cuda` build of facedetect loads on LD_LIBRARY_PATH, on a
# GPU machine that has them inside a Python environment (e.g. PyTorch's nvidia-* wheels) rather
# than in a system CUDA install. libcuda.so.1 itself comes from the NVIDIA driver.
#
#   source scripts/gpu-env.sh [ROOT...]         # exports LD_LIBRARY_PATH in this shell
#   eval "$(scripts/gpu-env.sh [ROOT...])"      # the same, from any shell
#
# ROOT: folders to search (default: /opt/torch/.venv). Fails, naming what is missing, when one of
# libcublas.so.13, libcublasLt.so.13, libcudart.so.13, libcurand.so.10, libcudnn.so.9 (cuDNN 9,
# which loads its libcudnn_*.so.9 parts from the same folder) is not found under any ROOT
# or when the driver's libcuda.so.1 is not installed; libnvrtc.so.13's folder is added if found.

_facedetect_gpu_env() {
    # What the binary links (cuBLAS loads cuBLASLt); NVRTC is added when present.
    local roots=("$@") libs=(libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libcurand.so.10 libcudnn.so.9 libnvrtc.so.13)
    [ "${#roots[@]}" -gt 0 ] || roots=(/opt/torch/.venv)
    local lib found dir dirs=() missing=()
    for lib in "${libs[@]}"; do
        found="$(find -L "${roots[@]}" -name "$lib" \( -type f -o -type l \) -print -quit 2>/dev/null)"
        if [ -z "$found" ]; then
            [ "$lib" = libnvrtc.so.13 ] || missing+=("$lib")
            continue
        fi
        dir="$(dirname "$found")"
        case " ${dirs[*]} " in *" $dir "*) ;; *) dirs+=("$dir") ;; esac
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "gpu-env.sh: not found under ${roots[*]}: ${missing[*]}" >&2
        return 1
    fi
    local search=("${dirs[@]}") search_more=() driver=""
    IFS=: read -r -a search_more <<<"${LD_LIBRARY_PATH:-}"
    for dir in "${search[@]}" "${search_more[@]}"; do
        [ -e "$dir/libcuda.so.1" ] && driver="$dir/libcuda.so.1"
    done
    if [ -z "$driver" ] && ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; }; then
        echo "gpu-env.sh: libcuda.so.1 (the NVIDIA driver's library) is not installed" >&2
        return 1
    fi
    local joined
    joined="$(IFS=:; echo "${dirs[*]}")"
    echo "${joined}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    if _facedetect_gpu_env_path="$(_facedetect_gpu_env "$@")"; then
        export LD_LIBRARY_PATH="$_facedetect_gpu_env_path"
        echo "gpu-env.sh: LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >&2
        unset -v _facedetect_gpu_env_path
        unset -f _facedetect_gpu_env
    else
        unset -f _facedetect_gpu_env
        return 1
    fi
else
    set -euo pipefail
    path="$(_facedetect_gpu_env "$@")"
    printf 'export LD_LIBRARY_PATH=%q\n' "$path"
fi
