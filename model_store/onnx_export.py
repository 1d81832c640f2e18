"""Export a stored reward model to ONNX, check it against PyTorch, and register it in the store.

The graph's contract, which the ONNX backend follows: rows are padded on the right;
inputs are input_ids and attention_mask, plus token_type_ids (encoders that take them) or
position_ids (decoders); the output `rewards` holds one float per row, read for decoders at
each row's last unmasked position.
"""

from __future__ import annotations

import inspect
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model_store.manifest import OnnxExport
from model_store.onnx_parity import (
    FP16_MIN_RANKING_AGREEMENT,
    FP32_TOLERANCE,
    PARITY_INPUTS,
    ParityReport,
    check_parity,
    ranking_agreement,
)
from model_store.store import ModelStore, ModelStoreError, StoredModel

# Also importable from here: the parity check's figures, which tests and tools read with the export.
__all__ = ["FP32_TOLERANCE", "ExportError", "ParityReport", "export_onnx", "ranking_agreement"]

GRAPH_FILE = "onnx/model.onnx"
DEFAULT_OPSET = 17
OPSETS = range(14, 21)  # what the TorchScript exporter writes and ONNX Runtime's fusions know
# Protobuf cannot hold more than 2 GiB: larger graphs keep their weights in model.onnx.data.
_EXTERNAL_DATA_BYTES = 1 << 30

Progress = Callable[[str], None]


class ExportError(ModelStoreError):
    """An export that could not be made, or that does not compute what the PyTorch model does."""


def import_onnx_tools() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or a one-line error naming the extra that provides them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the onnx extra ({exc.name} is missing): pip install 'rmserve[onnx]'"
        ) from exc
    return onnx, onnxruntime


class RewardGraph(torch.nn.Module):
    """What the ONNX file computes: one reward per row of a right-padded batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        # Decoder heads (GPT-2, Llama, Qwen...) are a `score` layer over a base model.
        self.last_token_head: torch.nn.Module | None = getattr(model, "score", None)

    def input_names(self) -> list[str]:
        if self.last_token_head is not None:
            return ["input_ids", "attention_mask", "position_ids"]
        accepted = inspect.signature(self.model.forward).parameters
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in accepted else [])

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.last_token_head is None:
            extras = {"token_type_ids": extra} if extra is not None else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extras).logits[:, 0]
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=extra, use_cache=False
        ).last_hidden_state
        last = attention_mask.sum(dim=-1) - 1
        return self.last_token_head(hidden[torch.arange(hidden.shape[0]), last])[:, 0]


def export_onnx(
    store: ModelStore,
    ref: str,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    optimize: bool = False,
    prefer: bool = False,
    tolerance: float = FP32_TOLERANCE,
    progress: Progress = lambda message: None,
) -> tuple[StoredModel, ParityReport]:
    """Export NAME[:VERSION] to onnx/model.onnx, check parity and record it in the manifest.

    Everything is built in a staging folder; a failed export or parity check leaves the
    store exactly as it was.
    """
    onnx, _ = import_onnx_tools()
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported: use {OPSETS.start} to {OPSETS.stop - 1}")
    stored = store.get(ref)
    store.verify(stored)
    staging = store.staging_folder(stored)
    try:
        model, graph = _load_graph(stored, progress)
        graph_file = _build_graph(model, graph, staging, opset=opset, optimize=optimize, fp16=fp16,
                                  progress=progress)
        progress(f"checking parity with PyTorch on {PARITY_INPUTS} mixed-length inputs")
        report = check_parity(model, graph.input_names(), graph_file, import_onnx_tools()[1],
                              max_length=stored.manifest.max_length)
        _require_parity(report, fp16=fp16, tolerance=tolerance)
        export = OnnxExport(
            file=GRAPH_FILE, opset=opset, dtype="float16" if fp16 else "float32", optimized=optimize,
            parity=report.as_dict(), exporter=f"torch {torch.__version__}, onnx {onnx.__version__}",
        )
        changes: dict[str, Any] = {"onnx": export}
        if prefer:
            changes["preferred_backend"] = "onnx"
        progress(f"registering {GRAPH_FILE} in {stored.manifest.ref}")
        return store.add_folder(stored, "onnx", staging / "onnx", **changes), report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_graph(stored: StoredModel, progress: Progress) -> tuple[Any, RewardGraph]:
    progress(f"loading {stored.manifest.ref} from {stored.path}")
    from transformers import AutoModelForSequenceClassification

    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime fuses into its
    # own Attention kernels; the SDPA export is not recognised by those fusions.
    model = AutoModelForSequenceClassification.from_pretrained(
        stored.path, attn_implementation="eager", dtype=torch.float32
    ).eval()
    return model, RewardGraph(model).eval()


def _build_graph(
    model: Any, graph: RewardGraph, staging: Path, *, opset: int, optimize: bool, fp16: bool,
    progress: Progress,
) -> Path:
    """Trace the graph into the staging folder, then optimise or halve it: onnx/model.onnx there."""
    progress(f"exporting the graph (opset {opset})")
    _trace(graph, staging / "raw" / "model.onnx", opset)
    graph_file = staging / "onnx" / "model.onnx"
    if optimize or fp16:
        progress("optimizing (ONNX Runtime fusions)" if optimize else "converting to float16")
    _transform(
        staging / "raw" / "model.onnx", graph_file, model.config,
        decoder=graph.last_token_head is not None, optimize=optimize, fp16=fp16,
    )
    shutil.rmtree(staging / "raw")
    return graph_file


def _trace(graph: RewardGraph, path: Path, opset: int) -> None:
    path.parent.mkdir(parents=True)
    names = graph.input_names()
    example = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    extra = torch.zeros_like(example) if len(names) == 3 else None
    if "position_ids" in names:
        extra = torch.arange(example.shape[1]).expand_as(example)
    args = (example, mask) if extra is None else (example, mask, extra)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"rewards": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter is deprecated, but ONNX Runtime's fusions match its graphs,
        # which makes them faster to run than the torch.export ones (benchmarks/RESULTS.md).
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph, args, str(path), input_names=names, output_names=["rewards"],
                dynamic_axes=axes, opset_version=opset, dynamo=False,
            )
        except Exception as exc:  # the exporter raises many types; all mean "cannot export this"
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc


def _transform(raw: Path, out: Path, config: Any, *, decoder: bool, optimize: bool, fp16: bool) -> None:
    """Optionally fuse and halve the raw export, then save it (weights outside if large)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxruntime.transformers.optimizer import optimize_model

    out.parent.mkdir(parents=True)
    if optimize:
        model = optimize_model(
            str(raw), model_type="gpt2" if decoder else "bert",
            num_heads=getattr(config, "num_attention_heads", 0) or 0,
            hidden_size=getattr(config, "hidden_size", 0) or 0,
        )
    else:
        model = OnnxModel(onnx.load(str(raw)))
    if fp16:
        model.convert_float_to_float16(keep_io_types=True)
    # Inputs and outputs stay int64 and float32 either way: say what the weights are.
    onnx.helper.set_model_props(model.model, {"dtype": "float16" if fp16 else "float32"})
    weights_bytes = sum(t.ByteSize() for t in model.model.graph.initializer)
    model.save_model_to_file(
        str(out), use_external_data_format=weights_bytes > _EXTERNAL_DATA_BYTES, all_tensors_to_one_file=True
    )


def timed_progress(write: Callable[[str], Any]) -> Progress:
    """A progress callback that prefixes each step with the seconds since it was made."""
    start = time.monotonic()
    return lambda message: write(f"[{time.monotonic() - start:6.1f}s] {message}")


def _require_parity(report: ParityReport, *, fp16: bool, tolerance: float) -> None:
    if fp16:
        if report.ranking_agreement < FP16_MIN_RANKING_AGREEMENT:
            raise ExportError(
                f"fp16 parity check failed: the export orders {report.ranking_agreement:.1%} of input "
                f"pairs as PyTorch does (needs {FP16_MIN_RANKING_AGREEMENT:.0%}; max |Δ| = "
                f"{report.max_abs_diff:.3g}); the store is unchanged — export without --fp16"
            )
        return
    if not report.max_abs_diff <= tolerance:
        raise ExportError(
            f"parity check failed: max |Δ| between ONNX and PyTorch rewards is {report.max_abs_diff:.3g} "
            f"(allowed {tolerance:g}, {report.max_abs_diff / tolerance:.3g} times over) on {report.inputs} "
            "inputs; the store is unchanged"
        )

