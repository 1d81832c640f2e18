"""PyTorch backend: a Hugging Face *ForSequenceClassification model with one scalar head."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from service.backends.base import BackendInfo, EncodedPair
from service.backends.padding import PaddedBatch
from service.batching.policy import BatchLimits, chunk_by_length

# Prompts whose keys and values are kept for the next batch: a few, each at most max_length tokens.
_RECENT_PREFIXES = 8
# Continuations of one prompt are all known at once: cut them into chunks padded by at most 20 %.
_CONTINUATION_CHUNKS = BatchLimits(max_pairs=2**31, max_tokens=2**62, max_padding_fraction=0.2)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N'; a GPU is always named with its index ('cuda:0'), as
    the ONNX backend names it, so one GPU is one device to the executors and the metrics."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


class TorchBackend:
    """Pads a batch on the right, runs one forward pass and reads one reward per row.

    Decoders are read at each row's last real token, computed from the lengths, so a pad
    token that also occurs in the text (pad == eos) cannot move the read-out.
    """

    def __init__(
        self, model: torch.nn.Module, *, pad_token_id: int, device: torch.device, prefix_sharing: bool = True
    ) -> None:
        self._model = model
        self._pad_token_id = pad_token_id
        self._device = device
        # Decoder heads (GPT-2, Llama, Qwen, Mistral...) are a `score` layer over a base model.
        self._last_token_head: torch.nn.Module | None = getattr(model, "score", None)
        dtype = next(model.parameters()).dtype
        self._recent_prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._recent_lock = threading.Lock()  # forward workers may share this backend
        self.info = BackendInfo(
            "torch", str(device), str(dtype).removeprefix("torch."),
            shares_prefixes=self._last_token_head is not None and prefix_sharing,
        )

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        pad_token_id: int,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        prefix_sharing: bool = True,
        threads: int = 0,
    ) -> TorchBackend:
        if threads:  # 0: torch's default, one per core
            torch.set_num_threads(threads)
        torch_device = resolve_device(device)
        if torch_device.type == "cuda":
            # cuDNN's attention builds a new graph for every (batch, length) shape it meets, about
            # 4 ms per layer on an H100; with a server's ever-changing shapes that dominates. The
            # flash and memory-efficient kernels have no such per-shape cost.
            torch.backends.cuda.enable_cudnn_sdp(False)
        options = {"dtype": resolve_dtype(dtype, torch_device), "trust_remote_code": trust_remote_code}
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, attn_implementation="sdpa", **options
            )
        except ValueError:  # this architecture has no SDPA attention: use its default
            model = AutoModelForSequenceClassification.from_pretrained(folder, **options)
        if model.config.num_labels != 1:
            raise ValueError(
                f"{folder} has {model.config.num_labels} labels; a reward model has one scalar head"
            )
        model.config.pad_token_id = pad_token_id
        return cls(model.to(torch_device).eval(), pad_token_id=pad_token_id, device=torch_device,
                   prefix_sharing=prefix_sharing)

    def score(self, batch: Sequence[EncodedPair]) -> list[float]:
        if not self.info.shares_prefixes or not any(row.shared_prefix for row in batch):
            return self._score_rows(batch)
        # Rows that share a prefix are computed as continuations of it, one group at a time (a
        # group's rows may come in several batches: its prefix is computed once, then kept); the
        # others in one ordinary pass. Batches were budgeted by exactly these continuations.
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, row in enumerate(batch):
            groups.setdefault(row.input_ids[: row.shared_prefix], []).append(index)
        alone = groups.pop((), [])
        rewards = [0.0] * len(batch)
        if alone:
            for index, reward in zip(alone, self._score_rows([batch[i] for i in alone]), strict=True):
                rewards[index] = reward
        for prefix, rows in groups.items():
            computed = self._score_after_prefix(prefix, [batch[i] for i in rows])
            for index, reward in zip(rows, computed, strict=True):
                rewards[index] = reward
        return rewards

    def _score_after_prefix(self, prefix: tuple[int, ...], rows: Sequence[EncodedPair]) -> list[float]:
        """The prefix once (its keys and values cached), then every row's own tokens after it:
        the same attention, positions and read-out as the full rows, a fraction of the work.
        Rows go in chunks of similar length, so the continuations carry little padding."""
        base = getattr(self._model, self._model.base_model_prefix)
        with torch.inference_mode():
            cache = self._prefix_cache(base, prefix)
            rewards = [0.0] * len(rows)
            for chunk in chunk_by_length([row.own_length for row in rows], _CONTINUATION_CHUNKS):
                computed = self._continue(base, copy.deepcopy(cache), len(prefix), [rows[i] for i in chunk])
                for index, reward in zip(chunk, computed, strict=True):
                    rewards[index] = reward
        return rewards

    def _prefix_cache(self, base: torch.nn.Module, prefix: tuple[int, ...]) -> Any:
        """The prefix's keys and values, computed once: a big group's rows may come in more than
        one batch, and the same prompt back in the next request (not to be modified)."""
        with self._recent_lock:
            cache = self._recent_prefixes.get(prefix)
            if cache is not None:
                self._recent_prefixes.move_to_end(prefix)
                return cache
        cache = base(input_ids=torch.tensor([prefix], device=self._device), use_cache=True).past_key_values
        with self._recent_lock:
            self._recent_prefixes[prefix] = cache
            while len(self._recent_prefixes) > _RECENT_PREFIXES:
                self._recent_prefixes.popitem(last=False)
        return cache

    def _continue(
        self, base: torch.nn.Module, cache: Any, shared: int, rows: Sequence[EncodedPair]
    ) -> list[float]:
        """Rows' own tokens after a cached prefix of `shared` tokens (one copy per row)."""
        padded = PaddedBatch.of([EncodedPair(row.input_ids[shared:]) for row in rows], self._pad_token_id)
        n, width = padded.input_ids.shape
        device = self._device
        cache.batch_repeat_interleave(n)
        mask = torch.from_numpy(padded.attention_mask).to(device)
        hidden = base(
            input_ids=torch.from_numpy(padded.input_ids).to(device),
            attention_mask=torch.cat([mask.new_ones(n, shared), mask], dim=1),
            position_ids=torch.arange(shared, shared + width, device=device).expand(n, width),
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        lengths = torch.from_numpy(padded.lengths).to(device)
        last = hidden[torch.arange(n, device=device), lengths - 1]
        return self._last_token_head(last)[:, 0].float().cpu().tolist()

    def _score_rows(self, batch: Sequence[EncodedPair]) -> list[float]:
        padded = PaddedBatch.of(batch, self._pad_token_id)
        arrays = {"input_ids": padded.input_ids, "attention_mask": padded.attention_mask}
        if padded.token_type_ids is not None:
            arrays["token_type_ids"] = padded.token_type_ids
        inputs = {k: torch.from_numpy(v).to(self._device, non_blocking=True) for k, v in arrays.items()}
        lengths = torch.from_numpy(padded.lengths).to(self._device, non_blocking=True)
        with torch.inference_mode():
            rewards = self._forward(inputs, lengths)
        return rewards.float().cpu().tolist()

    def _forward(self, inputs: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        if self._last_token_head is None:
            return self._model(**inputs).logits[:, 0]
        base = getattr(self._model, self._model.base_model_prefix)
        hidden = base(**inputs, use_cache=False).last_hidden_state
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        return self._last_token_head(last)[:, 0]
