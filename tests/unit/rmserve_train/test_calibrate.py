"""`rmserve models calibrate`: the stored mean and std normalise the reference rewards to 0 and 1."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from model_store.store import ModelStore
from rmserve_train.calibrate import reward_normalization
from rmserve_train.pairs import read_reference_items
from rmserve_train.scorers import InProcessRewards
from service.cli import main
from tests.fixtures.preferences import polite_pairs, write_pairs


@pytest.mark.parametrize("family", ["bert-right", "llama-left"])
def test_normalised_reference_rewards_have_mean_0_and_std_1(
    family: str, tiny_model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path / "store")
    store.publish(tiny_model_dirs[family], name="rm", source="test")
    reference = write_pairs(tmp_path / "reference.jsonl", polite_pairs(40, seed=7))
    items_file = tmp_path / "items.jsonl"
    items_file.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n"
                          + json.dumps({"text": "raw text"}) + "\n")

    for data in (reference, items_file):
        assert main(["models", "--store", str(store.root), "calibrate", "rm", "--data", str(data),
                     "--device", "cpu"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        stored = store.get("rm").manifest.normalization
        assert stored is not None and printed["normalization"] == stored.model_dump()
        # Score the reference set again, from scratch, and normalise with what was stored.
        items = read_reference_items(data)
        rewards = InProcessRewards.open("rm", store, device="cpu").score(items)
        normalised = [(r - stored.mean) / stored.std for r in rewards]
        assert stored.count == len(items) == (80 if data == reference else 2)
        assert statistics.fmean(normalised) == pytest.approx(0, abs=1e-6)
        assert statistics.pstdev(normalised) == pytest.approx(1, abs=1e-6)


def test_identical_rewards_cannot_be_normalised() -> None:
    with pytest.raises(ValueError, match="no spread"):
        reward_normalization([0.5, 0.5, 0.5], reference="x")
    with pytest.raises(ValueError, match="at least two"):
        reward_normalization([0.5], reference="x")
