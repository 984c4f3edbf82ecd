#!/usr/bin/env python3
"""Compares two face listings (JSON lines as `facedetect encode` or `bench-device --faces` write).

    compare-faces.py EXPECTED.jsonl GOT.jsonl [--tolerance 1e-4] [--json OUT.json]

Photos are matched by file name; a photo of GOT named `copyNN_NAME` (the copies of a batch, as
scripts/gpu-check.sh makes them) is compared with NAME of EXPECTED, and every copy counts. For
each photo the rectangles must be the same, in the same order, and every encoding within the
tolerance (largest absolute difference of one number).
Prints a summary, writes it as JSON with --json, and exits 1 on any difference. Standard
library only, so it runs on a machine with nothing but python3.
"""

import argparse
import json
import os
import re
import sys

COPY = re.compile(r"^copy\d+_")


def load(path):
    photos = {}
    with open(path) as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                photos[os.path.basename(record["image"])] = record["faces"]
    return photos


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("expected")
    parser.add_argument("got")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--json")
    args = parser.parse_args()
    expected, got = load(args.expected), load(args.got)
    problems = []
    worst = 0.0
    faces = 0
    originals = {COPY.sub("", name) for name in got}
    for name in sorted(set(expected) - originals):
        problems.append(f"{name}: only in expected")
    for name in sorted(got):
        original = COPY.sub("", name)
        if original not in expected:
            problems.append(f"{name}: only in got")
            continue
        want_rects = [face["rect"] for face in expected[original]]
        got_rects = [face["rect"] for face in got[name]]
        if want_rects != got_rects:
            problems.append(f"{name}: rects {got_rects} instead of {want_rects}")
            continue
        for want, have in zip(expected[original], got[name]):
            faces += 1
            difference = max(abs(a - b) for a, b in zip(want["encoding"], have["encoding"]))
            worst = max(worst, difference)
            if difference > args.tolerance:
                problems.append(f"{name}: face at {want['rect']} differs by {difference:.3g}")
    summary = {
        "expected": args.expected,
        "got": args.got,
        "photos": len(got),
        "faces": faces,
        "max_encoding_difference": worst,
        "tolerance": args.tolerance,
        "ok": not problems and faces > 0,
        "problems": problems,
    }
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
