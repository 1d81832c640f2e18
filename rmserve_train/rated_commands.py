"""`rmserve train --objective regression` and `rmserve eval` on a RATED file: the scalar-rating
halves of the commands in commands.py, which hands over to these when the data is rated."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from model_store.store import ModelStore
from rmserve_train.pairs import DataError, split_pairs


def train_rated(args: argparse.Namespace, store: ModelStore, options: Any) -> dict[str, Any]:
    """Fit to the ratings of --data, evaluate on the held-out ones; what the JSON line says."""
    from rmserve_train.ratings import read_rated
    from rmserve_train.regression import train_regression_model
    from rmserve_train.regression_report import format_regression_report

    if args.plot:
        raise DataError("--plot draws preference pairs; it has nothing to draw for rated inputs")
    rated = read_rated(args.data, limit=args.limit, score_key=args.score_key)
    if args.eval_data:
        train, heldout = rated, read_rated(args.eval_data, score_key=args.score_key)
        data, heldout_data = f"{args.data.name} ({len(rated)} rated inputs)", args.eval_data.name
    else:
        train, heldout = split_pairs(rated, args.eval_fraction, args.seed)
        data = f"{args.data.name} ({len(train)} of {len(rated)} rated inputs)"
        heldout_data = f"{args.data.name} ({len(heldout)} held out, split seed {args.seed})"
    result = train_regression_model(store, base=args.base, name=args.name, version=args.version,
                                    train_rated=train, heldout_rated=heldout, data=data,
                                    heldout_data=heldout_data, options=options)
    manifest = result.stored.manifest
    title = f"{manifest.ref} on {len(heldout)} held-out rated inputs"
    print(format_regression_report(result.heldout.report, title=title), file=sys.stderr)  # type: ignore[arg-type]
    return {
        "model": manifest.ref, "path": str(result.stored.path),
        "heldout": result.heldout.report.as_dict(),
        "normalization": manifest.normalization.model_dump() if manifest.normalization else None,
        "training": result.training,
    }


def evaluate_rated_file(args: argparse.Namespace, store: ModelStore, source: Any) -> dict[str, Any]:
    """Correlation and error of `source`'s rewards against the ratings of --data."""
    from rmserve_train.evaluate import evaluate_rated, evaluation_record, record_evaluation
    from rmserve_train.ratings import read_rated
    from rmserve_train.regression_report import format_regression_report

    if args.plot:
        raise DataError("--plot draws preference pairs; it has nothing to draw for rated inputs")
    rated = read_rated(args.data, limit=args.limit, score_key=args.score_key)
    report = evaluate_rated(source, rated).report
    print(format_regression_report(report, title=f"{source.label} on {args.data.name}"), file=sys.stderr)
    result: dict[str, Any] = {"model": source.label, "data": args.data.name, **report.as_dict()}
    if args.write is not None:
        key = args.write or stem(args.data.name)
        record = evaluation_record(report, data=args.data.name, scored_by=args.url or "in-process torch")
        stored = record_evaluation(store, args.model, key, record)
        result["written"] = f"{stored.manifest.ref} evaluation[{key!r}]"
    return result


def stem(name: str) -> str:
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


