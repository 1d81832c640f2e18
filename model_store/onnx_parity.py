"""The parity check of an ONNX export: its rewards against unbatched PyTorch rewards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FP32_TOLERANCE = 1e-4
# fp16 exports must order the checked inputs as PyTorch does, bar near-ties.
FP16_MIN_RANKING_AGREEMENT = 0.95
PARITY_INPUTS = 24
_PARITY_MAX_TOKENS = 256


@dataclass(frozen=True)
class ParityReport:
    """How the export's rewards compare with unbatched PyTorch rewards on the same inputs."""

    inputs: int
    max_abs_diff: float
    ranking_agreement: float

    def as_dict(self) -> dict[str, float]:
        return {"inputs": self.inputs, "max_abs_diff": self.max_abs_diff,
                "ranking_agreement": self.ranking_agreement}


def parity_inputs(vocab_size: int, max_length: int, *, seed: int = 0) -> list[np.ndarray]:
    """Token rows of mixed lengths, from one token to the model's limit (at most 256)."""
    rng = np.random.default_rng(seed)
    longest = min(max_length, _PARITY_MAX_TOKENS)
    lengths = np.unique(np.geomspace(1, longest, PARITY_INPUTS).astype(int))
    lengths = np.concatenate([lengths, rng.integers(1, longest + 1, PARITY_INPUTS - len(lengths))])
    return [rng.integers(0, vocab_size, n) for n in lengths]


def check_parity(
    model: torch.nn.Module, names: list[str], graph_file: Path, ort: Any, *, max_length: int
) -> ParityReport:
    """Run the export (its inputs `names`, with ONNX Runtime `ort`) on one right-padded batch of
    mixed lengths and each row alone, and compare with an unbatched `model(**inputs).logits`
    reference per row."""
    rows = parity_inputs(model.config.vocab_size, max_length)
    with torch.inference_mode():
        reference = np.array([
            model(**_reference_inputs(row, names)).logits[0, 0].item() for row in rows
        ])
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    session = ort.InferenceSession(str(graph_file), providers=providers)
    batched = session.run(["rewards"], _feeds(rows, names))[0]
    alone = np.array([session.run(["rewards"], _feeds([row], names))[0][0] for row in rows])
    worst = float(max(np.abs(batched - reference).max(), np.abs(alone - reference).max()))
    return ParityReport(len(rows), worst, ranking_agreement(reference, batched))


def _reference_inputs(row: np.ndarray, names: list[str]) -> dict[str, torch.Tensor]:
    ids = torch.from_numpy(row)[None]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = _segments(len(row))[None]
    return inputs


def _segments(length: int) -> torch.Tensor:
    """A second segment over the last third, so token_type_ids are exercised."""
    segments = torch.zeros(length, dtype=torch.long)
    segments[length - length // 3 :] = 1
    return segments


def _feeds(rows: list[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    width = max(len(row) for row in rows)
    feeds = {name: np.zeros((len(rows), width), dtype=np.int64) for name in names}
    for i, row in enumerate(rows):
        feeds["input_ids"][i, : len(row)] = row
        feeds["attention_mask"][i, : len(row)] = 1
        if "token_type_ids" in feeds:
            feeds["token_type_ids"][i, : len(row)] = _segments(len(row)).numpy()
    if "position_ids" in feeds:
        feeds["position_ids"][:] = np.arange(width)
    return feeds


def ranking_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of input pairs that both order the same way (Kendall-style, ties agree)."""
    i, j = np.triu_indices(len(reference), k=1)
    return float(np.mean(np.sign(reference[i] - reference[j]) == np.sign(candidate[i] - candidate[j])))
