"""Train a reward model to predict scalar ratings (HelpSteer-style) and publish it into the store.

The objective is regression, min sum (R - f(s, a))^2 over rated inputs: the model's one output is
fitted to the rating by mean squared error. TRL's trainers do not fit it (RewardTrainer is
pairwise Bradley-Terry), so this is transformers' Trainer, whose *ForSequenceClassification
head with one label and problem_type "regression" computes exactly that loss from float labels.
Inputs are tokenised and padded as the server does it (see encoding), as for `rmserve train`'s
pairwise objective; the model is evaluated on held-out rated inputs through the server's scoring
path and published with those results and normalisation statistics in its manifest.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

from model_store.normalization import reward_normalization
from model_store.store import ModelStore
from rmserve_train.encoding import RatedCollator, encode_rated, training_pad_id
from rmserve_train.evaluate import RatedEvaluation, evaluate_rated, evaluation_record
from rmserve_train.ratings import Rated
from rmserve_train.scorers import InProcessRewards
from rmserve_train.train import (
    TrainOptions,
    TrainResult,
    load_reward_model,
    max_length_for,
    quiet_transformers,
    resolve_base,
    trainer_arguments,
)
from service.loading import load_tokenizer, locate_model
from service.scoring.formatting import InputFormatter


def train_regression_model(
    store: ModelStore,
    *,
    base: str,
    name: str,
    train_rated: Sequence[Rated],
    heldout_rated: Sequence[Rated],
    data: str,
    heldout_data: str,
    options: TrainOptions,
    version: str | None = None,
) -> TrainResult:
    """Fit `base` to the ratings of `train_rated`, evaluate on `heldout_rated`, publish as `name`."""
    base_path, provenance = resolve_base(base, store)
    with tempfile.TemporaryDirectory(prefix="rmserve-train-") as tmp:
        folder = Path(tmp) / "model"
        training = fit_regression(base_path, train_rated, folder, Path(tmp) / "trainer", options)
        heldout = heldout_evaluation(folder, store, heldout_rated, options)
        normalization = reward_normalization(heldout.rewards,
                                             reference=f"held-out rated inputs: {heldout_data}")
        stored = store.publish(
            folder, name=name, version=version, max_length=training["max_length"],
            source=f"{provenance} + regression on ratings (MSE, transformers Trainer) on {data}",
            evaluation={
                "heldout": evaluation_record(heldout.report, data=heldout_data, scored_by="in-process torch"),
                "training": {**training, "base": provenance, "data": data},
            },
            normalization=normalization,
        )
    return TrainResult(stored, heldout, training)


def heldout_evaluation(folder: Path, store: ModelStore, rated: Sequence[Rated],
                       options: TrainOptions) -> RatedEvaluation:
    """Held-out numbers from the saved folder, loaded as the server will load it."""
    with quiet_transformers(options.progress):
        rewards = InProcessRewards(locate_model(str(folder), store, backend="torch"), device=options.device,
                                   progress=options.progress)
    try:
        return evaluate_rated(rewards, rated)
    finally:
        rewards.close()


def fit_regression(
    base: str, rated: Sequence[Rated], output_dir: Path, work_dir: Path, options: TrainOptions
) -> dict[str, Any]:
    """Train and save an HF model folder (weights and tokenizer) to `output_dir`."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(base)
    set_seed(options.seed)  # the same seed, the same new head
    model = load_reward_model(base)
    max_length = max_length_for(tokenizer, model, options.max_length)
    encoded = encode_rated(InputFormatter(tokenizer, max_length), rated)
    pad_id = training_pad_id(tokenizer.pad_token_id, encoded.dataset,
                             model.get_input_embeddings().num_embeddings)
    on_gpu = options.device != "cpu" and torch.cuda.is_available()
    model.config.pad_token_id = pad_id  # see training_pad_id; put back before saving
    trainer = Trainer(model=model, args=_arguments(options, work_dir, len(rated), on_gpu=on_gpu),
                      train_dataset=encoded.dataset, data_collator=RatedCollator(pad_id))
    if not options.progress:
        trainer.remove_callback(PrinterCallback)
    with quiet_transformers(options.progress):
        outcome = trainer.train()
        model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.model_max_length = max_length
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    return {
        "objective": "regression",
        "train_items": len(rated),
        "epochs": options.epochs,
        "steps": outcome.global_step,
        "batch_items": options.batch_pairs,
        "learning_rate": options.learning_rate,
        "max_length": max_length,
        "inputs_truncated": encoded.truncated,
        "train_loss": round(outcome.training_loss, 4),
        "device": "cuda" if on_gpu else "cpu",
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def _arguments(options: TrainOptions, work_dir: Path, items: int, *, on_gpu: bool) -> TrainingArguments:
    return TrainingArguments(**trainer_arguments(options, work_dir, items, on_gpu=on_gpu))
