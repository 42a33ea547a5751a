"""Benchmark: ``plan --json`` and ``validate`` of a 1,000,000-task manifest, streamed
(docs/performance.md), next to the same of 100,000 tasks: the peak RSS stays flat.

Run: ``python tests/benchmarks/bench_plan_1m.py [--keep DIR] [--only 100k|1m|1m-cells]``

It writes each manifest (20 remote products x N styles from a lines file x repeat R root
tasks, each edited by one chained step: N = 500, R = 5 for 100,000 tasks; N = 5,000, R = 5 for
1,000,000; and N = 500, R = 50 for 1,000,000 tasks with the matrix cells of the first) into
a temporary directory, runs ``python -m flux_pipeline plan --json`` (stdout to a file) and
``python -m flux_pipeline validate`` on it, one subprocess each, and prints wall-clock seconds
and the child's peak RSS for each, and the JSON's size. It prints figures, it asserts nothing
(the target: <= 500 MB for 1,000,000 tasks). The matrix cells and their rendered text are
kept (they are the manifest's own size): at the same cells the peak does not grow with the
tasks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRODUCTS = 20
# label -> (styles, repeat): 2 x 20 products x styles x repeat tasks. "1m" has 10 times the
# matrix cells of "100k" (the manifest's own size); "1m-cells" has the cells of "100k".
SIZES = {"100k": (500, 5), "1m": (5_000, 5), "1m-cells": (500, 50)}
TARGET_RSS_MB = 500


def write_manifest(directory: Path, styles: int, repeat: int) -> Path:
    lines = [f"style number {i} with a few descriptive words, muted" for i in range(styles)]
    (directory / "styles.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    products = "\n".join(
        f'    - {{name: product-{i}, url: "https://cdn.example.com/products/{i}.jpg"}}'
        for i in range(PRODUCTS)
    )
    manifest = f"""\
version: 1
name: bench
defaults:
  input: {{mode: pro, aspect_ratio: "1:1", output_format: png}}
pricing: {{currency: USD, per_task: {{pro: 0.04}}}}
vars:
  brand: Acme
image_sets:
  products:
{products}
steps:
  - id: hero
    matrix:
      product: {{image_set: products}}
      style: {{lines: styles.txt}}
    repeat: {repeat}
    prompt: "{{{{ vars.brand }}}} {{{{ product.name }}}} rendered as {{{{ style }}}}, studio light"
    images: ["{{{{ product.url }}}}"]
  - id: banner
    from: hero
    prompt: >-
      Turn this into a web banner with the headline
      "{{{{ vars.brand }}}} {{{{ parent.product.name }}}}" (take {{{{ parent.repeat_index }}}})
    input: {{aspect_ratio: "16:9"}}
"""
    path = directory / "bench.yaml"
    path.write_text(manifest, encoding="utf-8")
    return path


def measure(command: list[str], stdout: Path) -> tuple[int, float, float]:
    """Exit code, seconds and peak RSS (MB) of one child, waited for on its own."""
    start = time.perf_counter()
    with stdout.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(command, stdout=out)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, seconds, usage.ru_maxrss / 1024


def bench(directory: Path, label: str) -> None:
    styles, repeat = SIZES[label]
    manifest = write_manifest(directory, styles, repeat)
    tasks = 2 * PRODUCTS * styles * repeat
    cells = PRODUCTS * styles
    out = directory / "plan.json"
    plan = [sys.executable, "-m", "flux_pipeline", "plan", "--json", str(manifest)]
    code, seconds, peak = measure(plan, out)
    size_mb = out.stat().st_size / 1024 / 1024
    print(
        f"{label:>8} {tasks:>9} tasks {cells:>6} cells  plan --json  exit {code}  "
        f"{seconds:7.1f} s  peak RSS {peak:5.0f} MB  json {size_mb:6.1f} MB"
    )
    out.unlink()
    validate = [sys.executable, "-m", "flux_pipeline", "validate", str(manifest)]
    code, seconds, peak = measure(validate, out)
    said = out.read_text(encoding="utf-8").strip()
    print(
        f"{label:>8} {tasks:>9} tasks {cells:>6} cells  validate     exit {code}  "
        f"{seconds:7.1f} s  peak RSS {peak:5.0f} MB  ({said.split(': ', 1)[-1]})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="write the manifests and output here")
    parser.add_argument("--only", choices=sorted(SIZES), help="one size only")
    args = parser.parse_args()
    print(f"target: peak RSS <= {TARGET_RSS_MB} MB at 1,000,000 tasks, flat in the tasks")
    for label in [args.only] if args.only else list(SIZES):
        with tempfile.TemporaryDirectory() as tmp:
            directory = (args.keep / label) if args.keep else Path(tmp)
            directory.mkdir(parents=True, exist_ok=True)
            bench(directory, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
