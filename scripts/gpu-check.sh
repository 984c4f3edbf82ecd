#!/usr/bin/env bash
# The GPU check of the backfill, in one run of at most 7 minutes: run on a machine with an NVIDIA
# GPU, given the facedetect binary built with `--features cuda` on a machine without one
# (scripts/build-cuda.sh). Needs no Rust, no network: only the binary, this repository's fixtures
# and weights, python3, and the CUDA 13 libraries with cuDNN 9 (found under $CUDA_LIB_ROOT,
# default /opt/torch/.venv, where PyTorch's wheels put them) beside the driver's libcuda.
#
#   scripts/gpu-check.sh BINARY[.xz] [OUT_DIR]        # OUT_DIR defaults to $OUT, else /tmp/gpu-check
#
# 1. smoke (at most 30 s): the driver sees a GPU, the binary's CUDA and cuDNN libraries resolve,
#    a small tensor operation (one aligned chip) and one photo run on the GPU. When any of it
#    fails the check stops there: one line on stderr, `gpu-check: smoke: REASON`, the same in
#    summary.json, exit status 2.
# 2. correctness: the fixtures per photo on the GPU, and batches of 16 and 32 copies of them
#    through the worker's batched pipeline (the batch sizes the throughput steps use), each
#    compared with the CPU: the same rectangles, encodings within 1e-4.
# 3. throughput on the 1200x900 WebP fixtures, decoding included: the CNN path at upsample 1
#    (batches of 16 and 32) and 0, the HOG path, the embedder by batch size.
# 4. summary.json and summary.txt: every step's status, seconds and peak GPU memory (nvidia-smi
#    every 250 ms) beside the planner's figure for its passes (`facedetect plan`), the
#    comparisons and the throughput.
# Each step's stdout goes to STEP.out, its stderr to STEP.err. The whole check has one deadline
# ($GPU_CHECK_SECONDS, default 420): a step gets what is left of it. Exit status: 0 when the
# smoke step passed and every comparison held, 1 otherwise.
set -u

here="$(cd "$(dirname "$0")/.." && pwd)"
binary_in="${1:?usage: scripts/gpu-check.sh BINARY[.xz] [OUT_DIR]}"
out="${2:-${OUT:-/tmp/gpu-check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
sampler=""
trap '[ -z "$sampler" ] || kill "$sampler" 2>/dev/null; rm -rf "$work"' EXIT
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-420}))
python="$(command -v python3 || echo /opt/torch/.venv/bin/python)"
large="$here/tests/fixtures/pkg/images/large"

log() { echo "[gpu-check $(date +%H:%M:%S)] $*" >> "$out/summary.txt"; }
: > "$out/summary.txt"
printf 'step\tstatus\tseconds\tstart\tend\n' > "$out/steps.tsv"

# Stops the check at the smoke step with a one-line reason.
smoke_failed() {
    local reason
    reason="$(printf '%s' "$*" | tr '\n\t' '  ' | cut -c1-300)"
    echo "gpu-check: smoke: $reason" >&2
    log "smoke failed: $reason"
    printf '{"smoke": {"ok": false, "reason": "%s"}}\n' \
        "$(printf '%s' "$reason" | sed 's/\\/\\\\/g; s/"/\\"/g')" > "$out/summary.json"
    exit 2
}

# The last line a failed command wrote on stderr, for a one-line reason.
last_error() { grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1; }

# run STEP LIMIT COMMAND...: one step, within LIMIT seconds and what is left of the deadline.
run() {
    local step="$1" limit="$2"
    shift 2
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 5 ]; then
        log "$step: not run, the deadline has passed"
        printf '%s\t%s\t0\t0\t0\n' "$step" 124 >> "$out/steps.tsv"
        return 124
    fi
    [ "$limit" -le "$left" ] || limit="$left"
    local start end status seconds
    start="$(date +%s.%N)"
    timeout --kill-after=5 "$limit" "$@" > "$out/$step.out" 2> "$out/$step.err"
    status=$?
    end="$(date +%s.%N)"
    seconds="$(awk "BEGIN { printf \"%.1f\", $end - $start }")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$status" "$seconds" "$start" "$end" >> "$out/steps.tsv"
    log "$step: exit $status ($seconds s)"
    return "$status"
}

# 1. Smoke, within 30 s.
smoke_end=$((SECONDS + 30))
smoke_limit() { local left=$((smoke_end - SECONDS)); [ "$left" -gt "$1" ] && echo "$1" || echo "$((left > 1 ? left : 1))"; }

binary="$work/facedetect"
case "$binary_in" in
    *.xz) "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$binary_in" "$binary" 2> "$work/unpack.err" || smoke_failed "cannot unpack $binary_in: $(last_error "$work/unpack.err")" ;;
    *) cp "$binary_in" "$binary" 2> "$work/unpack.err" || smoke_failed "cannot copy $binary_in: $(last_error "$work/unpack.err")" ;;
esac
chmod +x "$binary"
command -v nvidia-smi > /dev/null || smoke_failed "no NVIDIA driver: nvidia-smi is not on PATH"
timeout "$(smoke_limit 10)" nvidia-smi -L > "$out/nvidia-smi.txt" 2>&1 \
    || smoke_failed "nvidia-smi sees no GPU: $(last_error "$out/nvidia-smi.txt")"
# shellcheck disable=SC1091 # sourced from the repository at run time
source "$here/scripts/gpu-env.sh" "${CUDA_LIB_ROOT:-/opt/torch/.venv}" 2> "$work/env.err" \
    || smoke_failed "the CUDA libraries are incomplete: $(last_error "$work/env.err")"
ldd "$binary" > "$out/ldd.txt" 2>&1
unresolved="$(awk '/not found/ { printf "%s ", $1 }' "$out/ldd.txt")"
[ -z "$unresolved" ] || smoke_failed "the binary's libraries do not resolve: $unresolved"
grep -q 'libcudnn' "$out/ldd.txt" || smoke_failed "the binary does not load cuDNN: not a --features cuda build"
export FACEDETECT_WEIGHTS="$here/weights" RUST_LOG=warn
chip="$here/tests/fixtures/pkg/orig/t1/chip_hog_0.png"
timeout "$(smoke_limit 20)" "$binary" encode --device cuda --aligned "$chip" > "$out/smoke-chip.out" 2> "$out/smoke-chip.err" \
    || smoke_failed "a tensor operation on the GPU failed: $(last_error "$out/smoke-chip.err")"
timeout "$(smoke_limit 20)" "$binary" encode --device cuda "$large/t1.webp" > "$out/smoke-photo.out" 2> "$out/smoke-photo.err" \
    || smoke_failed "one photo on the GPU failed: $(last_error "$out/smoke-photo.err")"
log "smoke passed in $((SECONDS - smoke_end + 30)) s; $(head -n 1 "$out/nvidia-smi.txt"); cores: $(nproc)"

nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 250 \
    > "$out/gpu-samples.csv" 2>/dev/null &
sampler=$!

# 2. Correctness. The CPU's faces of the fixtures, then the GPU's per photo and batched.
failures=0
compare() { # compare NAME EXPECTED GOT
    if [ -s "$2" ] && [ -s "$3" ]; then
        run "compare-$1" 30 "$python" "$here/scripts/compare-faces.py" "$2" "$3" --tolerance 1e-4 \
            --json "$out/compare-$1.json" || failures=$((failures + 1))
    else
        log "compare-$1: not run, a result is missing"
        failures=$((failures + 1))
    fi
}
for batch in 16 32; do
    copies="$work/copies-$batch"
    mkdir -p "$copies"
    photos=("$large"/*.webp)
    for ((i = 0; i < batch; i++)); do
        photo="${photos[i % ${#photos[@]}]}"
        ln -s "$photo" "$copies/$(printf 'copy%02d_' "$i")$(basename "$photo")"
    done
done
for detector in hog cnn; do
    run "cpu-$detector" 60 "$binary" encode --device cpu --detector "$detector" "$large"/*.webp
    run "gpu-$detector" 60 "$binary" encode --device cuda --detector "$detector" "$large"/*.webp
    compare "gpu-$detector" "$out/cpu-$detector.out" "$out/gpu-$detector.out"
    for batch in 16 32; do
        [ "$detector" = hog ] && [ "$batch" = 32 ] && continue
        step="batched-$detector-$batch"
        # The HOG detector takes photos one at a time: only the CNN has a batch size.
        sizes=(--concurrency "$batch")
        [ "$detector" = cnn ] && sizes+=(--batch-size "$batch")
        run "$step" 90 "$binary" bench-device "$work/copies-$batch" --device cuda --detector "$detector" \
            "${sizes[@]}" --photos "$batch" --max-seconds 60 --faces "$out/$step.jsonl"
        compare "$step" "$out/cpu-$detector.out" "$out/$step.jsonl"
    done
done

# 3. Throughput on the 1200x900 WebP fixtures, decoding included.
run bench-cnn-upsample1 60 "$binary" bench-device "$large" --device cuda --detector cnn --upsample 1 \
    --batch-size 16 --photos 6000 --max-seconds 15
run bench-cnn-upsample1-batch32 60 "$binary" bench-device "$large" --device cuda --detector cnn --upsample 1 \
    --batch-size 32 --concurrency 128 --photos 6000 --max-seconds 15
run bench-cnn-upsample0 60 "$binary" bench-device "$large" --device cuda --detector cnn --upsample 0 \
    --batch-size 16 --photos 6000 --max-seconds 15
run bench-hog-cuda 60 "$binary" bench-device "$large" --device cuda --detector hog \
    --photos 6000 --max-seconds 15
run bench-embed 60 "$binary" bench-device "$large" --device cuda --detector hog --photos 9 \
    --embed-sizes 16,64,256,1024 --embed-seconds 2
# The planner's figures for the CNN steps' passes.
for upsample in 0 1; do
    for batch in 16 32; do
        "$binary" plan --size 1200x900 --upsample "$upsample" --photos "$batch" \
            > "$out/plan-upsample$upsample-$batch.json" 2>> "$out/plan.err"
    done
done

kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
"$python" - "$out" "$failures" <<'PYTHON' >> "$out/summary.txt"
import csv, datetime, glob, json, os, re, sys

out, failures = sys.argv[1], int(sys.argv[2])
steps = list(csv.DictReader(open(os.path.join(out, "steps.tsv")), delimiter="\t"))
samples = []
for row in csv.reader(open(os.path.join(out, "gpu-samples.csv"))):
    try:
        when = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((when, float(row[1]), float(row[2])))
    except (ValueError, IndexError):
        pass

def planned_mib(step):
    """The planner's largest pass for a CNN step, in MiB."""
    match = re.match(r"(?:batched-cnn-(\d+)|bench-cnn-upsample(\d)(?:-batch(\d+))?)$", step)
    if not match:
        return None
    batch, upsample, bench_batch = match.groups()
    upsample = upsample or "1"
    batch = batch or bench_batch or "16"
    try:
        plan = json.load(open(os.path.join(out, f"plan-upsample{upsample}-{batch}.json")))
    except (OSError, ValueError):
        return None
    return max((p["device_bytes"] for p in plan["passes"]), default=0) / 2**20

summary = {"smoke": {"ok": True}, "steps": [], "comparisons": {}, "throughput": {}, "embedder": []}
for step in steps:
    start, end = float(step["start"]), float(step["end"])
    window = [s for s in samples if start <= s[0] <= end]
    summary["steps"].append({
        "step": step["step"], "status": int(step["status"]), "seconds": float(step["seconds"]),
        "peak_gpu_memory_mib": max((s[1] for s in window), default=None),
        "planned_pass_mib": planned_mib(step["step"]),
        "mean_gpu_utilization": sum(s[2] for s in window) / len(window) if window else None,
    })
for path in sorted(glob.glob(os.path.join(out, "compare-*.json"))):
    result = json.load(open(path))
    summary["comparisons"][os.path.basename(path)[8:-5]] = {
        k: result[k] for k in ("ok", "photos", "faces", "max_encoding_difference", "problems")}
for path in sorted(glob.glob(os.path.join(out, "bench-*.out"))):
    for line in open(path):
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record["kind"] == "photos":
            summary["throughput"][os.path.basename(path)[6:-4]] = dict(
                record["result"], detector=record["detector"], upsample=record["upsample"],
                device=record["device"], batch_size=record["batch_size"], embed_batch=record["embed_batch"])
        elif record["kind"] == "embed":
            summary["embedder"].append(record["result"])
summary["failures"] = failures
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print("comparisons (CPU vs GPU: rects equal, encodings within 1e-4):")
for name, c in summary["comparisons"].items():
    print(f"  {name:<18} ok={c['ok']} photos={c['photos']} faces={c['faces']} max diff={c['max_encoding_difference']:.2e}")
print("throughput (decoding included):")
for name, t in summary["throughput"].items():
    print(f"  {name:<24} {t['photos_per_second']:8.1f} photos/s  ({t['photos']} photos, {t['seconds']:.1f} s,"
          f" batch {t['batch_size']}, concurrency {t['concurrency']}, means ms {t['mean']})")
print("embedder:")
for e in summary["embedder"]:
    print(f"  batch {e['batch']:>5}: {e['chips_per_second']:9.1f} chips/s")
print("per step: status, seconds, peak GPU memory and the planner's largest pass (MiB):")
for s in summary["steps"]:
    print(f"  {s['step']:<28} {s['status']:>3} {s['seconds']:6.1f} s  peak {s['peak_gpu_memory_mib']}  planned {s['planned_pass_mib']}")
PYTHON
cat "$out/summary.txt"
log "done: $failures comparison(s) failed or missing; results in $out"
[ "$failures" -eq 0 ]
