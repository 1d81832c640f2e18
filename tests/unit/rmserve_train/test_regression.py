"""`rmserve train --objective regression` and `rmserve eval` on rated inputs: a tiny model learns
generated ratings (held-out correlation far above the untrained model's), the metrics equal a
hand computation, and both commands print and record them."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from model_store.store import ModelStore
from rmserve_train.evaluate import evaluate_rated
from rmserve_train.ratings import Rated, is_rated, read_rated
from rmserve_train.regression import train_regression_model
from rmserve_train.regression_report import average_ranks, regression_report
from rmserve_train.scorers import InProcessRewards
from rmserve_train.train import TrainOptions
from service.cli import main
from service.scoring.items import PromptResponse, RawText, ScoreInput
from tests.fixtures.preferences import POLITE, RUDE

OPTIONS = TrainOptions(epochs=4, learning_rate=5e-3, batch_pairs=16, device="cpu", progress=False)
_WORDS = "cook pasta travel paris python code water time people number sound world".split()
_HELD_OUT_WORDS = "question answer function explain reward model long day first side".split()


def rated_items(n: int, seed: int, *, held_out: bool = False) -> list[Rated]:
    """A response's score counts its polite openers and takes off its rude ones (-2 to 2), as
    a rater would; held-out items use body words never trained on."""
    rng = random.Random(f"rated/{seed}/{held_out}")
    words = _HELD_OUT_WORDS if held_out else _WORDS
    items = []
    for _ in range(n):
        polite, rude = rng.choice([(2, 0), (1, 0), (0, 0), (0, 1), (0, 2), (1, 1)])
        phrases = rng.sample(POLITE, polite) + rng.sample(RUDE, rude)
        rng.shuffle(phrases)
        body = " ".join(rng.choices(words, k=rng.randint(3, 6)))
        prompt = "how do I " + " ".join(rng.sample(words, 3)) + "?"
        items.append(Rated(PromptResponse(prompt, ", ".join([*phrases, body]) + "."), float(polite - rude)))
    return items


def write_rated(path: Path, rated: Sequence[Rated], key: str = "score") -> Path:
    with path.open("w") as f:
        for r in rated:
            assert isinstance(r.item, PromptResponse)
            f.write(json.dumps({"prompt": r.item.prompt, "response": r.item.response, key: r.score}) + "\n")
    return path


class KnownRewards:
    label = "known"

    def __init__(self, rewards: dict[str, float]) -> None:
        self.rewards = rewards

    def score(self, items: Sequence[ScoreInput]) -> list[float]:
        return [self.rewards[item.response] for item in items]  # type: ignore[union-attr]

    def close(self) -> None:
        pass


def test_metrics_equal_a_hand_computation() -> None:
    rewards = [1.0, 2.0, 2.0, 4.0, 10.0]
    scores = [1.0, 3.0, 2.0, 2.0, 5.0]
    source = KnownRewards({f"r{i}": r for i, r in enumerate(rewards)})
    rated = [Rated(PromptResponse("p", f"r{i}"), s) for i, s in enumerate(scores)]
    report = evaluate_rated(source, rated).report
    # Means 3.8 and 2.6; deviations (-2.8, -1.8, -1.8, 0.2, 6.2) and (-1.6, 0.4, -0.6, -0.6, 2.4).
    covariance = 4.48 - 0.72 + 1.08 - 0.12 + 14.88
    pearson = covariance / math.sqrt((7.84 + 3.24 + 3.24 + 0.04 + 38.44) * (2.56 + 0.16 + 0.36 + 0.36 + 5.76))
    assert report.pearson == pytest.approx(pearson)
    # Ranks with ties averaged: rewards 1, 2.5, 2.5, 4, 5; scores 1, 4, 2.5, 2.5, 5.
    assert average_ranks(rewards) == [1, 2.5, 2.5, 4, 5] and average_ranks(scores) == [1, 4, 2.5, 2.5, 5]
    d_r, d_s = [-2, -0.5, -0.5, 1, 2], [-2, 1, -0.5, -0.5, 2]
    spearman = sum(a * b for a, b in zip(d_r, d_s, strict=True)) / math.sqrt(
        sum(a * a for a in d_r) * sum(b * b for b in d_s))
    assert report.spearman == pytest.approx(spearman)
    errors = [0.0, -1.0, 0.0, 2.0, 5.0]
    assert report.mse == pytest.approx(sum(e * e for e in errors) / 5) == pytest.approx(6.0)
    assert report.mae == pytest.approx(8.0 / 5)
    assert report.items == 5
    assert (report.reward_mean, report.score_mean) == (pytest.approx(3.8), pytest.approx(2.6))
    flat = regression_report([1.0, 1.0], [0.0, 2.0])
    assert flat.pearson is None and flat.spearman is None and flat.mse == 1.0


def test_rated_files_are_read_and_told_from_pairs(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "p", "response": "a", "helpfulness": 3}\n{"text": "t", "helpfulness": 1.5}\n')
    assert read_rated(path, score_key="helpfulness") == [
        Rated(PromptResponse("p", "a"), 3.0), Rated(RawText("t"), 1.5)]
    assert is_rated(path, score_key="helpfulness") and not is_rated(path)
    path.write_text('{"prompt": "p", "response": "a", "score": true}\n')
    with pytest.raises(ValueError, match=r"r\.jsonl:1: 'score' must be a finite number"):
        read_rated(path)


def test_regression_training_learns_the_ratings(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    base = tiny_model_dirs["bert-right"]
    held_out = rated_items(120, seed=1, held_out=True)
    before = evaluate_rated(InProcessRewards.open(str(base), store, device="cpu"), held_out).report
    result = train_regression_model(store, base=str(base), name="rated", train_rated=rated_items(256, 0),
                                    heldout_rated=held_out, data="generated", heldout_data="held out",
                                    options=OPTIONS)
    after = result.heldout.report
    assert after.pearson is not None and before.pearson is not None
    assert after.pearson >= 0.8 and after.pearson > abs(before.pearson) + 0.5, (before, after)
    assert after.spearman is not None and after.spearman >= 0.75
    assert after.mse < before.mse / 2
    manifest = store.get("rated").manifest
    assert manifest.evaluation["heldout"]["pearson"] == after.pearson
    assert manifest.evaluation["training"]["objective"] == "regression"
    assert manifest.normalization is not None and manifest.normalization.count == 120
    reloaded = evaluate_rated(InProcessRewards.open("rated", store, device="cpu"), held_out)
    assert reloaded.rewards == pytest.approx(result.heldout.rewards, abs=1e-5)  # type: ignore[union-attr]


def test_train_and_eval_commands_on_rated_data(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rated(tmp_path / "rated.jsonl", rated_items(40, seed=3), key="helpfulness")
    store = tmp_path / "store"
    args = ["train", "--objective", "regression", "--score-key", "helpfulness", "--data", str(data),
            "--base", str(tiny_model_dirs["gpt2-right"]), "--name", "rm", "--eval-fraction", "0.25",
            "--batch-pairs", "8", "--max-length", "64", "--device", "cpu", "--quiet", "--store", str(store)]
    assert main(args) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["model"] == "rm:v1" and trained["heldout"]["items"] == 10
    assert trained["training"]["train_items"] == 30 and trained["training"]["steps"] == 4

    # eval tells rated data from pairs by its first line, and equals evaluate_rated
    assert main(["eval", "--model", "rm", "--data", str(data), "--score-key", "helpfulness", "--store",
                 str(store), "--device", "cpu", "--write"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert "Pearson" in err and "MSE" in err
    rated = read_rated(data, score_key="helpfulness")
    expected = evaluate_rated(InProcessRewards.open("rm", ModelStore(store), device="cpu"), rated).report
    for key in ("pearson", "spearman", "mse", "mae"):
        assert result[key] == pytest.approx(getattr(expected, key), abs=1e-4)
    assert result["items"] == 40
    recorded = ModelStore(store).get("rm").manifest.evaluation["rated"]
    assert recorded["pearson"] == pytest.approx(result["pearson"], abs=1e-4)
