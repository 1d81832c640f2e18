"""ONNX export into the store: parity with PyTorch, the manifest record, and refusals."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.manifest import Manifest, sha256_of
from model_store.onnx_export import FP32_TOLERANCE, ExportError, export_onnx, ranking_agreement
from model_store.store import ModelStore, ModelStoreError
from service.loading import locate_model
from tests.conftest import ONNX_MODELS


def _copy_store(onnx_store: Path, tmp_path: Path) -> ModelStore:
    shutil.copytree(onnx_store, tmp_path / "store")
    return ModelStore(tmp_path / "store")


# fp32 ONNX against torch: far below a thousandth of the spread of the checked rewards.
RELATIVE_TOLERANCE = 1e-3
WORDS = ("hello world question answer reward model prompt response good bad helpful python cook pasta "
         "travel paris explain why because code sorry cannot help the a of to in and is it you").split()


def tokenized_rows(tokenizer: Any, *, pairs: bool) -> list[dict[str, list[int]]]:
    """Real tokenizer encodings from one token to the model's limit (text pairs for an encoder, so
    token_type_ids take both values)."""
    rng = random.Random(0)
    rows = []
    for words in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 150):
        text = [rng.choice(WORDS) for _ in range(words)]
        half = max(1, words // 2)
        second = (" ".join(text[half:]) or "why",) if pairs else ()
        rows.append(dict(tokenizer(" ".join(text[:half] if pairs else text), *second, truncation=True)))
    assert max(len(row["input_ids"]) for row in rows) == tokenizer.model_max_length
    return rows


def onnx_feeds(rows: list[dict[str, list[int]]], names: list[str]) -> dict[str, np.ndarray]:
    """The graph's contract: rows padded on the right, positions counted from 0."""
    width = max(len(row["input_ids"]) for row in rows)
    feeds = {name: np.zeros((len(rows), width), dtype=np.int64) for name in names}
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        feeds["input_ids"][i, :n] = row["input_ids"]
        feeds["attention_mask"][i, :n] = 1
        if "token_type_ids" in feeds:
            feeds["token_type_ids"][i, :n] = row["token_type_ids"]
        if "position_ids" in feeds:
            feeds["position_ids"][i] = np.arange(width)
    return feeds


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_export_matches_pytorch_and_is_recorded_with_its_checksum(name: str, onnx_store: Path) -> None:
    """Parity measured here, on inputs of this test: ONNX Runtime on one right-padded batch and on
    each row alone, against the PyTorch model's unbatched `model(**inputs).logits`."""
    import onnxruntime
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    stored = ModelStore(onnx_store).get(name)
    export = stored.manifest.onnx
    assert export is not None and export.file == "onnx/model.onnx" and export.dtype == "float32"
    assert export.parity["inputs"] == 24 and export.parity["max_abs_diff"] <= FP32_TOLERANCE
    assert stored.manifest.files["onnx/model.onnx"] == sha256_of(stored.path / "onnx/model.onnx")
    assert stored.manifest.preferred_backend == "torch"
    assert not [p for p in stored.path.iterdir() if p.name.startswith(".")]

    model = AutoModelForSequenceClassification.from_pretrained(stored.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(stored.path)
    session = onnxruntime.InferenceSession(str(stored.path / export.file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    rows = tokenized_rows(tokenizer, pairs="token_type_ids" in names)
    with torch.inference_mode():
        reference = np.array([
            model(**{k: torch.tensor([row[k]]) for k in row if k in names}).logits[0, 0].item()
            for row in rows
        ])
    batched = session.run(["rewards"], onnx_feeds(rows, names))[0]
    alone = np.array([session.run(["rewards"], onnx_feeds([row], names))[0][0] for row in rows])
    assert batched.shape == alone.shape == reference.shape == (len(rows),)
    # The tiny BERT's rewards all lie within about 1e-4 of each other, as wide as FP32_TOLERANCE: a
    # constant would pass that bound, so errors are also bounded relative to the rewards' spread.
    spread = np.ptp(reference)
    assert spread > 0, reference
    for rewards, how in ((alone, "alone"), (batched, "batched")):
        worst = np.abs(rewards - reference).max()
        assert worst <= FP32_TOLERANCE, f"{how}: max |ONNX - torch| = {worst:.3g}"
        assert worst <= RELATIVE_TOLERANCE * spread, (
            f"{how}: max |ONNX - torch| = {worst:.3g} is {worst / spread:.3g} of the rewards' spread "
            f"{spread:.3g} (allowed {RELATIVE_TOLERANCE:g})")


def test_graph_inputs_follow_the_architecture(onnx_store: Path) -> None:
    import onnxruntime

    def inputs(name: str) -> list[str]:
        session = onnxruntime.InferenceSession(str(onnx_store / name / "v1/onnx/model.onnx"))
        return [i.name for i in session.get_inputs()]

    assert inputs("bert") == ["input_ids", "attention_mask", "token_type_ids"]
    assert inputs("llama") == ["input_ids", "attention_mask", "position_ids"]


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_optimized_and_fp16_exports(name: str, onnx_store: Path, tmp_path: Path) -> None:
    store = _copy_store(onnx_store, tmp_path)
    stored, report = export_onnx(store, name, optimize=True)
    assert stored.manifest.onnx.optimized and report.max_abs_diff <= FP32_TOLERANCE
    stored, report = export_onnx(store, name, fp16=True, prefer=True)
    assert stored.manifest.onnx.dtype == "float16" and stored.manifest.preferred_backend == "onnx"
    # Half precision is judged by ranking; its error is reported, not bounded by 1e-4.
    assert report.ranking_agreement >= 0.95 and 0 < report.max_abs_diff < 0.05
    assert stored.manifest.onnx.parity == report.as_dict()


def test_a_failed_parity_check_leaves_the_store_unchanged(onnx_store: Path, tmp_path: Path) -> None:
    store = _copy_store(onnx_store, tmp_path)
    folder = store.get("gpt2").path
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(ExportError, match=r"max \|Δ\| .* is [0-9.e-]+ \(allowed 1e-12, .* times over\)"):
        export_onnx(store, "gpt2", optimize=True, tolerance=1e-12)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_bad_requests_are_refused_with_what_to_do(onnx_store: Path, tmp_path: Path) -> None:
    store = _copy_store(onnx_store, tmp_path)
    with pytest.raises(ExportError, match="opset 25 is not supported: use 14 to 20"):
        export_onnx(store, "bert", opset=25)
    with pytest.raises(ModelStoreError, match="no model named 'nope'"):
        export_onnx(store, "nope")
    store.publish(store.get("bert").path, name="plain", source="test")
    manifest = Manifest.read(store.get("plain").path)
    assert manifest.onnx is None  # a copied version does not inherit the export record
    with pytest.raises(ModelStoreError, match=r"no ONNX export .*: run `rmserve models export-onnx plain`"):
        locate_model("plain", store, "onnx")


def test_a_tampered_onnx_file_is_refused_at_load(onnx_store: Path, tmp_path: Path) -> None:
    store = _copy_store(onnx_store, tmp_path)
    graph = store.get("llama").path / "onnx/model.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match=r"onnx/model\.onnx was modified"):
        locate_model("llama", store, "onnx")


def test_ranking_agreement_counts_pairs_ordered_alike() -> None:
    reference = np.array([0.0, 1.0, 2.0, 3.0])
    assert ranking_agreement(reference, reference * 10) == 1.0
    assert ranking_agreement(reference, np.array([1.0, 0.0, 2.0, 3.0])) == pytest.approx(5 / 6)


def test_manifest_json_names_the_export(onnx_store: Path) -> None:
    raw = json.loads((onnx_store / "bert/v1/manifest.json").read_text())
    assert raw["onnx"]["opset"] == 17 and raw["preferred_backend"] == "torch"
