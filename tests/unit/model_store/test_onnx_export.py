"""ONNX export into the store: parity with PyTorch, the manifest record, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_export_matches_pytorch_and_is_recorded_with_its_checksum(name: str, onnx_store: Path) -> None:
    stored = ModelStore(onnx_store).get(name)
    export = stored.manifest.onnx
    assert export is not None and export.file == "onnx/model.onnx" and export.dtype == "float32"
    assert export.parity["inputs"] == 24 and export.parity["max_abs_diff"] <= FP32_TOLERANCE
    assert stored.manifest.files["onnx/model.onnx"] == sha256_of(stored.path / "onnx/model.onnx")
    assert stored.manifest.preferred_backend == "torch"
    assert not [p for p in stored.path.iterdir() if p.name.startswith(".")]


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
