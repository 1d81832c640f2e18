"""The PyTorch backend on CUDA: same rewards as the CPU reference (skipped without a GPU)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from model_store.store import ModelStore
from tests.integration.reference import mixed_items, reference_reward, score_concurrently
from tests.integration.server import running_server

pytestmark = pytest.mark.gpu

# Half precision keeps about three significant digits of these small rewards.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("name", ["bert-right", "gpt2-left", "llama-left"])
def test_cuda_rewards_match_the_cpu_reference(
    name: str, dtype: str, tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = tiny_model_dirs[name]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    items = mixed_items(seed=3, count=24)
    expected = [reference_reward(model, tokenizer, item) for item in items]
    args = ["--model", str(folder), "--device", "cuda", "--dtype", dtype]
    with running_server(args, store=tmp_path / "store") as url:
        cards = httpx.get(f"{url}/v1/models").json()["models"]
        assert cards[0]["device"].startswith("cuda") and cards[0]["dtype"] == dtype
        served = httpx.post(f"{url}/v1/score", json={"inputs": items}, timeout=60).json()["rewards"]
    assert torch.allclose(torch.tensor(served), torch.tensor(expected), atol=TOLERANCE[dtype])


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_onnx_cuda_execution_provider_matches_the_cpu_reference(name: str, onnx_store: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (pip install 'rmserve[gpu]')")
    folder = ModelStore(onnx_store).get(name).path
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    items = mixed_items(seed=5, count=24)
    expected = [reference_reward(model, tokenizer, item) for item in items]
    args = ["--model", name, "--backend", "onnx", "--device", "cuda", "--max-wait-ms", "20"]
    with running_server(args, store=onnx_store) as url:
        cards = httpx.get(f"{url}/v1/models").json()["models"]
        assert (cards[0]["backend"], cards[0]["device"]) == ("onnx", "cuda:0")
        served = asyncio.run(score_concurrently(url, name, items))
    assert torch.allclose(torch.tensor(served), torch.tensor(expected), atol=TOLERANCE["float32"])


def test_metrics_report_gpu_memory_in_use(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    args = ["--model", str(tiny_model_dirs["bert-right"]), "--device", "cuda"]
    with running_server(args, store=tmp_path / "store") as url:
        text = httpx.get(f"{url}/metrics").text
    used = re.search(r'rmserve_device_memory_used_bytes\{device="cuda:0"\} (\S+)', text)
    capacity = re.search(r'rmserve_device_memory_total_bytes\{device="cuda:0"\} (\S+)', text)
    assert used and capacity and 0 < float(used[1]) < float(capacity[1])
