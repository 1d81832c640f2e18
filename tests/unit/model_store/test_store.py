"""The model store: atomic publish, versions, references, and refusal of tampered models."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.store import ModelStore, ModelStoreError
from service.loading import locate_model


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_publish_writes_a_manifest_with_checksums(store: ModelStore, tiny_model_dirs) -> None:
    stored = store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")
    m = stored.manifest
    assert (m.name, m.version, m.architecture) == ("rm", "v1", "BertForSequenceClassification")
    assert m.max_length == 96 and m.dtype == "float32"
    assert "model.safetensors" in m.files and all(len(h) == 64 for h in m.files.values())
    assert not any(p.name.startswith(".") for p in stored.path.parent.iterdir())


def test_versions_increase_and_references_resolve(store: ModelStore, tiny_model_dirs) -> None:
    store.publish(tiny_model_dirs["bert-right"], name="rm", source="a")
    store.publish(tiny_model_dirs["gpt2-left"], name="rm", source="b")
    store.publish(tiny_model_dirs["gpt2-left"], name="rm", version="exp", source="c")
    assert store.versions("rm") == ["exp", "v1", "v2"]
    assert store.get("rm").manifest.version == "v2"
    assert store.get("rm:v1").manifest.source == "a"
    with pytest.raises(ModelStoreError, match="no version 'v9'"):
        store.get("rm:v9")
    with pytest.raises(ModelStoreError, match="no model named 'other'"):
        store.get("other")
    with pytest.raises(ModelStoreError, match="already exists"):
        store.publish(tiny_model_dirs["bert-right"], name="rm", version="v1", source="d")


def test_tampered_model_is_refused(store: ModelStore, tiny_model_dirs) -> None:
    stored = store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")
    with (stored.path / "config.json").open("a") as f:
        f.write(" ")
    with pytest.raises(ModelStoreError, match=r"config\.json was modified"):
        locate_model("rm", store)


def test_incomplete_model_is_refused(store: ModelStore, tiny_model_dirs) -> None:
    stored = store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")
    (stored.path / "model.safetensors").unlink()
    with pytest.raises(ModelStoreError, match=r"incomplete: model\.safetensors is missing"):
        locate_model("rm:v1", store)


def test_a_folder_that_is_not_a_model_is_refused(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match=r"no config\.json"):
        store.publish(tmp_path, name="rm", source="test")
