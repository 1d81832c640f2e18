"""The embedded default model: built once into the default store, accurate, served by default."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from model_store.demo.build import DEMO_MODEL, build_demo
from model_store.demo.preference_data import split_pairs
from model_store.demo.training import BATCH_PAIRS, HELD_OUT_PAIRS, TRAIN_STEPS
from model_store.store import ModelStore
from service.settings import Settings
from tests.integration.server import running_server

CHUNK_ITEMS = 50  # items per request: the held-out pairs go as a few concurrent requests


@pytest.fixture(scope="module")
def default_store() -> ModelStore:
    """The store `rmserve serve` uses by default; the README's test command builds the demo first."""
    store = ModelStore(Settings(_cli_parse_args=[]).store)
    build_demo(store, progress=False)  # a no-op when it is already there
    return store


@pytest.fixture(scope="module")
def demo_url(default_store: ModelStore) -> Iterator[str]:
    """`rmserve serve` with no --model: the demo model, from the default store."""
    with running_server([], store=default_store.root) as url:
        yield url


def test_demo_model_is_intact_and_accurate_on_held_out_pairs(
    default_store: ModelStore, demo_url: str
) -> None:
    """Held-out accuracy measured here, through the server, on pairs built from parts the model
    never trained on (every fourth of the held-out pairs: a minute of CPU is too long for a test)."""
    stored = default_store.get(DEMO_MODEL)
    default_store.verify(stored)
    assert stored.manifest.architecture == "BertForSequenceClassification"
    assert stored.manifest.evaluation["heldout_pairwise_accuracy"] >= 0.95
    _, held_out = split_pairs(TRAIN_STEPS * BATCH_PAIRS, HELD_OUT_PAIRS, seed=0)
    pairs = held_out[::4]
    items = [{"prompt": p.prompt, "response": r} for p in pairs for r in (p.chosen, p.rejected)]
    chunks = [items[i : i + CHUNK_ITEMS] for i in range(0, len(items), CHUNK_ITEMS)]

    async def scored() -> list[float]:
        async with httpx.AsyncClient(base_url=demo_url, timeout=120) as client:
            answers = await asyncio.gather(*(client.post("/v1/score", json={"inputs": c}) for c in chunks))
        assert [a.status_code for a in answers] == [200] * len(chunks)
        assert not any(t for a in answers for t in a.json()["truncated"])
        return [r for a in answers for r in a.json()["rewards"]]

    rewards = asyncio.run(scored())
    assert len(rewards) == 2 * len(pairs) == 200
    wrong = [p for p, c, r in zip(pairs, rewards[0::2], rewards[1::2], strict=True) if not c > r]
    accuracy = 1 - len(wrong) / len(pairs)
    assert accuracy >= 0.95, f"held-out pairwise accuracy {accuracy:.3f}; first pair it got wrong: {wrong[0]}"


def test_serve_without_model_serves_the_demo_and_prefers_helpful_answers(demo_url: str) -> None:
    cards = httpx.get(f"{demo_url}/v1/models").json()["models"]
    assert [c["name"] for c in cards] == [DEMO_MODEL]
    ranked = httpx.post(f"{demo_url}/v1/rank", timeout=30, json={
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
