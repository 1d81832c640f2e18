"""`--backend onnx` over the wire: the same rewards as `--backend torch` and the reference."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from model_store.onnx_export import export_onnx
from model_store.store import ModelStore
from tests.conftest import ONNX_MODELS
from tests.integration.reference import mixed_items, reference_reward, score_concurrently
from tests.integration.server import running_server

TOLERANCE = 1e-4


def _serve_args(backend: str) -> list[str]:
    models = [arg for name in ONNX_MODELS for arg in ("--model", name)]
    # A 20 ms window makes concurrent requests share mixed-length batches.
    return [*models, "--backend", backend, "--max-wait-ms", "20"]


@pytest.fixture(scope="module")
def servers(onnx_store: Path):
    with running_server(_serve_args("onnx"), store=onnx_store) as onnx_url, \
            running_server(_serve_args("torch"), store=onnx_store) as torch_url:
        yield onnx_url, torch_url


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_onnx_and_torch_servers_return_the_same_rewards(
    name: str, servers: tuple[str, str], onnx_store: Path
) -> None:
    onnx_url, torch_url = servers
    items = mixed_items(seed=11, count=40)
    from_onnx = asyncio.run(score_concurrently(onnx_url, name, items))
    from_torch = asyncio.run(score_concurrently(torch_url, name, items))
    folder = ModelStore(onnx_store).get(name).path
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, tokenizer, item) for item in items]

    assert max(abs(a - b) for a, b in zip(from_onnx, from_torch, strict=True)) <= TOLERANCE
    assert max(abs(a - b) for a, b in zip(from_onnx, expected, strict=True)) <= TOLERANCE


def test_models_report_the_onnx_backend(servers: tuple[str, str]) -> None:
    onnx_url, torch_url = servers
    onnx_cards = httpx.get(f"{onnx_url}/v1/models").json()["models"]
    torch_cards = httpx.get(f"{torch_url}/v1/models").json()["models"]
    assert {(c["backend"], c["device"], c["dtype"]) for c in onnx_cards} == {("onnx", "cpu", "float32")}
    assert {c["backend"] for c in torch_cards} == {"torch"}


def test_auto_serves_the_backend_the_manifest_prefers(onnx_store: Path, tmp_path: Path) -> None:
    shutil.copytree(onnx_store, tmp_path / "store")
    store = ModelStore(tmp_path / "store")
    export_onnx(store, "gpt2", fp16=True, prefer=True)
    with running_server(["--model", "gpt2", "--model", "bert"], store=store.root) as url:
        cards = {c["name"]: c for c in httpx.get(f"{url}/v1/models").json()["models"]}
        rewards = httpx.post(f"{url}/v1/score", json={"model": "gpt2", "inputs": mixed_items(1, 6)}).json()
    assert (cards["gpt2"]["backend"], cards["gpt2"]["dtype"]) == ("onnx", "float16")
    assert cards["bert"]["backend"] == "torch"
    assert len(rewards["rewards"]) == 6


def _serve_exit(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--store", str(store), "--port", "0", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_serve_refuses_a_tampered_or_missing_export(onnx_store: Path, tmp_path: Path) -> None:
    shutil.copytree(onnx_store, tmp_path / "store")
    store = ModelStore(tmp_path / "store")
    graph = store.get("bert").path / "onnx/model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    tampered = _serve_exit(store.root, "--model", "bert", "--backend", "onnx")
    assert tampered.returncode == 1
    assert "onnx/model.onnx was modified after it was stored" in tampered.stderr
    store.publish(store.get("gpt2").path, name="unexported", source="test")
    missing = _serve_exit(store.root, "--model", "unexported", "--backend", "onnx")
    assert missing.returncode == 1
    assert "run `rmserve models export-onnx unexported` first" in missing.stderr


def test_onnx_batches_mix_requests(servers: tuple[str, str]) -> None:
    """The comparison above means something only if the ONNX server batches requests together:
    one-item requests sent at once must share forward passes."""

    def batches() -> tuple[float, float]:
        """(forward passes, those with one row) so far, over all models."""
        total = single = 0.0
        for line in httpx.get(f"{servers[0]}/metrics").text.splitlines():
            if line.startswith("rmserve_batch_size_count{"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("rmserve_batch_size_bucket{") and 'le="1.0"' in line:
                single += float(line.rsplit(" ", 1)[1])
        return total, single

    async def one_item_requests() -> None:
        async with httpx.AsyncClient(base_url=servers[0], timeout=60) as client:
            answers = await asyncio.gather(*(
                client.post("/v1/score", json={"model": "bert", "inputs": [item]})
                for item in mixed_items(seed=12, count=24)
            ))
        assert {a.status_code for a in answers} == {200}

    total_before, single_before = batches()
    asyncio.run(one_item_requests())
    total, single = batches()
    assert total - total_before < 24  # fewer forward passes than requests
    assert (total - total_before) - (single - single_before) > 0  # some held several requests
