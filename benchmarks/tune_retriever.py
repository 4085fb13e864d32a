"""Grid search of the retrievers' settings on *validation* recall (ML-100K).

Usage::

    python benchmarks/tune_retriever.py [--data-dir PATH]

Prints a markdown table sorted by validation recall@50 of logged positives; test
recall is shown for information only (choices are made on validation). The
defaults of ``PipelineConfig`` come from this table (see docs/data.md).
"""

from __future__ import annotations

import argparse
import itertools
import time

from tqdm import tqdm

from simulators.data import PipelineConfig, build_rerank_data, load_movielens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    ratings = load_movielens("ml-100k", args.data_dir)
    grid = [
        PipelineConfig(mf_factors=f, mf_regularization=reg, mf_alpha=alpha)
        for f, reg, alpha in itertools.product((32, 64, 128), (1.0, 10.0, 50.0), (2.0, 10.0, 40.0))
    ]
    grid += [PipelineConfig(retriever="itemknn", knn_neighbors=k) for k in (20, 50, 100, 200, 1000)]
    grid += [PipelineConfig(retriever="pop")]
    rows = []
    for config in tqdm(grid, desc="configs"):
        start = time.perf_counter()
        data = build_rerank_data(ratings, config, progress=False)
        seconds = time.perf_counter() - start
        if config.retriever == "mf":
            setting = (
                f"mf factors={config.mf_factors} l2={config.mf_regularization:g} "
                f"alpha={config.mf_alpha:g}"
            )
        elif config.retriever == "itemknn":
            setting = f"itemknn neighbors={config.knn_neighbors}"
        else:
            setting = "pop"
        rows.append(
            (data.stats["valid_recall_at_n"], data.stats["test_recall_at_n"], seconds, setting)
        )
    print("| retriever | valid recall@50 | test recall@50 | build (s) |")
    print("|---|---|---|---|")
    for valid, test, seconds, setting in sorted(rows, reverse=True):
        print(f"| {setting} | {valid:.4f} | {test:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
