"""Time the ML-100K data pipeline: raw files -> requests, and the cached reload.

Usage::

    python benchmarks/bench_data_pipeline.py [--data-dir PATH] [--repeats 3]

Prints a markdown table (median of ``--repeats`` runs) for each retriever: the whole
pipeline from the raw files (parse, k-core, split, retriever, requests, cache write)
and the cached reload, plus the retriever's recall of held-out positives within the
N = 50 candidates and the share of test requests that needed an injected positive.
Targets (issue 2): whole pipeline <= 30 s on 2 cores, cached reload <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

from simulators.data import PipelineConfig, load_rerank_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--retrievers", nargs="+", default=["mf", "itemknn", "pop"])
    args = parser.parse_args()

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}\n")
    print(
        "| retriever | raw -> requests (s) | cached reload (s) | valid recall@50 "
        "| test recall@50 | test requests with injected positive |"
    )
    print("|---|---|---|---|---|---|")
    for retriever in args.retrievers:
        config = PipelineConfig(retriever=retriever)
        builds, reloads = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["RERANK_ENV_CACHE"] = cache
                start = time.perf_counter()
                data = load_rerank_data("ml-100k", args.data_dir, config, progress=False)
                builds.append(time.perf_counter() - start)
                start = time.perf_counter()
                load_rerank_data("ml-100k", args.data_dir, config, progress=False)
                reloads.append(time.perf_counter() - start)
        s = data.stats
        print(
            f"| {retriever} | {statistics.median(builds):.2f} | {statistics.median(reloads):.3f} "
            f"| {s['valid_recall_at_n']:.3f} | {s['test_recall_at_n']:.3f} "
            f"| {s['test_injected_share']:.3f} |"
        )


if __name__ == "__main__":
    main()
