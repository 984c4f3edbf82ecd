#!/usr/bin/env python3
"""The speed of every convolution of the CNN detector and of the face embedder on the CPU
kernels, against the machine's peak: GFLOP/s per layer, from the kernels' debug log.

Runs benches/pipeline.rs (the CNN detector on one photo, upsample 1) and benches/embedder.rs
(64 aligned chips) with RUST_LOG=concrexit_facedetection::kernels=debug, adds up the time and
the multiply-adds of each layer over a run (the CNN's layers run per band and per batch, the
embedder's per batch of chips) and prints a markdown table per network. Needs only python3:

    python3 benches/layers.py [--peak GFLOPS] [--runs 3] [PHOTO]

Each layer is also shown as a share of the peak rate of AVX2 FMAs (the convolution kernel's
instructions) on all cores, which benches/peak.rs measures unless --peak gives it. The last
timed run of each benchmark is reported.
"""

import argparse
import os
import re
import subprocess
from collections import OrderedDict
from pathlib import Path

from side_by_side import CRATE, bench_executables

FIELD = re.compile(r"(\w+)=([\d.]+(?:e-?\d+)?)")


def layers_of_last_run(command):
    """Per layer (in order of first use) of the last timed run: calls, total ms and GFLOP."""
    env = dict(os.environ, RUST_LOG="concrexit_facedetection::kernels=debug", NO_COLOR="1")
    # One pipe for both streams keeps the log lines and the RUN line that ends each run in order.
    output = subprocess.run(command, cwd=CRATE, check=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env).stdout
    runs, current = [], OrderedDict()
    for line in output.splitlines():
        if line.startswith("RUN "):
            runs.append(current)
            current = OrderedDict()
        elif "convolution" in line:
            fields = {k: float(v) for k, v in FIELD.findall(line)}
            key = (int(fields["size"]), int(fields["stride"]), int(fields["in_channels"]),
                   int(fields["out_channels"]))
            entry = current.setdefault(key, {"ms": 0.0, "gflop": 0.0, "calls": 0})
            entry["ms"] += fields["ms"]
            entry["gflop"] += fields["gflops_per_s"] * fields["ms"] / 1e3
            entry["calls"] += 1
    if not runs or not runs[-1]:
        raise SystemExit(f"no convolutions logged by {' '.join(command)}")
    return runs[-1]


def table(title, layers, peak):
    print(f"\n### {title}\n")
    print("| layer | calls | ms | GFLOP | GFLOP/s |" + (" of peak |" if peak else ""))
    print("|---|---|---|---|---|" + ("---|" if peak else ""))
    total_ms = total_gflop = 0.0
    for (size, stride, cin, cout), entry in layers.items():
        rate = entry["gflop"] / (entry["ms"] / 1e3)
        share = f" {100 * rate / peak:.0f}% |" if peak else ""
        print(f"| {size}x{size}/{stride} {cin}->{cout} | {entry['calls']} | {entry['ms']:.1f} | "
              f"{entry['gflop']:.2f} | {rate:.0f} |{share}")
        total_ms += entry["ms"]
        total_gflop += entry["gflop"]
    rate = total_gflop / (total_ms / 1e3)
    share = f" {100 * rate / peak:.0f}% |" if peak else ""
    print(f"| all convolutions | | {total_ms:.1f} | {total_gflop:.2f} | {rate:.0f} |{share}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", nargs="?", default=str(CRATE / "tests/fixtures/pkg/images/large/t1.webp"))
    parser.add_argument("--peak", type=float, help="the peak GFLOP/s to compare with (default: measured)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rust = bench_executables("pipeline", "embedder", "peak")
    if args.peak is None:
        peaks = {}
        output = subprocess.run([rust["peak"]], cwd=CRATE, check=True, capture_output=True, text=True).stdout
        for line in output.splitlines():
            fields = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item)
            if "isa" in fields:
                peaks[fields["isa"]] = float(fields["gflops"])
        print("Peak (benches/peak.rs, every core): " +
              ", ".join(f"{isa} FMA {gflops:.0f} GFLOP/s" for isa, gflops in peaks.items()))
        args.peak = peaks.get("avx2")
    runs = str(args.runs)
    cnn = layers_of_last_run([rust["pipeline"], "--detector", "cnn", "--runs", runs, args.photo])
    table(f"CNN detector on {Path(args.photo).name}, upsample 1 (5x5 and 9x9 layers; then the "
          "embedder on the faces it found)", cnn, args.peak)
    embedder = layers_of_last_run([rust["embedder"], "--chips", "64", "--runs", runs])
    table("face embedder, 64 chips", embedder, args.peak)


if __name__ == "__main__":
    main()
