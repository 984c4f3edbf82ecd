#!/usr/bin/env python3
"""Times the original pipeline per photo and prints it beside this project's.

The original is face_recognition 1.3.0 on dlib: `face_encodings(load_image_file(photo))` with
the HOG detector (upsample 1), and for the CNN detector
`face_encodings(img, face_locations(img, 1, "cnn"))`. The Rust numbers come from
benches/pipeline.rs on the same photos, run by this script in the same session.

    /tmp/refenv/bin/python benches/reference_pipeline.py [--profile dev] [--cnn-photos 2]
        [--runs 3] [PHOTO...]

Without photos it uses tests/fixtures/pkg/images/large/*.webp (1200x900, as concrexit sends).
dlib's CNN detector takes tens of seconds per photo on the CPU, so only the first
--cnn-photos photos are timed with it.
"""

import argparse
import os
import subprocess
import time
from pathlib import Path

import face_recognition

CRATE = Path(__file__).resolve().parent.parent


def median_seconds(run, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def original(photo, detector):
    image = face_recognition.load_image_file(photo)
    if detector == "hog":
        return face_recognition.face_encodings(image)
    return face_recognition.face_encodings(image, face_recognition.face_locations(image, 1, "cnn"))


def rust_results(output):
    results = {}
    for line in output.splitlines():
        if line.startswith("RESULT "):
            fields = dict(item.split("=", 1) for item in line.split()[1:])
            results[(fields["detector"], fields["photo"])] = (float(fields["seconds"]), int(fields["faces"]))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--profile", default="bench", help="cargo profile of the Rust benchmark")
    parser.add_argument("--runs", type=int, default=3, help="runs per photo (median kept)")
    parser.add_argument("--cnn-photos", type=int, default=2, help="photos timed with dlib's CNN")
    args = parser.parse_args()
    photos = [p.resolve() for p in args.photos] or sorted((CRATE / "tests/fixtures/pkg/images/large").glob("*.webp"))

    env = dict(os.environ, BENCH_RUNS=str(args.runs))  # BENCH_DETECTORS=hog|cnn limits the run
    rust = rust_results(subprocess.run(
        ["cargo", "bench", "--profile", args.profile, "--bench", "pipeline", "--", *map(str, photos)],
        cwd=CRATE, env=env, check=True, capture_output=True, text=True,
    ).stdout)

    print(f"{'detector':<8} {'photo':<28} {'faces':>5} {'original s':>11} {'ours s':>8} {'speed-up':>9}")
    for detector in ("hog", "cnn"):
        if not any(key[0] == detector for key in rust):
            continue
        total_original = total_ours = 0.0
        for index, photo in enumerate(photos):
            ours, faces = rust[(detector, str(photo))]
            if detector == "cnn" and index >= args.cnn_photos:
                print(f"{detector:<8} {photo.name:<28} {faces:>5} {'-':>11} {ours:>8.3f}")
                continue
            theirs = median_seconds(lambda: original(str(photo), detector), 1 if detector == "cnn" else args.runs)
            total_original += theirs
            total_ours += ours
            print(f"{detector:<8} {photo.name:<28} {faces:>5} {theirs:>11.3f} {ours:>8.3f} {theirs / ours:>8.1f}x")
        if total_ours:
            print(f"{detector:<8} {'(timed photos, total)':<28} {'':>5} {total_original:>11.3f} {total_ours:>8.3f}"
                  f" {total_original / total_ours:>8.1f}x")


if __name__ == "__main__":
    main()
