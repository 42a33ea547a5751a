"""Benchmark: expand a 100,000-task manifest with ``plan --json`` (targets: <= 5 s, <= 300 MB).

Run: ``python tests/benchmarks/bench_plan.py [--tasks-per-step N] [--keep DIR]``

It writes the manifest (20 remote products x 500 styles from a lines file x repeat 5 = 50,000
root tasks, each edited by one chained step = 50,000 more) into a temporary directory, runs
``python -m flux_pipeline plan --json`` on it as a subprocess with stdout to a file, checks the
document, and prints wall-clock seconds and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRODUCTS = 20
STYLES = 500
REPEAT = 5
LIMIT_SECONDS = 5.0
LIMIT_RSS_MB = 300.0


def write_manifest(directory: Path) -> Path:
    styles = [f"style number {i} with a few descriptive words, muted" for i in range(STYLES)]
    (directory / "styles.txt").write_text("\n".join(styles) + "\n", encoding="utf-8")
    products = "\n".join(
        f'    - {{name: product-{i}, url: "https://cdn.example.com/products/{i}.jpg"}}'
        for i in range(PRODUCTS)
    )
    manifest = f"""\
version: 1
name: bench
defaults:
  input: {{mode: pro, aspect_ratio: "1:1", output_format: png}}
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
    repeat: {REPEAT}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="write the manifest and output here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = write_manifest(directory)
        out = directory / "plan.json"
        command = [sys.executable, "-m", "flux_pipeline", "plan", "--json", str(manifest)]
        start = time.perf_counter()
        with out.open("w", encoding="utf-8") as stdout:
            result = subprocess.run(command, stdout=stdout, check=False)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if result.returncode != 0:
            print(f"plan failed with exit code {result.returncode}", file=sys.stderr)
            return 1
        document = json.loads(out.read_text(encoding="utf-8"))
        tasks = len(document["tasks"])
        size_mb = out.stat().st_size / 1024 / 1024
    print(f"command: {' '.join(command[1:])}")
    print(f"tasks: {tasks}  json: {size_mb:.1f} MB")
    print(f"seconds: {seconds:.2f} (limit {LIMIT_SECONDS})")
    print(f"peak RSS: {peak_mb:.0f} MB (limit {LIMIT_RSS_MB:.0f})")
    ok = tasks == 2 * PRODUCTS * STYLES * REPEAT
    ok = ok and seconds <= LIMIT_SECONDS and peak_mb <= LIMIT_RSS_MB
    print("OK" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
