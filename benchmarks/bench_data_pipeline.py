"""Time the ML-100K data pipeline: raw files -> requests, and the cached reload.

Usage::

    python benchmarks/bench_data_pipeline.py [--data-dir PATH] [--repeats 3]

Prints a markdown table (median of ``--repeats`` runs) for each retriever: the whole
pipeline from the raw files (parse, k-core, split, retriever, requests, cache write)
and the cached reload, plus the retriever's recall of held-out positives within the
N = 50 candidates and the share of test requests (with a logged positive) where the
retriever missed at least one positive.
Targets (issue 2): whole pipeline <= 30 s on 2 cores, cached reload <= 2 s.

``--ml1m-scale`` also times the pipeline on synthetic files in the ML-1M format and
of ML-1M's size (6,040 users, 3,706 films, 1,000,209 ratings, Zipf-like film
popularity); ML-1M itself is not available here. Only the timing means anything there.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from simulators.data import PipelineConfig, load_rerank_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--retrievers", nargs="+", default=["mf", "itemknn", "pop"])
    parser.add_argument("--ml1m-scale", action="store_true")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}\n")
    print(
        "| retriever | raw -> requests (s) | cached reload (s) | valid recall@50 "
        "| test recall@50 | test requests with a missed positive |"
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
            f"| {s['test_missed_positive_share']:.3f} |"
        )

    if args.ml1m_scale:
        with tempfile.TemporaryDirectory() as folder:
            write_ml1m_sized_files(Path(folder) / "ml-1m")
            for retriever in args.retrievers:
                with tempfile.TemporaryDirectory() as cache:
                    os.environ["RERANK_ENV_CACHE"] = cache
                    start = time.perf_counter()
                    config = PipelineConfig(retriever=retriever)
                    data = load_rerank_data("ml-1m", folder, config, progress=False)
                    seconds = time.perf_counter() - start
                print(
                    f"\nML-1M-sized synthetic files, {retriever}: raw -> requests {seconds:.1f} s, "
                    f"{data.n_requests} requests"
                )


def write_ml1m_sized_files(folder: Path, seed: int = 0) -> None:
    """Write random ML-1M-format files of ML-1M's size (for timing only)."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_ratings = 6040, 3706, 1_000_209
    folder.mkdir(parents=True)
    genres = ["Action", "Comedy", "Drama", "Thriller", "Romance"]
    (folder / "movies.dat").write_text(
        "".join(
            f"{i}::Film {i} (19{50 + i % 50})::{genres[i % 5]}\n" for i in range(1, n_items + 1)
        ),
        encoding="latin-1",
    )
    (folder / "users.dat").write_text(
        "".join(
            f"{u}::{'MF'[u % 2]}::{(1, 18, 25, 35, 45, 50, 56)[u % 7]}::{u % 21}::12345\n"
            for u in range(1, n_users + 1)
        )  # fmt: skip
    )
    per_user = rng.multinomial(n_ratings - 20 * n_users, np.ones(n_users) / n_users) + 20
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    lines = []
    for user, count in enumerate(per_user, start=1):
        items = rng.choice(n_items, size=count, replace=False, p=popularity) + 1
        times = 956703932 + np.sort(rng.integers(0, 90_000_000, size=count))
        stars = rng.integers(1, 6, size=count)
        lines.extend(
            f"{user}::{i}::{r}::{t}\n" for i, r, t in zip(items, stars, times, strict=True)
        )
    (folder / "ratings.dat").write_text("".join(lines))


if __name__ == "__main__":
    main()
