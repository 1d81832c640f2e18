"""Train a Bradley-Terry reward model with TRL's RewardTrainer and publish it into the store.

The loss is TRL's: -log sigmoid(r_chosen - r_rejected). Inputs are tokenised and padded the way
the server does it (see quality.encoding), the model is evaluated on held-out pairs through the
server's scoring path, and the new version is published with those results and normalisation
statistics in its manifest, all in one atomic step.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, PrinterCallback, set_seed
from transformers.utils import logging as hf_logging
from trl import RewardConfig, RewardTrainer

from model_store.normalization import reward_normalization
from model_store.store import ModelStore, StoredModel
from rmserve_train.encoding import PreferenceCollator, encode_pairs, training_pad_id
from rmserve_train.evaluate import Evaluation, RatedEvaluation, evaluate_pairs, evaluation_record
from rmserve_train.pairs import Comparison
from rmserve_train.scorers import InProcessRewards
from service.loading import load_tokenizer, locate_model
from service.scoring.formatting import InputFormatter

# Tokenizers report a huge sentinel when they have no length limit of their own.
_UNLIMITED_LENGTH = 1_000_000


@dataclass(frozen=True)
class TrainOptions:
    """Hyperparameters and where to run."""

    epochs: float = 1.0
    learning_rate: float = 1e-4
    batch_pairs: int = 16
    max_length: int | None = None  # default: the base tokenizer's limit
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present
    progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    """The published version, its held-out evaluation and what training did."""

    stored: StoredModel
    heldout: Evaluation | RatedEvaluation  # by the objective: pairs or rated inputs
    training: dict[str, Any]


def resolve_base(base: str, store: ModelStore) -> tuple[str, str]:
    """(what from_pretrained loads, provenance) for a folder, a store NAME[:VERSION] or a hub id."""
    folder = Path(base).expanduser()
    if folder.is_dir():
        return str(folder.resolve()), f"file://{folder.resolve()}"
    if store.contains(base):
        stored = store.get(base)
        store.verify(stored)
        return str(stored.path), f"rmserve://{stored.manifest.ref}"
    return base, f"hf://{base}"  # from_pretrained fetches it, or says why it cannot


def train_reward_model(
    store: ModelStore,
    *,
    base: str,
    name: str,
    train_pairs: Sequence[Comparison],
    heldout_pairs: Sequence[Comparison],
    data: str,
    heldout_data: str,
    options: TrainOptions,
    version: str | None = None,
) -> TrainResult:
    """Train from `base` on `train_pairs`, evaluate on `heldout_pairs`, publish as `name`.
    `data` and `heldout_data` say what the pairs are, for the manifest."""
    base_path, provenance = resolve_base(base, store)
    with tempfile.TemporaryDirectory(prefix="rmserve-train-") as tmp:
        folder = Path(tmp) / "model"
        training = fit(base_path, train_pairs, folder, Path(tmp) / "trainer", options)
        # Held-out numbers come from the saved folder, loaded as the server will load it.
        with quiet_transformers(options.progress):
            rewards = InProcessRewards(
                locate_model(str(folder), store, backend="torch"), device=options.device,
                progress=options.progress,
            )
        try:
            heldout = evaluate_pairs(rewards, heldout_pairs)
        finally:
            rewards.close()
        normalization = reward_normalization(
            heldout.chosen + heldout.rejected,
            reference=f"held-out pairs, chosen and rejected: {heldout_data}",
        )
        stored = store.publish(
            folder, name=name, version=version, max_length=training["max_length"],
            source=f"{provenance} + Bradley-Terry (TRL RewardTrainer) on {data}",
            evaluation={
                "heldout": evaluation_record(heldout.report, data=heldout_data, scored_by="in-process torch"),
                "training": {**training, "base": provenance, "data": data},
            },
            normalization=normalization,
        )
    return TrainResult(stored, heldout, training)


def fit(
    base: str, pairs: Sequence[Comparison], output_dir: Path, work_dir: Path, options: TrainOptions
) -> dict[str, Any]:
    """Train and save an HF model folder (weights and tokenizer) to `output_dir`."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(base)  # the server's rules (a pad token is set); a hub id works too
    set_seed(options.seed)  # a new head is drawn at random: the same seed, the same head
    model = load_reward_model(base)
    max_length = max_length_for(tokenizer, model, options.max_length)
    encoded = encode_pairs(InputFormatter(tokenizer, max_length), pairs)
    pad_id = training_pad_id(tokenizer.pad_token_id, encoded.dataset,
                             model.get_input_embeddings().num_embeddings)
    on_gpu = options.device != "cpu" and torch.cuda.is_available()
    config = _reward_config(options, work_dir, len(pairs), on_gpu=on_gpu)
    trainer = RewardTrainer(
        model=model, args=config, train_dataset=encoded.dataset, processing_class=tokenizer,
        data_collator=PreferenceCollator(pad_id),
    )
    model.config.pad_token_id = pad_id  # RewardTrainer set the tokenizer's; see training_pad_id
    if not options.progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar, it prints every log
    with quiet_transformers(options.progress):
        outcome = trainer.train()
        model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.model_max_length = max_length  # a plain-folder load then sees the same limit
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    last = next((log for log in reversed(trainer.state.log_history) if "accuracy" in log), {})
    return {
        "train_pairs": len(pairs),
        "epochs": options.epochs,
        "steps": outcome.global_step,
        "batch_pairs": options.batch_pairs,
        "learning_rate": options.learning_rate,
        "max_length": max_length,
        "inputs_truncated": encoded.truncated,
        "train_loss": round(outcome.training_loss, 4),
        "last_logged_train_accuracy": last.get("accuracy"),
        "device": "cuda" if on_gpu else "cpu",
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def trainer_arguments(options: TrainOptions, work_dir: Path, rows: int, *, on_gpu: bool) -> dict[str, Any]:
    """What every rmserve training run asks of transformers' Trainer (TRL's RewardConfig too)."""
    return {
        "output_dir": str(work_dir),
        "num_train_epochs": options.epochs,
        "per_device_train_batch_size": options.batch_pairs,
        "learning_rate": options.learning_rate,
        "warmup_steps": options.warmup_ratio,  # a float below 1 is a fraction of all steps
        "weight_decay": options.weight_decay,
        "lr_scheduler_type": "linear",
        "remove_unused_columns": False,  # keep the token-type (and length) columns for the collator
        "train_sampling_strategy": "group_by_length",
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),  # mixed precision; weights stay float32
        "use_cpu": not on_gpu,
        "logging_steps": max(1, min(10, rows // options.batch_pairs // 10)),
        "save_strategy": "no",
        "report_to": "none",
        "seed": options.seed,
        "disable_tqdm": not options.progress,
    }


def _reward_config(options: TrainOptions, work_dir: Path, pairs: int, *, on_gpu: bool) -> RewardConfig:
    return RewardConfig(
        **trainer_arguments(options, work_dir, pairs, on_gpu=on_gpu),
        max_length=None,  # inputs are already shortened as the server shortens them
        activation_checkpointing=False,  # small models: memory is not the limit, time is
    )


def load_reward_model(base: str) -> Any:
    """The base as *ForSequenceClassification with one output: a base without a scalar head
    (an encoder, a causal LM, a classifier with other labels) gets a new one."""
    with quiet_transformers(False):  # the new head is "missing" from the checkpoint: expected
        return AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, id2label={0: "reward"}, label2id={"reward": 0},
            problem_type="regression", ignore_mismatched_sizes=True, dtype=torch.float32,
        )


def max_length_for(tokenizer: Any, model: Any, wanted: int | None) -> int:
    limit = tokenizer.model_max_length
    if not 0 < limit < _UNLIMITED_LENGTH:
        limit = getattr(model.config, "max_position_embeddings", None) or 512
    if wanted is not None and wanted > limit:
        raise ValueError(f"--max-length {wanted} is over the base model's limit of {limit} tokens")
    return wanted or limit


@contextlib.contextmanager
def quiet_transformers(progress: bool) -> Iterator[None]:
    """Only errors from transformers' logger; its progress bars only when progress is wanted."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
