"""Integrity benchmark: what checksums and chunk checks cost.

    python bench/integrity.py [--groups 40] [--rows 5000] [--dim 512]

Writes `--groups` groups of (rows, dim) float16 into a fresh store, then prints: best-of-5 read time per group
(which includes the chunk-file listing), the listing alone (the cheap skip check of `extract`/`export`),
the same reads through plain zarr without any check (the overhead ratio), and `verify` throughput in MiB/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cache.store import FeatureMeta, FeatureStore, store_path  # noqa: E402
from cache.verify import verify_cache  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = store_path(tmp, "bench")
        store = FeatureStore.create_or_open(path, FeatureMeta("bench"))
        rng = np.random.default_rng(0)
        for i in range(args.groups):
            values = rng.normal(size=(args.rows, args.dim)).astype(np.float16)
            store.write(f"u{i}", values, np.zeros((args.rows, 2)))
        store = FeatureStore.open(path)
        units = store.units()

        def per_group(fn, repeats: int = 5) -> float:
            """Best of `repeats` passes over every group (the machine is shared: the best is the cost)."""
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for u in units:
                    fn(u)
                best = min(best, time.perf_counter() - t0)
            return best / len(units) * 1e3

        read = per_group(store.read)
        listing = per_group(store.chunk_count_problem)
        root = zarr.open_group(str(path), mode="r")
        def unchecked_read(u: str) -> None:  # the read path before checks: attributes, then the arrays
            group = root[u]
            dict(group.attrs)
            [group[k][...] for k in ("values", "times", "valid")]

        plain = per_group(unchecked_read)
        t0 = time.perf_counter()
        report = verify_cache(tmp)
        seconds = time.perf_counter() - t0
        mib = args.groups * args.rows * (args.dim * 2 + 16 + 1) / 2**20
        print(f"{args.groups} groups of ({args.rows}, {args.dim}) float16, {mib:.0f} MiB")
        print(f"read per group: {read:.2f} ms checked vs {plain:.2f} ms unchecked (ratio {read / plain:.2f})")
        print(f"chunk-file listing (extract's skip check) per group: {listing:.2f} ms")
        print(f"verify: {report.groups} groups in {seconds:.2f} s ({mib / seconds:.0f} MiB/s), {len(report.damaged)} damaged")


if __name__ == "__main__":
    main()
