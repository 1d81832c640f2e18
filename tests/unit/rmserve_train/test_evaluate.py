"""`rmserve eval`: metrics equal a hand computation, in-process scores are the server's, and the
results reach the manifest and a PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from model_store.store import ModelStore
from rmserve_train.evaluate import evaluate_pairs
from rmserve_train.pairs import Comparison, read_pairs
from rmserve_train.report import pairwise_report
from rmserve_train.scorers import InProcessRewards, ServerRewards
from service.cli import main
from service.loading import load_tokenizer
from service.scoring.items import PromptResponse, ScoreInput
from tests.fixtures.preferences import polite_pairs, write_pairs
from tests.integration.server import running_server


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class KnownRewards:
    """A reward source that looks each response up in a table."""

    label = "known"

    def __init__(self, rewards: dict[str, float]) -> None:
        self.rewards = rewards

    def score(self, items: Sequence[ScoreInput]) -> list[float]:
        return [self.rewards[item.response] for item in items]  # type: ignore[union-attr]

    def close(self) -> None:
        pass


def test_metrics_equal_a_hand_computation() -> None:
    rewards = {"c0": 2.0, "r0": 1.0, "c1": 0.0, "r1": 0.0, "c2": 1.0, "r2": 3.0, "c3": -0.5, "r3": -1.0,
               "c4": 3.0, "r4": 0.0}
    pairs = [Comparison(PromptResponse("p", f"c{i}"), PromptResponse("p", f"r{i}")) for i in range(5)]
    evaluation = evaluate_pairs(KnownRewards(rewards), pairs, bins=5)
    report = evaluation.report
    # margins 1, 0 (a tie: wrong), -2, 0.5, 3
    assert evaluation.chosen == [2.0, 0.0, 1.0, -0.5, 3.0]
    assert evaluation.rejected == [1.0, 0.0, 3.0, -1.0, 0.0]
    assert (report.pairs, report.accuracy, report.ties) == (5, 3 / 5, 1)
    assert report.mean_margin == pytest.approx(2.5 / 5)
    assert report.reward_mean == pytest.approx(8.5 / 10)
    assert report.reward_std == pytest.approx(math.sqrt(sum((r - 0.85) ** 2 for r in rewards.values()) / 10))
    # Confidence in the model's own pick, sigma(|margin|), one pair per 0.1-wide bin here.
    expected = [(0.5, 0.0), (_sigmoid(0.5), 1.0), (_sigmoid(1), 1.0), (_sigmoid(2), 0.0), (_sigmoid(3), 1.0)]
    assert [(b.low, b.high, b.pairs) for b in report.reliability] == [
        (0.5, 0.6, 1), (0.6, 0.7, 1), (0.7, 0.8, 1), (0.8, 0.9, 1), (0.9, 1.0, 1)]
    for row, (confidence, accuracy) in zip(report.reliability, expected, strict=True):
        assert (row.mean_confidence, row.accuracy) == (pytest.approx(confidence), accuracy)
    assert report.ece == pytest.approx(sum(abs(a - c) for c, a in expected) / 5)


def test_reliability_bins_average_and_leave_empty_bins_empty() -> None:
    report = pairwise_report([0.5, 1.0, -5.0], [0.0, 0.0, 0.0], bins=2)  # confidences .62, .73, .99
    low, high = report.reliability
    assert (low.low, low.high, high.low, high.high) == (0.5, 0.75, 0.75, 1.0)
    assert (low.pairs, low.accuracy) == (2, 1.0)
    assert low.mean_confidence == pytest.approx((_sigmoid(0.5) + _sigmoid(1)) / 2)
    assert (high.pairs, high.accuracy) == (1, 0.0)
    empty = pairwise_report([10.0], [0.0], bins=5).reliability[0]
    assert (empty.pairs, empty.mean_confidence, empty.accuracy) == (0, None, None)


def test_in_process_rewards_are_the_models_own(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """For an encoder without a chat template: exactly model(**tokenizer(prompt, response))."""
    folder = tiny_model_dirs["bert-right"]
    pairs = polite_pairs(12, seed=5)
    evaluation = evaluate_pairs(InProcessRewards.open(str(folder), ModelStore(tmp_path), device="cpu"), pairs)
    tokenizer = load_tokenizer(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()

    def reward(item: PromptResponse) -> float:
        with torch.inference_mode():
            return float(model(**tokenizer(item.prompt, item.response, return_tensors="pt")).logits[0, 0])

    chosen = [reward(p.chosen) for p in pairs]  # type: ignore[arg-type]
    rejected = [reward(p.rejected) for p in pairs]  # type: ignore[arg-type]
    assert evaluation.chosen == pytest.approx(chosen, abs=1e-5)
    assert evaluation.rejected == pytest.approx(rejected, abs=1e-5)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    assert evaluation.report.accuracy == sum(m > 0 for m in margins) / len(margins)
    assert evaluation.report.mean_margin == pytest.approx(sum(margins) / len(margins), abs=1e-5)


@pytest.mark.slow
def test_in_process_and_through_the_server_agree(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Plain, conversational and hh-rlhf lines, on a decoder with a chat template."""
    folder = tiny_model_dirs["llama-left"]
    files = [write_pairs(tmp_path / f"{layout}.jsonl", polite_pairs(8, 1), layout=layout)
             for layout in ("plain", "conversational", "hh")]
    pairs = [pair for file in files for pair in read_pairs(file)]
    local = evaluate_pairs(InProcessRewards.open(str(folder), ModelStore(tmp_path), device="cpu"), pairs)
    with running_server(["--model", f"llama={folder}"], store=tmp_path / "store") as url:
        remote_source = ServerRewards(url, model="llama")
        try:
            remote = evaluate_pairs(remote_source, pairs)
        finally:
            remote_source.close()
    assert remote.chosen == pytest.approx(local.chosen, abs=1e-5)
    assert remote.rejected == pytest.approx(local.rejected, abs=1e-5)
    assert remote.report.accuracy == local.report.accuracy
    # With a chat template, the three layouts of a pair render to the same text.
    assert local.chosen[:8] == local.chosen[8:16] == local.chosen[16:]


def test_eval_command_prints_plots_and_writes_the_manifest(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path / "store")
    store.publish(tiny_model_dirs["gpt2-right"], name="rm", source="test")
    data = write_pairs(tmp_path / "polite.jsonl", polite_pairs(20, 2), layout="conversational")
    plot = tmp_path / "plots" / "rm.png"
    args = ["eval", "--model", "rm", "--data", str(data), "--store", str(store.root), "--device", "cpu"]
    assert main([*args, "--plot", str(plot), "--write"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert "pairwise accuracy" in err and "reliability" in err
    assert result["model"] == "rm:v1" and result["pairs"] == 20
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = store.get("rm").manifest.evaluation["polite"]
    assert recorded["accuracy"] == result["accuracy"] and recorded["data"] == "polite.jsonl"
    assert recorded["scored_by"] == "in-process torch" and len(recorded["reliability"]) == 5

    assert main([*args, "--write", "second"]) == 0  # a second key keeps the first
    assert set(store.get("rm").manifest.evaluation) == {"polite", "second"}


def test_eval_command_reports_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"chosen": "a", "rejected": "b"}\n')
    assert main(["eval", "--model", "rm", "--data", str(data), "--store", str(tmp_path)]) == 1
    assert "bad.jsonl:1:" in capsys.readouterr().err
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert main(["eval", "--model", "nope", "--data", str(data), "--store", str(tmp_path)]) == 1
    assert "no model named 'nope'" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--write", "--store", str(tmp_path)]) == 1
    assert "--write needs --model" in capsys.readouterr().err
