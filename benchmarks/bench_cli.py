#!/usr/bin/env python
"""Benchmark: how fast ``infosam`` answers ``--help`` and a usage error, each in a fresh process (median of 5).

Targets (issue 18, on a 2-core machine): every ``--help`` ≤ 1.5 s, every one-line usage error ≤ 3 s. The cases are
in ``benchmarks/cli_cases.py``; ``tests/test_cli_speed.py`` checks that none of them imports torch.

Usage: ``python benchmarks/bench_cli.py [--repeats 5]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_cases import HELP_CASES, usage_error_cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELP_TARGET_S, ERROR_TARGET_S = 1.5, 3.0


def timed(argv: list[str], repeats: int) -> tuple[float, int]:
    """Median wall time of ``python -m infosam_hf ARGV`` and its exit status."""
    times, status = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        status = subprocess.run([sys.executable, "-m", "infosam_hf", *argv], cwd=ROOT, capture_output=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for argv in HELP_CASES:
            rows.append(("infosam " + " ".join(argv), *timed(argv, repeats), HELP_TARGET_S, 0))
        for name, argv in usage_error_cases(Path(folder)).items():
            rows.append((name, *timed(argv, repeats), ERROR_TARGET_S, 2))
    python_start = timed(["--version-does-not-exist"], repeats)[0]  # the interpreter and the top-level parser
    width = max(len(row[0]) for row in rows) + 2
    print(f"{'command':<{width}}{'median s':>10}{'target s':>10}{'exit':>6}  ok")
    for name, seconds, status, target, expected in rows:
        ok = seconds <= target and status == expected
        print(f"{name:<{width}}{seconds:>10.2f}{target:>10.1f}{status:>6}  {'yes' if ok else 'NO'}")
    print(f"\n(an unknown command, i.e. Python's start-up and the top-level parser: {python_start:.2f} s; "
          f"median of {repeats} fresh processes each)")


if __name__ == "__main__":
    main()
