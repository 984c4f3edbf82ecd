#!/usr/bin/env python3
"""Puts the worker's throughput beside the original pipeline's, on this machine's CPU.

The worker's number comes from benches/worker.rs (photos per second from an SQS queue on
loopback, decoding, HOG detection, encoding and callbacks included, every core busy), run by
this script. The original is face_recognition 1.3.0 on dlib as its Lambda function ran it: one
photo after another, `face_encodings(load_image_file(photo))` (HOG, upsample 1), timed on the
same 1200x900 WebP fixtures; once in one process (the Lambda function) and once with one process
per core (the most the original could do on this machine).

    /tmp/refenv/bin/python benches/reference_worker.py [--profile dev] [--photos 90]
"""

import argparse
import multiprocessing
import os
import subprocess
import time
from pathlib import Path

import face_recognition

CRATE = Path(__file__).resolve().parent.parent


def encode(photo):
    return len(face_recognition.face_encodings(face_recognition.load_image_file(photo)))


def original_rate(photos, processes):
    start = time.perf_counter()
    if processes == 1:
        for photo in photos:
            encode(photo)
    else:
        with multiprocessing.Pool(processes) as pool:
            pool.map(encode, photos, chunksize=1)
    return len(photos) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="bench", help="cargo profile of the Rust benchmark")
    parser.add_argument("--photos", type=int, default=90, help="sources the worker processes")
    args = parser.parse_args()
    fixtures = sorted(str(p) for p in (CRATE / "tests/fixtures/pkg/images/large").glob("*.webp"))

    env = dict(os.environ, BENCH_PHOTOS=str(args.photos))
    output = subprocess.run(
        ["cargo", "bench", "--profile", args.profile, "--bench", "worker"],
        cwd=CRATE, env=env, check=True, capture_output=True, text=True,
    ).stdout
    result = next(dict(item.split("=", 1) for item in line.split()[1:])
                  for line in output.splitlines() if line.startswith("RESULT "))
    ours = float(result["photos_per_second"])
    cores = os.cpu_count() or 1
    # The original on the fixtures, twice over, so that each process has several photos.
    photos = fixtures * 2
    one = original_rate(photos, 1)
    every = original_rate(photos, cores)
    print(f"{'':<42} {'photos/s':>9} {'worker is':>10}")
    print(f"{'worker (HOG, ' + str(cores) + ' cores, queue to callback)':<42} {ours:>9.2f}")
    print(f"{'original, one process (its Lambda function)':<42} {one:>9.2f} {ours / one:>9.1f}x")
    print(f"{'original, ' + str(cores) + ' processes':<42} {every:>9.2f} {ours / every:>9.1f}x")


if __name__ == "__main__":
    main()
