#!/usr/bin/env python3
"""The facedetect wheel against face_recognition 1.3.0 on dlib, in one run on the same photos.

Set-up: a virtual environment with both (dlib from PyPI's dlib-bin):
    python3 -m venv /tmp/benchenv
    /tmp/benchenv/bin/pip install dlib-bin face-recognition-models numpy pillow click
    /tmp/benchenv/bin/pip install --no-deps face-recognition
    /tmp/benchenv/bin/pip install target/wheels/facedetect-*.whl   # maturin build --release
Run:
    /tmp/benchenv/bin/python benches/python_vs_dlib.py [--repeat N] [--cnn-upsample N] [PHOTO...]

Without photos it uses tests/fixtures/pkg/images/orig/. Per stage it prints the total seconds
of each side over all photos (the fastest of N repetitions per photo) and the ratio
face_recognition / facedetect:
  load            load_image_file(path)
  hog             face_locations(img)                (HOG, upsample 1)
  cnn             face_locations(img, N, "cnn")      (upsample 0 by default)
  encodings       face_encodings(img, locations)     (5-point alignment, given the HOG faces)
  encodings_all   face_encodings(img)                (detection included, as the service runs it)
It also checks on the way that both give the same locations and encodings within 1e-5.
Both sides run on the CPU with their default threading (dlib-bin's dlib is single-threaded for
these calls; the Rust side uses all cores for HOG levels and the networks), and the machine's
core count is printed with the results.
"""

import argparse
import glob
import os
import time

import numpy as np

import face_recognition
import facedetect


def best_of(repeat, call):
    best, result = None, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cnn-upsample", type=int, default=0)
    parser.add_argument("photos", nargs="*")
    args = parser.parse_args()
    root = os.path.join(os.path.dirname(__file__), "..")
    photos = args.photos or sorted(glob.glob(os.path.join(root, "tests", "fixtures", "pkg", "images", "orig", "*")))

    stages = ["load", "hog", "cnn", "encodings", "encodings_all"]
    totals = {side: dict.fromkeys(stages, 0.0) for side in ("face_recognition", "facedetect")}
    # Load every model before timing.
    for module in (face_recognition, facedetect):
        warm = module.load_image_file(photos[0])
        module.face_encodings(warm, model="large")
        module.face_locations(warm, 0, "cnn")
    max_diff, mismatches = 0.0, 0
    for path in photos:
        outputs = {}
        for side, module in (("face_recognition", face_recognition), ("facedetect", facedetect)):
            t = totals[side]
            seconds, img = best_of(args.repeat, lambda: module.load_image_file(path))
            t["load"] += seconds
            seconds, hog = best_of(args.repeat, lambda: module.face_locations(img))
            t["hog"] += seconds
            seconds, cnn = best_of(args.repeat, lambda: module.face_locations(img, args.cnn_upsample, "cnn"))
            t["cnn"] += seconds
            seconds, encodings = best_of(args.repeat, lambda: module.face_encodings(img, hog))
            t["encodings"] += seconds
            seconds, _ = best_of(args.repeat, lambda: module.face_encodings(img))
            t["encodings_all"] += seconds
            outputs[side] = (hog, cnn, encodings)
        (hog_a, cnn_a, enc_a), (hog_b, cnn_b, enc_b) = outputs["face_recognition"], outputs["facedetect"]
        if hog_a != hog_b or cnn_a != cnn_b or len(enc_a) != len(enc_b):
            mismatches += 1
            print("MISMATCH %s: hog %s / %s, cnn %s / %s" % (path, hog_a, hog_b, cnn_a, cnn_b))
        for a, b in zip(enc_a, enc_b):
            max_diff = max(max_diff, float(np.abs(a - b).max()))

    print("%d photos, best of %d, %d cores; seconds in all" % (len(photos), args.repeat, os.cpu_count()))
    print("%-14s %17s %12s %8s" % ("stage", "face_recognition", "facedetect", "ratio"))
    for stage in stages:
        slow, fast = totals["face_recognition"][stage], totals["facedetect"][stage]
        print("%-14s %17.3f %12.3f %7.1fx" % (stage, slow, fast, slow / fast if fast else float("inf")))
    print("locations differing: %d photos; largest encoding difference: %.2e" % (mismatches, max_diff))


if __name__ == "__main__":
    main()
