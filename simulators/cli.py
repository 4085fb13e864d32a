"""The ``rerank-env simulator`` commands: train and evaluate click simulators."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from simulators.bundle import BundleConfig, build_bundle, load_bundle
from simulators.checkpoint import CheckpointError, load_simulator, save_simulator
from simulators.cli_help import HelpFormatter, field_docs
from simulators.data.datasets import DATASETS, data_checksum, load_rerank_data
from simulators.data.paths import cache_dir
from simulators.factory import MODEL_KINDS, SimulatorSpec, build_simulator, learned_members
from simulators.training import evaluate_simulator, fit_members, fit_simulator


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``report``: data, fitting, composition."""
    parser.add_argument("--dataset", choices=DATASETS, default="ml-100k", help="raw data")
    parser.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    parser.add_argument("--dim", type=int, default=32, help="attractiveness and Transformer width")
    parser.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="maximum epochs (early stopping on validation likelihood)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling")
    parser.add_argument(
        "--position-bias",
        type=float,
        default=1.0,
        help="examination exponent of the composed simulator (DCG-like position bias)",
    )
    parser.add_argument(
        "--diversity-strength",
        type=float,
        default=2.0,
        help="diminishing-returns strength of the composed simulator",
    )


_DATA_DIR_HELP = (
    "the dataset folder or a folder holding it (default: $RERANK_ENV_DATA, then ../shared/data)"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``simulator train``, ``report`` and ``evaluate``."""
    parser = subparsers.add_parser(
        "simulator",
        help="train, evaluate, report on and bundle click simulators",
        description="Fit click simulators on logged slates (train), judge a checkpoint "
        "(evaluate), compare every model side by side (report), or build the bundle an "
        "environment loads (bundle).",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="simulator_command", metavar="ACTION", required=True)

    train = commands.add_parser(
        "train",
        help="fit a simulator on logged slates and save a checkpoint",
        description="Fit a click simulator on the training slates (early stopping on "
        "validation likelihood), report AUC, logloss and ECE on valid and test, and save "
        "a versioned checkpoint.",
        formatter_class=HelpFormatter,
    )
    _add_fit_options(train)
    train.add_argument(
        "--model",
        choices=MODEL_KINDS,
        default="transformer",
        help="click model: context-aware Transformer, PBM, DCM, cascade or pointwise",
    )
    train.add_argument("--batch-size", type=int, default=256, help="slates per Adam step")
    train.add_argument("--learning-rate", type=float, default=5e-3, help="Adam step size")
    train.add_argument(
        "--members",
        type=int,
        default=1,
        help="ensemble members, each fitted on a bootstrap resample of training slates "
        "(>= 2 gives a held-out evaluation member)",
    )
    train.add_argument(
        "--compose",
        action="store_true",
        help="wrap the model with the examination prior and diminishing returns",
    )
    train.add_argument(
        "--out", type=Path, default=None, help="checkpoint path (default: the user cache)"
    )
    train.set_defaults(handler=run_train)

    report = commands.add_parser(
        "report",
        help="fit every model and write the validation report (markdown, CSV, PNG)",
        description="Fit pointwise, PBM, DCM, cascade and the context-aware model, plus "
        "the context-aware model composed with examination and diminishing returns, and "
        "write a side-by-side report: AUC, logloss, ECE, reliability plot, headroom and "
        "order sensitivity.",
        formatter_class=HelpFormatter,
    )
    _add_fit_options(report)
    report.add_argument(
        "--requests",
        type=int,
        default=200,
        help="test requests for headroom and order sensitivity",
    )
    report.add_argument(
        "--out", type=Path, default=Path("runs/simulator-report"), help="report folder"
    )
    report.set_defaults(handler=run_report)

    bundle = commands.add_parser(
        "bundle",
        help="fit the simulators of an environment bundle and write its folder",
        description="Fit one ensemble per model kind (the last member held out for "
        "evaluation) and write the bundle: request pool, checkpoints and a manifest with "
        "config, data checksum and metrics. Use it in an environment with "
        "gym.make('SlateRerank-v0', bundle=DIR). From a source checkout, the embedded "
        "default is reproduced with `rerank-env simulator bundle --out "
        "simulators/bundles/ml-100k`.",
        formatter_class=HelpFormatter,
    )
    bundle.add_argument("--dataset", choices=DATASETS, default="ml-100k", help="raw data")
    bundle.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    docs = field_docs(BundleConfig)  # the config's docstring: help cannot drift from it
    for field in dataclasses.fields(BundleConfig):
        flag = "--" + field.name.replace("_", "-")
        text = docs[field.name]
        if field.name == "kinds":
            bundle.add_argument(
                flag, nargs="+", choices=MODEL_KINDS, default=list(field.default), help=text
            )
        elif isinstance(field.default, bool):
            bundle.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=field.default, help=text
            )
        elif field.default is None:  # an optional number (weight_decay_per_epoch)
            bundle.add_argument(flag, type=float, default=None, help=text)
        else:
            bundle.add_argument(flag, type=type(field.default), default=field.default, help=text)
    bundle.add_argument(
        "--out", type=Path, default=None, help="bundle folder (default: the user cache)"
    )
    bundle.set_defaults(handler=run_bundle)

    evaluate = commands.add_parser(
        "evaluate",
        help="report a checkpoint's metrics on a split",
        description="AUC, logloss and ECE of a saved simulator on one split of the data it "
        "was trained on.",
        formatter_class=HelpFormatter,
    )
    evaluate.add_argument("checkpoint", type=Path, help="a .pt file from simulator train")
    evaluate.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    evaluate.add_argument(
        "--split", choices=("train", "valid", "test"), default="test", help="logged slates"
    )
    evaluate.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    """Run ``rerank-env simulator train``."""
    data = load_rerank_data(args.dataset, args.data_dir)
    genres = data.item_features[:, :-1]  # genre flags; the last column is the year
    spec = SimulatorSpec.for_data(
        data,
        args.model,
        dim=args.dim,
        seed=args.seed,
        composed=args.compose,
        position_bias=args.position_bias,
        diversity_strength=args.diversity_strength,
        similarity_dim=genres.shape[1] if args.compose else 0,
        ensemble_size=args.members,
    )
    model = build_simulator(
        spec,
        torch.as_tensor(data.user_features),
        torch.as_tensor(data.item_features),
        torch.as_tensor(genres) if args.compose else None,
    )
    learned = model.base if args.compose else model
    start = time.perf_counter()
    results = fit_members(
        learned_members(model),
        data,
        seed=args.seed,
        bootstrap=args.members > 1,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    seconds = time.perf_counter() - start
    metrics = {split: evaluate_simulator(learned, data, split) for split in ("valid", "test")}
    training = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "members": args.members,
        "best_epoch_of_last_member": results[-1].best_epoch,
        "fit_seconds": seconds,
    }
    metadata = {
        "dataset": args.dataset,
        "data_config": json.loads(data.config.to_json()),
        "data_checksum": data_checksum(args.dataset, args.data_dir),
        "training": training,
        "metrics": metrics,
    }
    out = args.out or _default_path(args.dataset, spec, data.config.to_json())
    save_simulator(out, model, spec, metadata)
    print(f"{args.model} x{args.members} fitted in {seconds:.1f} s")
    for split, values in metrics.items():
        print(f"  {split:5s} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    print(f"checkpoint: {out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Run ``rerank-env simulator report``."""
    from simulators.composed import ComposedSimulator  # noqa: PLC0415
    from simulators.data.synthetic_world import true_simulator_for  # noqa: PLC0415
    from simulators.report import write_report  # noqa: PLC0415  (matplotlib is slow to import)

    data = load_rerank_data(args.dataset, args.data_dir)
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    models, extra = {}, {}
    for kind in MODEL_KINDS:
        spec = SimulatorSpec.for_data(data, kind, dim=args.dim, seed=args.seed)
        model = build_simulator(spec, users, items)
        start = time.perf_counter()
        fit_simulator(model, data, epochs=args.epochs, seed=args.seed)
        models[kind] = model
        extra[kind] = {"fit_seconds": time.perf_counter() - start}
    composed = ComposedSimulator(
        models["transformer"],
        items[:, :-1],  # genre flags
        position_bias=args.position_bias,
        diversity_strength=args.diversity_strength,
        max_positions=data.config.slate_length,
    )
    name = f"transformer+composed(bias={args.position_bias:g},div={args.diversity_strength:g})"
    models[name] = composed
    extra[name] = extra["transformer"]
    # In the synthetic world the truth is known: the report adds the fidelity metrics.
    truth = true_simulator_for(data) if args.dataset == "synthetic" else None
    results = write_report(
        models, data, args.out, requests=args.requests, seed=args.seed, extra=extra, truth=truth
    )
    width = max(len(n) for n in results)
    for model_name, values in results.items():
        print(
            f"{model_name.ljust(width)}  auc {values['auc']:.4f}  logloss {values['logloss']:.4f}  "
            f"ece {values['ece']:.4f}  headroom {100 * values['headroom']:.2f}%"
            + (
                f"  regret {values['regret_pct']:.2f}%  tau(local) "
                f"{values['kendall_tau_local']:.3f}  lead ratio {values['lead_ratio']:.2f}"
                if truth is not None
                else ""
            )
        )
    print(f"report: {args.out / 'report.md'}")
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    """Run ``rerank-env simulator bundle``."""
    config = BundleConfig(
        **{
            f.name: tuple(getattr(args, f.name)) if f.name == "kinds" else getattr(args, f.name)
            for f in dataclasses.fields(BundleConfig)
        }
    )
    data = load_rerank_data(args.dataset, args.data_dir)
    out = args.out or cache_dir() / "bundles" / args.dataset
    start = time.perf_counter()
    build_bundle(data, out, config, data_checksum=data_checksum(args.dataset, args.data_dir))
    bundle = load_bundle(out)
    print(f"bundle written to {out} in {time.perf_counter() - start:.1f} s")
    for kind, entry in bundle.manifest["simulators"].items():
        test = entry["metrics"]["train"]["test"]
        print(f"  {kind:12s} test auc {test['auc']:.4f}  logloss {test['logloss']:.4f}")
    headroom = bundle.manifest["default_simulator"]["test_diagnostics"]["headroom"]
    print(f"  default simulator headroom (beam-16 vs sort): {100 * headroom:.2f}%")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``rerank-env simulator evaluate``."""
    model, spec, metadata = load_simulator(args.checkpoint)
    data = load_rerank_data(metadata["dataset"], args.data_dir)
    if data.n_items != spec.n_items or data.n_users != spec.n_users:
        raise CheckpointError(
            f"{args.checkpoint} was trained on {spec.n_users} users / {spec.n_items} items, the "
            f"data has {data.n_users} / {data.n_items}: use the data config it was trained on"
        )
    learned = model.base if spec.composed else model
    values = evaluate_simulator(learned, data, args.split)
    print(f"{spec.kind} on {args.split}: " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return 0


def _default_path(dataset: str, spec: SimulatorSpec, data_config: str) -> Path:
    key = hashlib.sha256(
        (json.dumps(dataclasses.asdict(spec), sort_keys=True) + data_config).encode()
    ).hexdigest()[:16]
    return cache_dir() / "simulators" / f"{dataset}-{spec.kind}-{key}.pt"
