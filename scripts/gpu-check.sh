#!/usr/bin/env bash
# The GPU check of the backfill: run on a machine with an NVIDIA GPU, given the facedetect binary
# built with `--features cuda` on a machine without one (scripts/build-cuda.sh). Needs no Rust,
# no network: only the binary, this repository's fixtures and weights, python3, and the CUDA 13
# libraries (found under $CUDA_LIB_ROOT, default /opt/torch/.venv, where PyTorch's wheels put
# them) with the driver's libcuda.
#
#   scripts/gpu-check.sh BINARY[.xz] [OUT_DIR]        # OUT_DIR defaults to $OUT, else /tmp/gpu-check
#
# It writes into OUT_DIR, one file per step and a summary:
#   summary.json, summary.txt    everything below in one place
#   steps.tsv                    step, exit status, seconds, start and end (epoch)
#   <step>.log                   each step's stdout and stderr
#   (a) fixtures: cpu-{hog,cnn}.jsonl (--device cpu), gpu-{hog,cnn}.jsonl (per-photo pipeline on
#       the GPU), batched-{hog,cnn}.jsonl (the worker's batched pipeline on the GPU), and
#       compare-*.json: same rects, encodings within 1e-4 of the CPU's
#   (b) throughput on the 1200x900 WebP fixtures, decoding included: bench-*.jsonl (photos/s of
#       the CNN path at upsample 1 and 0, of the HOG path on the GPU and on the CPU, and the
#       embedder's chips/s by batch size); gpu-samples.csv (nvidia-smi every 250 ms) gives each
#       step's peak GPU memory in the summary
# Every step has a time limit and a failed step does not stop the others. The whole check
# takes about 4-5 minutes on an H200 (16 cores). Exit status: 0 when every comparison held.
set -u

here="$(cd "$(dirname "$0")/.." && pwd)"
binary_in="${1:?usage: scripts/gpu-check.sh BINARY[.xz] [OUT_DIR]}"
out="${2:-${OUT:-/tmp/gpu-check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'kill "${sampler:-0}" 2>/dev/null; rm -rf "$work"' EXIT
python="$(command -v python3 || echo /opt/torch/.venv/bin/python)"

log() { echo "[gpu-check $(date +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"
printf 'step\tstatus\tseconds\tstart\tend\n' > "$out/steps.tsv"

# run STEP LIMIT_SECONDS COMMAND...: runs one step with a time limit, output in STEP.log.
run() {
    local step="$1" limit="$2"
    shift 2
    local start end status
    start="$(date +%s.%N)"
    timeout --kill-after=10 "$limit" "$@" > "$out/$step.log" 2>&1
    status=$?
    end="$(date +%s.%N)"
    local seconds
    seconds="$(awk "BEGIN { printf \"%.1f\", $end - $start }")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$status" "$seconds" "$start" "$end" >> "$out/steps.tsv"
    log "$step: exit $status ($seconds s)"
    return "$status"
}

# The binary: decompressed when it is .xz, made executable.
binary="$work/facedetect"
case "$binary_in" in
    *.xz)
        if command -v xz > /dev/null; then
            xz -dc "$binary_in" > "$binary"
        else
            "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$binary_in" "$binary"
        fi
        ;;
    *) cp "$binary_in" "$binary" ;;
esac
chmod +x "$binary"

# The CUDA libraries on LD_LIBRARY_PATH (scripts/gpu-env.sh names what is missing).
# shellcheck disable=SC1091 # sourced from the repository at run time
source "$here/scripts/gpu-env.sh" "${CUDA_LIB_ROOT:-/opt/torch/.venv}" 2>> "$out/summary.txt" \
    || log "the CUDA libraries are incomplete; the GPU steps will fail"
export FACEDETECT_WEIGHTS="$here/weights"
export RUST_LOG=warn
log "binary $binary_in, LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$out/summary.txt" 2>&1
ldd "$binary" > "$out/ldd.txt" 2>&1
grep -q "not found" "$out/ldd.txt" && log "missing libraries: $(grep 'not found' "$out/ldd.txt" | tr -s ' \t' ' ' | tr '\n' ';')"
log "cores: $(nproc)"

nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 250 \
    > "$out/gpu-samples.csv" 2>/dev/null &
sampler=$!

# (a) The fixtures: CPU against the GPU's per-photo and batched pipelines.
fixtures="$work/fixtures"
mkdir -p "$fixtures"
for photo in "$here"/tests/fixtures/pkg/images/large/*.webp "$here"/tests/fixtures/pkg/images/medium/*.webp; do
    variant="$(basename "$(dirname "$photo")")"
    ln -s "$photo" "$fixtures/${variant}_$(basename "$photo")"
done
count="$(find "$fixtures" -mindepth 1 -maxdepth 1 | wc -l)"
failures=0
for detector in hog cnn; do
    run "cpu-$detector" 150 "$binary" encode --device cpu --detector "$detector" "$fixtures"/* \
        && mv "$out/cpu-$detector.log" "$out/cpu-$detector.jsonl"
    run "gpu-$detector" 120 "$binary" encode --device cuda --detector "$detector" "$fixtures"/* \
        && mv "$out/gpu-$detector.log" "$out/gpu-$detector.jsonl"
    run "batched-$detector" 120 "$binary" bench-device "$fixtures" --device cuda --detector "$detector" \
        --photos "$count" --faces "$out/batched-$detector.jsonl"
    for kind in gpu batched; do
        if [ -s "$out/cpu-$detector.jsonl" ] && [ -s "$out/$kind-$detector.jsonl" ]; then
            run "compare-$kind-$detector" 30 "$python" "$here/scripts/compare-faces.py" \
                "$out/cpu-$detector.jsonl" "$out/$kind-$detector.jsonl" --tolerance 1e-4 \
                --json "$out/compare-$kind-$detector.json" || failures=$((failures + 1))
        else
            log "compare-$kind-$detector: skipped, a result is missing"
            failures=$((failures + 1))
        fi
    done
done

# (b) Throughput on the 1200x900 WebP fixtures, decoding included.
large="$here/tests/fixtures/pkg/images/large"
run bench-cnn-upsample1 150 "$binary" bench-device "$large" --device cuda --detector cnn --upsample 1 \
    --photos 6000 --max-seconds 20
run bench-cnn-upsample1-batch32 150 "$binary" bench-device "$large" --device cuda --detector cnn --upsample 1 \
    --photos 6000 --max-seconds 15 --batch-size 32 --concurrency 128
run bench-cnn-upsample0 120 "$binary" bench-device "$large" --device cuda --detector cnn --upsample 0 \
    --photos 6000 --max-seconds 15
run bench-hog-cuda 120 "$binary" bench-device "$large" --device cuda --detector hog \
    --photos 6000 --max-seconds 15
run bench-hog-cpu 120 "$binary" bench-device "$large" --device cpu --detector hog \
    --photos 6000 --max-seconds 15
run bench-embed 150 "$binary" bench-device "$large" --device cuda --detector hog --photos 9 \
    --embed-sizes 16,32,64,128,256,512,1024 --embed-seconds 2
for step in bench-cnn-upsample1 bench-cnn-upsample1-batch32 bench-cnn-upsample0 bench-hog-cuda bench-hog-cpu bench-embed; do
    grep '^{' "$out/$step.log" > "$out/$step.jsonl" 2>/dev/null
done

kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
"$python" - "$out" <<'PYTHON' | tee -a "$out/summary.txt"
import csv, datetime, glob, json, os, sys

out = sys.argv[1]
steps = list(csv.DictReader(open(os.path.join(out, "steps.tsv")), delimiter="\t"))
samples = []
for row in csv.reader(open(os.path.join(out, "gpu-samples.csv"))):
    try:
        when = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((when, float(row[1]), float(row[2])))
    except (ValueError, IndexError):
        pass
summary = {"steps": [], "comparisons": {}, "throughput": {}, "embedder": []}
for step in steps:
    start, end = float(step["start"]), float(step["end"])
    window = [s for s in samples if start <= s[0] <= end]
    summary["steps"].append({
        "step": step["step"], "status": int(step["status"]), "seconds": float(step["seconds"]),
        "peak_gpu_memory_mib": max((s[1] for s in window), default=None),
        "mean_gpu_utilization": sum(s[2] for s in window) / len(window) if window else None,
    })
for path in sorted(glob.glob(os.path.join(out, "compare-*.json"))):
    result = json.load(open(path))
    summary["comparisons"][os.path.basename(path)[8:-5]] = {
        k: result[k] for k in ("ok", "photos", "faces", "max_encoding_difference", "problems")}
for path in sorted(glob.glob(os.path.join(out, "bench-*.jsonl"))):
    for line in open(path):
        record = json.loads(line)
        if record["kind"] == "photos":
            summary["throughput"][os.path.basename(path)[6:-6]] = dict(
                record["result"], detector=record["detector"], upsample=record["upsample"],
                device=record["device"], batch_size=record["batch_size"], embed_batch=record["embed_batch"])
        elif path.endswith("bench-embed.jsonl"):
            summary["embedder"].append(record["result"])
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print("comparisons (CPU vs GPU, rects equal and encodings within 1e-4):")
for name, c in summary["comparisons"].items():
    print(f"  {name:<12} ok={c['ok']} photos={c['photos']} faces={c['faces']} max diff={c['max_encoding_difference']:.2e}")
print("throughput (decoding included):")
for name, t in summary["throughput"].items():
    print(f"  {name:<24} {t['photos_per_second']:8.1f} photos/s  ({t['photos']} photos, {t['seconds']:.1f} s,"
          f" batch {t['batch_size']}, concurrency {t['concurrency']}, means ms {t['mean']})")
print("embedder:")
for e in summary["embedder"]:
    print(f"  batch {e['batch']:>5}: {e['chips_per_second']:9.1f} chips/s")
print("peak GPU memory (MiB) per step:")
for s in summary["steps"]:
    print(f"  {s['step']:<28} status {s['status']:>3}  {s['seconds']:6.1f} s  peak {s['peak_gpu_memory_mib']}")
PYTHON
log "done: $failures comparison(s) failed or missing; results in $out"
[ "$failures" -eq 0 ]
