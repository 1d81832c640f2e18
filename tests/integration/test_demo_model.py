"""The embedded default model: built once into the default store, accurate, served by default."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from model_store.demo.build import DEMO_MODEL, build_demo
from model_store.store import ModelStore
from service.settings import Settings
from tests.integration.server import running_server


@pytest.fixture(scope="module")
def default_store() -> ModelStore:
    """The store `rmserve serve` uses by default; the README's test command builds the demo first."""
    store = ModelStore(Settings(_cli_parse_args=[]).store)
    build_demo(store, progress=False)  # a no-op when it is already there
    return store


def test_demo_model_is_intact_and_accurate_on_held_out_pairs(default_store: ModelStore) -> None:
    stored = default_store.get(DEMO_MODEL)
    default_store.verify(stored)
    assert stored.manifest.architecture == "BertForSequenceClassification"
    assert stored.manifest.evaluation["heldout_pairwise_accuracy"] >= 0.95


def test_serve_without_model_serves_the_demo_and_prefers_helpful_answers(
    default_store: ModelStore,
) -> None:
    with running_server([], store=default_store.root) as url:
        cards = httpx.get(f"{url}/v1/models").json()["models"]
        assert [c["name"] for c in cards] == [DEMO_MODEL]
        ranked = httpx.post(f"{url}/v1/rank", timeout=30, json={
            "prompt": "How do I boil an egg?",
            "responses": [
                "Whatever. Figure it out yourself.",
                "Place the egg in boiling water for about nine minutes, then cool it in cold "
                "water before peeling.",
                "The capital of Australia is Canberra.",
            ],
        }).json()
        assert ranked["best"] == 1


def _rmserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_models_cli_lists_shows_and_imports(default_store: ModelStore, tmp_path, tiny_model_dirs) -> None:
    listed = _rmserve("models", "--store", str(default_store.root), "list")
    assert listed.returncode == 0 and DEMO_MODEL in listed.stdout
    shown = json.loads(_rmserve("models", "--store", str(default_store.root), "show", DEMO_MODEL).stdout)
    assert shown["name"] == DEMO_MODEL and shown["files"]

    store = str(tmp_path / "store")
    imported = _rmserve("models", "--store", store, "import", str(tiny_model_dirs["gpt2-left"]),
                        "--name", "tiny")
    assert imported.returncode == 0, imported.stderr
    assert "tiny:v1" in imported.stdout
    missing = _rmserve("models", "--store", store, "show", "absent")
    assert missing.returncode == 1 and "no model named 'absent'" in missing.stderr
    with running_server(["--model", "tiny:v1"], store=tmp_path / "store") as url:
        assert httpx.get(f"{url}/v1/models").json()["models"][0]["version"] == "v1"


def test_serve_refuses_a_tampered_store_model(tmp_path, tiny_model_dirs) -> None:
    store = ModelStore(tmp_path / "store")
    stored = store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")
    (stored.path / "model.safetensors").write_bytes(b"tampered")
    result = _rmserve("serve", "--store", str(store.root), "--model", "rm", "--port", "0")
    assert result.returncode != 0
    assert "failed its checksum" in result.stderr
