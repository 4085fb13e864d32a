"""The ``rerank-env data`` command: build (or load) and summarise processed data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import typing

from simulators.cli_help import HelpFormatter, field_docs
from simulators.data.datasets import DATASETS, cache_path, load_rerank_data
from simulators.data.pipeline_config import PipelineConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``data`` subcommand; every :class:`PipelineConfig` field is an option."""
    parser = subparsers.add_parser(
        "data",
        help="build and summarise the reranking requests of a dataset",
        description="Build (or load from the cache) the processed reranking data of a "
        "MovieLens dataset, or of the synthetic world (generated, no files needed), and "
        "print a summary: users, items, requests per split, positive rate, retriever "
        "recall@N on test, GR2 pre-ranker metrics.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="ml-100k",
        help="a MovieLens release's files (ML-100K to ML-32M and ml-latest, in --data-dir "
        "or a data root), or the synthetic world (built from ML-1M-format files)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the dataset folder or a folder holding it (default: $RERANK_ENV_DATA, "
        "then ../shared/data)",
    )
    parser.add_argument("--rebuild", action="store_true", help="ignore and replace the cache")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--json", action="store_true", help="print the summary numbers as JSON")
    group = parser.add_argument_group(
        "pipeline options", "The fields of PipelineConfig (docs/data.md explains their effects)."
    )
    hints = typing.get_type_hints(PipelineConfig)
    docs = field_docs(PipelineConfig)
    for field in dataclasses.fields(PipelineConfig):
        kind = hints[field.name]
        option = "--" + field.name.replace("_", "-")
        if typing.get_origin(kind) is typing.Literal:
            group.add_argument(
                option,
                choices=typing.get_args(kind),
                default=field.default,
                help=docs[field.name],
            )
        else:
            group.add_argument(
                option,
                type=kind,
                default=field.default,
                metavar=kind.__name__.upper(),
                help=docs[field.name],
            )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``rerank-env data``."""
    config = PipelineConfig(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(PipelineConfig)}
    )
    path = None if args.no_cache else cache_path(args.dataset, args.data_dir, config)
    cached = path is not None and path.exists() and not args.rebuild
    start = time.perf_counter()
    data = load_rerank_data(
        args.dataset,
        args.data_dir,
        config,
        use_cache=not args.no_cache,
        rebuild=args.rebuild,
        progress=not args.json,
    )
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"seconds": seconds, "from_cache": cached, **data.stats}, indent=2))
        return 0
    print(data.summary())
    how = "read from the cache" if cached else "built from the raw files"
    print(f"\n{how} in {seconds:.2f} s; cache file: {path or 'none (--no-cache)'}")
    return 0
