"""Normalised, clipped, combined and pairwise rewards over the wire, against raw rewards."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.reference import mixed_items
from tests.integration.server import metric, running_server

# OpenRLHF-style statistics in config.json, honoured as the model's normalisation.
STATISTICS = {"bert": (0.25, 2.0), "gpt2": (-0.5, 0.5)}


def with_statistics(source: Path, target: Path, mean: float, std: float) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "mean": mean, "std": std}))
    return target


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("transforms")
    bert = with_statistics(tiny_model_dirs["bert-right"], root / "bert", *STATISTICS["bert"])
    gpt2 = with_statistics(tiny_model_dirs["gpt2-left"], root / "gpt2", *STATISTICS["gpt2"])
    args = ["--model", f"bert={bert}", "--model", f"gpt2={gpt2}",
            "--model", f"llama={tiny_model_dirs['llama-left']}"]
    with running_server(args, store=root / "store") as url:
        yield url


def score(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/score", json=body, timeout=60)


ITEMS = mixed_items(seed=5, count=9)


def test_normalize_uses_the_models_statistics_and_clip_bounds_the_result(server: str) -> None:
    raw = score(server, model="bert", inputs=ITEMS).json()["rewards"]
    mean, std = STATISTICS["bert"]
    normalised = score(server, model="bert", inputs=ITEMS, normalize=True).json()["rewards"]
    assert normalised == pytest.approx([(r - mean) / std for r in raw], abs=1e-6)
    bound = sorted(abs(r) for r in normalised)[len(normalised) // 2]  # clips about half
    clipped = score(server, model="bert", inputs=ITEMS, normalize=True, clip=bound).json()["rewards"]
    assert clipped == pytest.approx([max(-bound, min(bound, r)) for r in normalised], abs=1e-6)


def test_normalize_without_statistics_says_how_to_get_them(server: str) -> None:
    response = score(server, model="llama", inputs=ITEMS, normalize=True)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "'llama' has no normalisation statistics" in message and "rmserve models calibrate" in message


def test_compare_gives_both_rewards_and_the_bradley_terry_probability(server: str) -> None:
    prompt, a, b = "How do I cook pasta?", "Boil water, add the pasta, cook ten minutes.", "No."
    raw = score(server, model="gpt2", inputs=[{"prompt": prompt, "response": r} for r in (a, b)]).json()
    def compare(first: str, second: str) -> dict:
        body = {"model": "gpt2", "prompt": prompt, "a": first, "b": second}
        return httpx.post(f"{server}/v1/compare", json=body).json()

    compared = compare(a, b)
    assert compared["rewards"] == pytest.approx(raw["rewards"], abs=1e-6)
    margin = raw["rewards"][0] - raw["rewards"][1]
    assert compared["probability_a"] == pytest.approx(1 / (1 + math.exp(-margin)), abs=1e-6)
    assert compared["preferred"] == ("a" if margin >= 0 else "b")
    swapped = compare(b, a)
    assert swapped["probability_a"] == pytest.approx(1 - compared["probability_a"], abs=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_combined_rewards_are_the_weighted_sum_of_models_served_separately(
    server: str, normalize: bool
) -> None:
    weights = {"bert": 0.7, "gpt2": 0.3}
    alone = {name: score(server, model=name, inputs=ITEMS, normalize=normalize).json()["rewards"]
             for name in weights}
    combined = score(server, inputs=ITEMS, combine=weights, normalize=normalize).json()
    assert combined["model"] == "combined"
    for name in weights:
        assert combined["components"][name] == pytest.approx(alone[name], abs=1e-6)
    expected = [0.7 * h + 0.3 * s for h, s in zip(alone["bert"], alone["gpt2"], strict=True)]
    assert combined["rewards"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"combine": {"bert": 1.0, "nope": 1.0}}, 404, "nope"),
    ({"combine": {"bert": 1.0}, "model": "bert"}, 422, "either 'model' or 'combine'"),
    ({"combine": {"bert": 1.0, "llama": 1.0}, "normalize": True}, 422, "'llama' has no normalisation"),
    ({"combine": {}}, 422, "combine"),
])
def test_bad_combinations_are_refused_clearly(server: str, body: dict, status: int, words: str) -> None:
    response = score(server, inputs=ITEMS[:2], **body)
    assert response.status_code == status and words in response.json()["error"]["message"], response.text


def test_rank_orders_by_the_models_rewards_even_when_clipped(server: str) -> None:
    body = {"model": "bert", "prompt": "How do I cook pasta?",
            "responses": ["Boil water, add pasta.", "No.", "Pasta is cooked in hot water for ten minutes."]}
    plain = httpx.post(f"{server}/v1/rank", json=body).json()
    clipped = httpx.post(f"{server}/v1/rank", json={**body, "clip": 1e-6}).json()
    assert clipped["ranking"] == plain["ranking"] and clipped["best"] == plain["best"]
    assert all(abs(r) <= 1e-6 for r in clipped["rewards"])


def test_combined_rewards_are_clipped_as_a_sum(server: str) -> None:
    """r = clip(0.7 * r_bert + 1.5 * r_gpt2): the weighted sum of each model's own rewards, then
    clipped (not the parts clipped, then summed)."""
    weights = {"bert": 0.7, "gpt2": 1.5}
    alone = {name: score(server, model=name, inputs=ITEMS).json()["rewards"] for name in weights}
    sums = [0.7 * b + 1.5 * g for b, g in zip(alone["bert"], alone["gpt2"], strict=True)]
    bound = sorted(abs(r) for r in sums)[len(sums) // 2]  # clips about half
    expected = [max(-bound, min(bound, r)) for r in sums]
    assert any(abs(r) > bound for r in sums) and any(abs(r) < bound for r in sums)

    combined = score(server, inputs=ITEMS, combine=weights, clip=bound).json()

    assert combined["rewards"] == pytest.approx(expected, abs=1e-6)
    assert all(abs(r) <= bound for r in combined["rewards"])
    unclipped = score(server, inputs=ITEMS, combine=weights).json()
    assert combined["components"] == unclipped["components"]
    assert unclipped["rewards"] == pytest.approx(sums, abs=1e-6)
    # Clipping each part first would give another answer for these rewards.
    parts_clipped = [max(-bound, min(bound, 0.7 * b)) + max(-bound, min(bound, 1.5 * g))
                     for b, g in zip(alone["bert"], alone["gpt2"], strict=True)]
    assert parts_clipped != pytest.approx(expected, abs=1e-6)


def test_normalize_without_statistics_is_refused_before_any_work(server: str) -> None:
    def items_scored() -> float:
        return metric(server, "rmserve_items_total", model="llama")

    before = items_scored()
    assert score(server, model="llama", inputs=ITEMS, normalize=True).status_code == 422
    assert httpx.post(f"{server}/v1/rank", json={"model": "llama", "prompt": "p", "responses": ["a"],
                                                 "normalize": True}).status_code == 422
    assert items_scored() == before
