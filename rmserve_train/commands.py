"""`rmserve train`, `rmserve eval` and `rmserve models calibrate`: flags, and what each prints.

People get a table on stderr, programs one JSON line on stdout. Heavy imports (torch, TRL,
matplotlib) wait until a command runs, so `rmserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model_store.store import ModelStore, ModelStoreError, parse_ref
from rmserve_train.pairs import DataError


def add_commands(commands: Any, model_actions: Any) -> None:
    """Register the subcommands; each sets `run(args, store) -> exit status`."""
    _add_train(commands)
    _add_evaluate(commands)
    _add_calibrate(model_actions)


def _add_train(commands: Any) -> None:
    train = commands.add_parser("train", help="train a reward model from preference pairs (Bradley-Terry) "
                                              "or scalar ratings (regression)")
    train.add_argument("--data", type=Path, required=True, metavar="PAIRS|RATED",
                       help="JSONL(.gz) of prompt/chosen/rejected (plain or messages) or hh-rlhf "
                            "transcripts; with --objective regression, prompt/response (or messages, "
                            "text) and a score")
    train.add_argument("--objective", choices=["bradley-terry", "regression"], default="bradley-terry",
                       help="pairs: -log sigmoid(r_chosen - r_rejected) (TRL RewardTrainer); ratings: "
                            "mean squared error to the score (transformers Trainer)")
    _add_score_key(train)
    train.add_argument("--base", required=True, metavar="MODEL",
                       help="HF model folder, store NAME[:VERSION] or hub id (a scalar head is added "
                            "if it has none)")
    train.add_argument("--name", required=True, help="store name of the new version")
    train.add_argument("--version", help="default: the next vN")
    held_out = train.add_mutually_exclusive_group()
    held_out.add_argument("--eval-data", type=Path, metavar="PAIRS", help="held-out pairs (default: a split)")
    held_out.add_argument("--eval-fraction", type=float, default=0.1,
                          help="share of --data held out for evaluation (default: 0.1)")
    train.add_argument("--limit", type=int, default=0, help="read only the first N pairs of --data")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: 1e-4)")
    train.add_argument("--batch-pairs", type=int, default=16, help="pairs per step (default: 16)")
    train.add_argument("--max-length", type=int,
                       help="tokens per input, cut as the server cuts; also the new version's limit "
                            "(default: the base's)")
    train.add_argument("--warmup-ratio", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    _add_device(train)
    train.add_argument("--plot", type=Path, metavar="PNG", help="write the held-out evaluation's plot")
    train.add_argument("--quiet", action="store_true", help="no progress bars or training logs")
    _add_store(train)
    train.set_defaults(run=_train)


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "eval", help="pairwise accuracy, margins and calibration on preference pairs; correlation "
                     "and error on rated inputs"
    )
    evaluate.add_argument("--model", metavar="NAME[:VERSION]",
                          help="store model or HF folder (with --url: the served model, default its default)")
    evaluate.add_argument("--data", type=Path, required=True, metavar="PAIRS|RATED",
                          help="preference pairs, or rated inputs (told apart by the first line)")
    _add_score_key(evaluate)
    evaluate.add_argument("--url", help="score through a running server (http://host:port or grpc://host:port)")
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N pairs")
    evaluate.add_argument("--bins", type=int, default=5, help="reliability bins over confidence 0.5-1")
    evaluate.add_argument("--plot", type=Path, metavar="PNG", help="write reward histograms and reliability")
    evaluate.add_argument("--write", nargs="?", const="", metavar="KEY",
                          help="store the results in the manifest's evaluation[KEY] (default key: the "
                               "data file's name); with --url, in the store version --model names "
                               "(latest without a version), which should be the one served")
    _add_device(evaluate)
    _add_store(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _add_calibrate(model_actions: Any) -> None:
    calibrate = model_actions.add_parser(
        "calibrate", help="store the mean and std of a model's rewards over a reference set"
    )
    calibrate.add_argument("ref", metavar="NAME[:VERSION]")
    calibrate.add_argument("--data", type=Path, required=True, metavar="FILE",
                           help="PAIRS (both sides are used) or items: prompt/response, messages or text")
    calibrate.add_argument("--url", help="score through a running server that serves this version")
    calibrate.add_argument("--limit", type=int, default=0, help="only the first N lines")
    _add_device(calibrate)
    calibrate.set_defaults(run=_calibrate)


def _add_score_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score-key", default="score", metavar="FIELD",
                        help="rated inputs: the field holding the rating (default: score; e.g. helpfulness)")


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="in-process: auto (CUDA when present), cpu, cuda:N")


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path,
                        help="store root (default: $RMSERVE_STORE or ~/.cache/rmserve/models)")


def _train(args: argparse.Namespace, store: ModelStore) -> int:
    from rmserve_train.evaluate import Evaluation
    from rmserve_train.pairs import read_pairs, split_pairs
    from rmserve_train.report import format_report
    from rmserve_train.train import train_reward_model

    def run() -> int:
        options = _train_options(args)
        if args.objective == "regression":
            from rmserve_train.rated_commands import train_rated

            print(json.dumps(_summary(train_rated(args, store, options))))
            return 0
        pairs = read_pairs(args.data, limit=args.limit)
        if args.eval_data:
            train_pairs, heldout = pairs, read_pairs(args.eval_data)
            data, heldout_data = f"{args.data.name} ({len(pairs)} pairs)", args.eval_data.name
        else:
            train_pairs, heldout = split_pairs(pairs, args.eval_fraction, args.seed)
            data = f"{args.data.name} ({len(train_pairs)} of {len(pairs)} pairs)"
            heldout_data = f"{args.data.name} ({len(heldout)} held out, split seed {args.seed})"
        result = train_reward_model(store, base=args.base, name=args.name, version=args.version,
                                    train_pairs=train_pairs, heldout_pairs=heldout, data=data,
                                    heldout_data=heldout_data, options=options)
        manifest, held = result.stored.manifest, result.heldout
        assert isinstance(held, Evaluation)  # the pairwise objective evaluates on pairs
        title = f"{manifest.ref} on {len(heldout)} held-out pairs"
        print(format_report(result.heldout.report, title=title), file=sys.stderr)
        printed: dict[str, Any] = {
            "model": manifest.ref, "path": str(result.stored.path),
            "heldout": _summary(result.heldout.report.as_dict()),
            "normalization": manifest.normalization.model_dump() if manifest.normalization else None,
            "training": result.training,
        }
        if args.plot:
            from rmserve_train.plot import plot_evaluation

            plot = plot_evaluation(held.chosen, held.rejected, held.report, args.plot, title=title)
            printed["plot"] = str(plot)
        print(json.dumps(printed))
        return 0

    return _reporting_errors(run)


def _train_options(args: argparse.Namespace) -> Any:
    from rmserve_train.train import TrainOptions

    return TrainOptions(
        epochs=args.epochs, learning_rate=args.lr, batch_pairs=args.batch_pairs,
        max_length=args.max_length, warmup_ratio=args.warmup_ratio, seed=args.seed,
        device=args.device, progress=not args.quiet,
    )


def _evaluate_rated(args: argparse.Namespace, store: ModelStore) -> int:
    from rmserve_train.rated_commands import evaluate_rated_file

    source = _source(args.url, args.model, args.device, store)
    try:
        print(json.dumps(_summary(evaluate_rated_file(args, store, source))))
    finally:
        source.close()
    return 0


def _evaluate(args: argparse.Namespace, store: ModelStore) -> int:
    from rmserve_train.evaluate import evaluate_pairs, evaluation_record, record_evaluation
    from rmserve_train.pairs import read_pairs
    from rmserve_train.ratings import is_rated
    from rmserve_train.report import format_report

    def run() -> int:
        if args.write is not None and not args.model:
            raise DataError("--write needs --model NAME[:VERSION], the store version to record in")
        if is_rated(args.data, score_key=args.score_key):
            return _evaluate_rated(args, store)
        pairs = read_pairs(args.data, limit=args.limit)
        source = _source(args.url, args.model, args.device, store)
        try:
            evaluation = evaluate_pairs(source, pairs, bins=args.bins)
        finally:
            source.close()
        report = evaluation.report
        print(format_report(report, title=f"{source.label} on {args.data.name}"), file=sys.stderr)
        result: dict[str, Any] = {"model": source.label, "data": args.data.name, **_summary(report.as_dict())}
        if args.plot:
            from rmserve_train.plot import plot_evaluation

            title = f"{source.label} on {args.data.name} ({report.pairs} pairs)"
            result["plot"] = str(plot_evaluation(evaluation.chosen, evaluation.rejected, report,
                                                 args.plot, title=title))
        if args.write is not None:
            key = args.write or _stem(args.data)
            record = evaluation_record(report, data=args.data.name, scored_by=args.url or "in-process torch")
            stored = record_evaluation(store, args.model, key, record)
            result["written"] = f"{stored.manifest.ref} evaluation[{key!r}]"
        print(json.dumps(result))
        return 0

    return _reporting_errors(run)


def _calibrate(args: argparse.Namespace, store: ModelStore) -> int:
    from rmserve_train.calibrate import calibrate
    from rmserve_train.pairs import read_reference_items

    def run() -> int:
        items = read_reference_items(args.data, limit=args.limit)
        source = _source(args.url, args.ref, args.device, store)
        try:
            stored = calibrate(store, args.ref, source, items,
                               reference=f"{args.data.name}: {len(items)} inputs")
        finally:
            source.close()
        normalization = stored.manifest.normalization
        assert normalization is not None  # calibrate() has just stored it
        print(f"{stored.manifest.ref}: rewards over {len(items)} reference inputs have mean "
              f"{normalization.mean:+.4f} and std {normalization.std:.4f}", file=sys.stderr)
        print(json.dumps({"model": stored.manifest.ref, "normalization": normalization.model_dump()}))
        return 0

    return _reporting_errors(run)


def _source(url: str | None, model: str | None, device: str, store: ModelStore) -> Any:
    from rmserve_train.scorers import InProcessRewards, ServerRewards

    if url:  # the server names models without versions: NAME (or its alias)
        return ServerRewards(url, model=parse_ref(model)[0] if model else None)
    if not model:
        raise DataError("--model is needed to score in-process (or give --url)")
    return InProcessRewards.open(model, store, device=device, progress=True)


def _summary(value: Any) -> Any:
    """The JSON line's numbers, rounded to 4 places."""
    if isinstance(value, dict):
        return {k: _summary(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_summary(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def _reporting_errors(run: Any) -> int:
    """Bad data or arguments, or a server that refused: one line naming the problem, exit status 1."""
    from rmserve_client import RewardError

    try:
        return run()
    except (DataError, ModelStoreError, RewardError, ValueError) as exc:
        print(f"rmserve: {exc}", file=sys.stderr)
        return 1
