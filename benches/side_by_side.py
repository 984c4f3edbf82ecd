#!/usr/bin/env python3
"""Times the original pipeline and this project side by side, one row per use, in one run.

The original is face_recognition 1.3.0 on dlib (`pip install dlib-bin face-recognition-models
numpy pillow click` and `pip install --no-deps face-recognition` in a virtual environment);
run this script with that environment's Python:

    /tmp/refenv/bin/python benches/side_by_side.py [--runs 3] [--skip-original-cnn] [PHOTO...]

Rows (each measured in fresh processes, both sides alike):
  default   the default path (HOG, upsample 1): decode, detect, landmarks, encode the photos
            in one process; seconds per photo, wall-clock and CPU (user + system), and the
            process's peak resident memory;
  one-core  the same under `taskset -c 0`;
  cnn       the CNN detector on one photo, upsample 1, then encode its faces: wall-clock, CPU
            and the process's peak resident memory;
  embedder  64 aligned chips encoded in one process: milliseconds per chip;
  start-up  a whole process that loads every model and encodes a 64x64 image: wall-clock and
            peak resident memory.
Within a process the models are loaded once, before the timed part (start-up excepted). Each
timed part runs --runs times; medians are reported, and ratios as ours / original.

Without photos the default-path and CNN rows are measured for both album sizes that concrexit
has sent: the 1200x900 `large` thumbnails (tests/fixtures/pkg/images/large, still the size of
reference faces) and the `photo_large` thumbnails that album photos are sent as, fit within
1920x1920 (tests/fixtures/pkg/images/photo_large, made by benches/make_photo_large.py); each
set is repeated to make --photos photos, and the CNN row uses its first photo. The Rust side
is built with `cargo bench --no-run` (the bench profile).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

CRATE = Path(__file__).resolve().parent.parent
# The album sets under tests/fixtures/pkg/images, by the name concrexit gives the thumbnail.
SETS = {"large": "1200x900", "photo_large": "photo_large (fit 1920x1920)"}


# ---------------------------------------------------------------------------------------------
# The original, run in child processes of this script (`--original MODE ...`).

def cpu_seconds():
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def original_worker(mode, runs, args):
    import face_recognition
    import numpy as np

    if mode == "startup":
        face_recognition.face_encodings(np.zeros((64, 64, 3), dtype=np.uint8))
        return
    if mode == "embedder":
        import dlib
        import face_recognition_models
        from PIL import Image
        model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        paths = sorted((CRATE / "tests/fixtures/pkg/orig").glob("*/chip_*.png"))
        chips = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        batch = [chips[i % len(chips)] for i in range(int(args[0]))]
        model.compute_face_descriptor(batch)
        for _ in range(runs):
            cpu, start = cpu_seconds(), time.perf_counter()
            model.compute_face_descriptor(batch)
            print(f"RUN chips={len(batch)} wall_s={time.perf_counter() - start:.4f} cpu_s={cpu_seconds() - cpu:.3f}",
                  flush=True)
        return
    for _ in range(runs):
        cpu, start = cpu_seconds(), time.perf_counter()
        faces = 0
        for photo in args:
            image = face_recognition.load_image_file(photo)
            if mode == "hog":
                faces += len(face_recognition.face_encodings(image))
            else:
                locations = face_recognition.face_locations(image, 1, "cnn")
                faces += len(face_recognition.face_encodings(image, locations))
        print(f"RUN detector={mode} photos={len(args)} faces={faces} wall_s={time.perf_counter() - start:.4f}"
              f" cpu_s={cpu_seconds() - cpu:.3f}", flush=True)


# ---------------------------------------------------------------------------------------------
# Measuring child processes.

def run(command, one_core=False):
    """Runs a command; returns its RUN lines (as dicts) and its wall time, CPU time and peak
    resident memory (MiB) as a whole process."""
    if one_core:
        command = ["taskset", "-c", "0", *command]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=CRATE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed ({child.returncode}):\n{stderr[-3000:]}")
    lines = [dict(item.split("=", 1) for item in line.split()[1:])
             for line in stdout.splitlines() if line.startswith("RUN ")]
    return {
        "runs": lines,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }


def medians(result, per=1.0):
    """Median wall and CPU seconds of the RUN lines, divided by `per`."""
    return (median(float(r["wall_s"]) for r in result["runs"]) / per,
            median(float(r["cpu_s"]) for r in result["runs"]) / per)


def bench_executables(*benches):
    """Builds the Rust benchmarks (the bench profile); returns their executables by name."""
    command = ["cargo", "bench", "--no-run", "--message-format=json"]
    for bench in benches:
        command += ["--bench", bench]
    output = subprocess.run(command, cwd=CRATE, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in output.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            found[message["target"]["name"]] = message["executable"]
    return found


def rust_executables():
    found = bench_executables("pipeline", "embedder")
    subprocess.run(["cargo", "build", "--release", "--bin", "facedetect"], cwd=CRATE, check=True,
                   capture_output=True)
    found["facedetect"] = str(CRATE / "target/release/facedetect")
    return found


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--photos", dest="count", type=int, default=10, help="photos on the default path")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per process (medians kept)")
    parser.add_argument("--chips", type=int, default=64, help="chips for the embedder row")
    parser.add_argument("--skip-original-cnn", action="store_true",
                        help="skip dlib's CNN detector (tens of seconds and gigabytes)")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS),
                        help="album sizes to measure when no photos are given")
    parser.add_argument("--original", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.original:
        mode, runs, *rest = args.original
        original_worker(mode, int(runs), rest)
        return

    if args.photos:
        sets = {"given": [p.resolve() for p in args.photos]}
    else:
        sets = {name: sorted((CRATE / "tests/fixtures/pkg/images" / name).glob("*.webp")) for name in args.sets}
    sets = {name: [str(found[i % len(found)]) for i in range(max(args.count, 1))] for name, found in sets.items()}
    rust = rust_executables()
    me = [sys.executable, str(Path(__file__).resolve()), "--original"]
    runs = str(args.runs)
    rows = []

    def row(name, original, ours, unit, fields):
        rows.append((name, original, ours, unit, fields))
        print(f"{name}: original {original} ours {ours}", file=sys.stderr, flush=True)

    for size, photos in sets.items():
        label = SETS.get(size, "given photos")
        # Default path, all cores and one core.
        for one_core, name in [(False, "default path, s/photo"), (True, "default path, one core, s/photo")]:
            theirs = run([*me, "hog", runs, *photos], one_core)
            ours = run([rust["pipeline"], "--detector", "hog", "--runs", runs, *photos], one_core)
            row(f"{name}, {label}", (*medians(theirs, len(photos)), theirs["rss_mib"]),
                (*medians(ours, len(photos)), ours["rss_mib"]), "s / MiB", ("wall", "cpu", "peak RSS"))

        # CNN detector on one photo.
        cnn_photo = photos[0]
        ours = run([rust["pipeline"], "--detector", "cnn", "--runs", runs, cnn_photo])
        theirs = None if args.skip_original_cnn else run([*me, "cnn", "1", cnn_photo])
        row(f"CNN detector, one photo, upsample 1, {label}",
            theirs and (*medians(theirs), theirs["rss_mib"]),
            (*medians(ours), ours["rss_mib"]), "s / MiB", ("wall", "cpu", "peak RSS"))

    # Embedder.
    count = str(args.chips)
    theirs = run([*me, "embedder", runs, count])
    ours = run([rust["embedder"], "--chips", count, "--runs", runs])
    row(f"embedder, {count} chips, ms/chip", tuple(1000 * v for v in medians(theirs, args.chips)),
        tuple(1000 * v for v in medians(ours, args.chips)), "ms", ("wall", "cpu"))

    # Start-up: whole processes.
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny.png"
        from PIL import Image
        Image.new("RGB", (64, 64), (128, 128, 128)).save(tiny)
        theirs = [run([*me, "startup", "0"]) for _ in range(args.runs)]
        ours = [run([rust["facedetect"], "encode", str(tiny)]) for _ in range(args.runs)]
    summary = lambda results: (median(r["wall"] for r in results), median(r["rss_mib"] for r in results))
    row("start-up (load all models, encode 64x64)", summary(theirs), summary(ours), "s / MiB",
        ("wall", "peak RSS"))

    print(f"\n{args.count} photos on the default path; load average {os.getloadavg()[0]:.2f}\n")
    print("| row | measure | original | ours | ours / original |")
    print("|---|---|---|---|---|")
    for name, original, ours, unit, fields in rows:
        for i, field in enumerate(fields):
            theirs_value = original[i] if original else None
            ratio = f"{ours[i] / theirs_value:.3f}x" if theirs_value else "-"
            theirs_text = f"{theirs_value:.4g}" if theirs_value else "-"
            print(f"| {name} | {field} | {theirs_text} | {ours[i]:.4g} | {ratio} |")


if __name__ == "__main__":
    main()
