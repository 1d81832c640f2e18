"""Shared fixtures: tiny models with real tokenizers, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import build_tiny_bert, build_tiny_gpt2, build_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# name -> (builder, tokenizer padding side); the service must not care about the padding side.
TINY_MODELS = {
    "bert-right": (build_tiny_bert, "right"),
    "bert-left": (build_tiny_bert, "left"),
    "gpt2-left": (build_tiny_gpt2, "left"),
    "gpt2-right": (build_tiny_gpt2, "right"),
    "llama-left": (build_tiny_llama, "left"),
    "llama-right": (build_tiny_llama, "right"),
}


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        name: builder(root / name, padding_side=side)
        for name, (builder, side) in TINY_MODELS.items()
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Store names of the models exported to ONNX: one encoder, two decoders.
ONNX_MODELS = {"bert": "bert-right", "gpt2": "gpt2-left", "llama": "llama-left"}


@pytest.fixture(scope="session")
def onnx_store(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the tiny models, each with a checked fp32 ONNX export."""
    from model_store.onnx_export import export_onnx
    from model_store.store import ModelStore

    store = ModelStore(tmp_path_factory.mktemp("onnx-store"))
    for name, tiny in ONNX_MODELS.items():
        store.publish(tiny_model_dirs[tiny], name=name, source="test")
        export_onnx(store, name)
    return store.root
