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

``--scale RATINGS`` (issue 22) writes synthetic files in the ML-25M format
(``ratings.csv``, ``movies.csv``) with ML-25M's shape scaled to ``RATINGS`` ratings
(162,541 users and 59,047 films at 25M; heavy-tailed ratings per user, at least 20,
up to 200 times the mean as in ML-25M; Zipf-like film popularity; half stars) and
prints wall time and peak memory (resident set, sampled every 0.2 s) of each stage:
parsing, the pipeline, the cache write. ``--skip-baseline`` skips the ML-100K table.
Target: 25M ratings in <= 30 min and <= 16 GiB on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.cache import write_cache
from simulators.data.movielens import load_movielens_csv
from simulators.data.pipeline import build_rerank_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--retrievers", nargs="+", default=["mf", "itemknn", "pop"])
    parser.add_argument("--ml1m-scale", action="store_true")
    parser.add_argument("--scale", type=int, default=None, metavar="RATINGS")
    parser.add_argument("--scale-dir", default=None, help="--scale: keep the files here")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}\n")
    if args.scale:
        scale_study(args.scale, args.scale_dir, args.retrievers[0])
    if args.skip_baseline:
        return
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
        )
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


def scale_study(n_ratings: int, folder: str | None, retriever: str) -> None:
    """Time and peak memory of each stage on ML-25M-shaped files of ``n_ratings``."""
    with contextlib.ExitStack() as stack:
        root = Path(folder or stack.enter_context(tempfile.TemporaryDirectory()))
        files = root / f"ml-25m-shaped-{n_ratings}"
        if not (files / "ratings.csv").is_file():
            start = time.perf_counter()
            write_ml25m_shaped_files(files, n_ratings)
            print(f"wrote {files} in {time.perf_counter() - start:.0f} s")
        rows = []
        with _stage(rows, "parse ratings.csv and movies.csv"):
            ratings = load_movielens_csv(files, "ml-25m")
        with _stage(rows, f"pipeline (retriever {retriever})"):
            data = build_rerank_data(ratings, PipelineConfig(retriever=retriever), progress=True)
        with _stage(rows, "cache write"):
            write_cache(root / "cache.npz", data, "benchmark")
        (root / "cache.npz").unlink()
    print(
        f"\n{ratings.n_ratings:,} ratings, {ratings.n_users:,} users, {ratings.n_items:,} films "
        f"-> {data.n_requests:,} requests\n"
    )
    print("| stage | wall (s) | peak resident memory (GiB) |\n|---|---:|---:|")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.0f} | {peak / 2**30:.2f} |")
    print(f"| total | {sum(r[1] for r in rows):.0f} | {max(r[2] for r in rows) / 2**30:.2f} |")


@contextlib.contextmanager
def _stage(rows: list, name: str) -> Iterator[None]:
    """Time the block and sample its peak resident memory (``/proc/self/statm``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as handle:
                peak[0] = max(peak[0], int(handle.read().split()[1]) * page)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        rows.append((name, seconds, peak[0]))
        print(f"{name}: {seconds:.0f} s, peak {peak[0] / 2**30:.2f} GiB", flush=True)


def write_ml25m_shaped_files(folder: Path, n_ratings: int, seed: int = 0) -> None:
    """Random ``ratings.csv`` / ``movies.csv`` shaped like ML-25M, scaled to ``n_ratings``."""
    rng = np.random.default_rng(seed)
    n_users = max(100, round(162_541 * n_ratings / 25_000_095))
    n_items = 59_047 if n_ratings >= 1_000_000 else max(1000, round(59_047 * n_ratings / 1e6))
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["Action", "Comedy", "Drama", "Thriller", "Romance", "IMAX", "(no genres listed)"]
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(
            f'{i},"Film {i}, The (19{50 + i % 50})",{genres[i % 7]}\n'
            for i in range(1, n_items + 1)
        )
    )
    # Ratings per user: log-normal (ML-25M: median 71, mean 154, max 32,202), at least 20.
    per_user = np.exp(rng.normal(4.25, 1.05, n_users))
    per_user = np.clip(per_user * (n_ratings - 20 * n_users) / per_user.sum(), 0, None) + 20
    per_user = np.minimum(per_user.astype(np.int64), n_items // 2)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    user = np.repeat(np.arange(n_users), per_user)
    # Films drawn by popularity; a user's repeats are drawn again uniformly among the
    # films the user has not rated (so heavy users reach the long tail, as they do).
    item = rng.choice(n_items, size=len(user), p=popularity)
    for _ in range(20):
        key = user * n_items + item
        _, first = np.unique(key, return_index=True)
        repeat = np.ones(len(key), dtype=bool)
        repeat[first] = False
        if not repeat.any():
            break
        item[repeat] = rng.integers(0, n_items, int(repeat.sum()))
    key = user * n_items + item
    _, first = np.unique(key, return_index=True)
    user, item = user[np.sort(first)], item[np.sort(first)]
    time_ = 789_652_009 + rng.integers(0, 785_000_000, len(user))
    order = np.lexsort((time_, user))
    user, item, time_ = user[order], item[order], time_[order]
    stars = rng.integers(1, 11, len(user)) / 2
    with open(folder / "ratings.csv", "w") as handle:
        handle.write("userId,movieId,rating,timestamp\n")
        for start in range(0, len(user), 1_000_000):
            part = slice(start, start + 1_000_000)
            columns = (user[part] + 1, item[part] + 1, stars[part], time_[part])
            lines = (f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in zip(*columns, strict=True))
            handle.write("".join(lines))


if __name__ == "__main__":
    main()
