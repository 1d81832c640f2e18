"""The PyTorch and ONNX Runtime backends on CUDA: same rewards as the CPU reference.

Skipped without a CUDA device (tests/conftest.py). On a GPU machine, with the CUDA builds of torch
and ONNX Runtime (they replace the CPU ones that .ci/setup installs; onnxruntime and
onnxruntime-gpu are one Python package, so remove the first):

    .venv/bin/pip install torch==2.13.0            # PyPI's default torch wheel is the CUDA build
    .venv/bin/pip uninstall -y onnxruntime
    .venv/bin/pip install -e ".[test,gpu]"         # rmserve[gpu]: onnxruntime-gpu
    .venv/bin/python -m pytest -m gpu tests/integration/test_gpu.py

With a CUDA device present, a missing CUDA execution provider fails the ONNX test: it is a broken
GPU setup, not a reason to skip.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from model_store.onnx_export import ranking_agreement
from model_store.store import ModelStore
from tests.fixtures.tiny_models import build_tiny_bert
from tests.integration.reference import mixed_items, reference_reward, score_concurrently
from tests.integration.server import running_server

pytestmark = pytest.mark.gpu

# The served models' rewards are standardised to a spread of 1 on the test's items (see
# standardised_model), so these bounds on max |CUDA - CPU reference| are in units of that spread:
# an all-zero or constant answer is off by about 2. Half precision keeps two to three significant
# digits; on the CPU, bf16 is off by at most 0.05 and fp16 by 0.007 on these models.
TOLERANCE = {"float32": 1e-4, "bfloat16": 0.15, "float16": 0.03}
# Share of item pairs the served rewards order as the reference does (ties of both agree).
MIN_RANKING_AGREEMENT = {"float32": 0.99, "bfloat16": 0.95, "float16": 0.97}
GPU_EXTRA = "pip install 'rmserve[gpu]' (onnxruntime-gpu; uninstall the CPU onnxruntime first)"


def standardised_model(source: Path, target: Path, items: list[dict[str, Any]]) -> Path:
    """A copy of the model at `source` whose score head is rescaled (and shifted, where the head
    has a bias) so that its rewards on `items` have a standard deviation of 1: tolerances then
    compare errors with the differences between rewards, whatever the random weights give."""
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    rewards = np.array([reference_reward(model, tokenizer, item) for item in items])
    head = model.score if hasattr(model, "score") else model.classifier
    with torch.no_grad():
        head.weight /= float(rewards.std())
        if head.bias is not None:
            head.bias.sub_(float(rewards.mean())).div_(float(rewards.std()))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def agreement(served: list[float], expected: list[float]) -> tuple[float, float]:
    """(max |served - expected| in units of the expected rewards' standard deviation, share of
    pairs ordered alike)."""
    served_, expected_ = np.asarray(served, dtype=float), np.asarray(expected, dtype=float)
    assert served_.shape == expected_.shape and expected_.std() > 0
    error = float(np.abs(served_ - expected_).max() / expected_.std())
    return error, ranking_agreement(expected_, served_)


def check_agreement(served: list[float], expected: list[float], dtype: str, record: Any) -> None:
    error, ranking = agreement(served, expected)
    record("max_error_in_spreads", error)
    record("ranking_agreement", ranking)
    report = f"{dtype}: max |served - reference| = {error:.3g} spreads, ranking agreement {ranking:.3f}"
    assert error <= TOLERANCE[dtype], f"{report} (allowed {TOLERANCE[dtype]:g} spreads)"
    assert ranking >= MIN_RANKING_AGREEMENT[dtype], f"{report} (needs {MIN_RANKING_AGREEMENT[dtype]:g})"


@pytest.fixture
def varied_model_dirs(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The tiny models; the BERT one with weights drawn wide enough that its rewards differ (with
    the usual 0.02 they all lie within 1e-4 of each other, below bf16's resolution)."""
    return {"bert-right": build_tiny_bert(tmp_path / "bert-wide", initializer_range=0.2),
            "gpt2-left": tiny_model_dirs["gpt2-left"], "llama-left": tiny_model_dirs["llama-left"]}


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("name", ["bert-right", "gpt2-left", "llama-left"])
def test_cuda_rewards_match_the_cpu_reference(
    name: str, dtype: str, varied_model_dirs: dict[str, Path], tmp_path: Path,
    record_property: Any,
) -> None:
    items = mixed_items(seed=3, count=24)
    folder = standardised_model(varied_model_dirs[name], tmp_path / "standardised", items)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = [reference_reward(model, tokenizer, item) for item in items]
    assert 0.9 < np.std(expected) < 1.1  # O(1) rewards: the tolerances are in these units
    args = ["--model", str(folder), "--device", "cuda", "--dtype", dtype]
    with running_server(args, store=tmp_path / "store") as url:
        cards = httpx.get(f"{url}/v1/models").json()["models"]
        assert cards[0]["device"].startswith("cuda") and cards[0]["dtype"] == dtype
        served = httpx.post(f"{url}/v1/score", json={"inputs": items}, timeout=60).json()["rewards"]
    assert torch.allclose(torch.tensor(served), torch.tensor(expected), atol=TOLERANCE[dtype])
    check_agreement(served, expected, dtype, record_property)


def require_cuda_provider(ort: Any) -> None:
    """A CUDA device is present (else this module is skipped): ONNX Runtime must be able to use it."""
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        pytest.fail(f"a CUDA device is present but onnxruntime has no CUDAExecutionProvider ({providers}): "
                    f"{GPU_EXTRA}")


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_onnx_cuda_execution_provider_matches_the_cpu_reference(
    name: str, onnx_store: Path, record_property: Any
) -> None:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        pytest.fail(f"onnxruntime is not installed: {GPU_EXTRA} ({exc})")
    require_cuda_provider(ort)
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
    # Reported, not bounded: the tiny BERT's rewards lie within about 1e-4 of each other, and ONNX
    # Runtime's CUDA provider may use TF32, whose error is of that order for them.
    error, ranking = agreement(served, expected)
    record_property("max_error_in_spreads", error)
    record_property("ranking_agreement", ranking)


def test_metrics_report_gpu_memory_in_use(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    args = ["--model", str(tiny_model_dirs["bert-right"]), "--device", "cuda"]
    with running_server(args, store=tmp_path / "store") as url:
        text = httpx.get(f"{url}/metrics").text
    used = re.search(r'rmserve_device_memory_used_bytes\{device="cuda:0"\} (\S+)', text)
    capacity = re.search(r'rmserve_device_memory_total_bytes\{device="cuda:0"\} (\S+)', text)
    assert used and capacity and 0 < float(used[1]) < float(capacity[1])
