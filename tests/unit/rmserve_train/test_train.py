"""`rmserve train`: Bradley-Terry training on tiny models learns a generated preference, sees the
tokens the server will see, and publishes a loadable version with its results in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_store.store import ModelStore
from rmserve_train.encoding import PreferenceCollator, encode_pairs, training_pad_id
from rmserve_train.evaluate import evaluate_pairs
from rmserve_train.scorers import InProcessRewards
from rmserve_train.train import TrainOptions, load_reward_model, train_reward_model
from service.cli import main
from service.loading import load_tokenizer
from service.scoring.formatting import InputFormatter
from tests.fixtures.preferences import polite_pairs, write_pairs

# Tiny random models learn fast at a high rate: 32 steps of 16 pairs.
OPTIONS = TrainOptions(epochs=2, learning_rate=3e-3, batch_pairs=16, device="cpu", progress=False)
HELD_OUT = polite_pairs(100, seed=1, held_out=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("store"))


# bert: text pairs with token types; llama: a chat template, and pad = EOS
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_training_learns_the_preference_and_publishes_a_loadable_version(
    family: str, tiny_model_dirs: dict[str, Path], store: ModelStore
) -> None:
    base = tiny_model_dirs[f"{family}-right"]
    before = evaluate_pairs(InProcessRewards.open(str(base), store, device="cpu"), HELD_OUT).report
    result = train_reward_model(store, base=str(base), name=f"polite-{family}",
                                train_pairs=polite_pairs(256, seed=0), heldout_pairs=HELD_OUT,
                                data="generated", heldout_data="generated, held out", options=OPTIONS)
    after = result.heldout.report
    assert after.accuracy >= 0.9, f"held-out accuracy {before.accuracy:.2f} -> {after.accuracy:.2f}"
    assert after.mean_margin > 0.5
    assert result.training["steps"] == 32

    # The published version loads (checksums verified) and scores as its manifest says.
    manifest = store.get(f"polite-{family}").manifest
    assert manifest.ref == f"polite-{family}:v1" and manifest.max_length == 96
    reloaded = evaluate_pairs(InProcessRewards.open(manifest.ref, store, device="cpu"), HELD_OUT)
    assert reloaded.report.accuracy == manifest.evaluation["heldout"]["accuracy"] == after.accuracy
    assert reloaded.chosen == pytest.approx(result.heldout.chosen, abs=1e-5)
    assert manifest.evaluation["heldout"]["pairs"] == 100
    assert manifest.evaluation["training"]["train_pairs"] == 256
    # Normalisation statistics over the held-out rewards (both sides).
    rewards = torch.tensor(reloaded.chosen + reloaded.rejected, dtype=torch.float64)
    assert manifest.normalization is not None and manifest.normalization.count == 200
    assert manifest.normalization.mean == pytest.approx(float(rewards.mean()), abs=1e-5)
    assert manifest.normalization.std == pytest.approx(float(rewards.std(correction=0)), abs=1e-5)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_training_reads_rewards_where_the_server_does(family: str, tiny_model_dirs: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The training batch's forward pass gives the server's rewards for the same inputs."""
    folder = tiny_model_dirs[f"{family}-left"]
    tokenizer = load_tokenizer(folder)
    pairs = polite_pairs(6, seed=2)
    encoded = encode_pairs(InputFormatter(tokenizer, 96), pairs)
    model = load_reward_model(str(folder)).eval()
    vocab_size = model.get_input_embeddings().num_embeddings
    pad_id = training_pad_id(tokenizer.pad_token_id, encoded.dataset, vocab_size)
    # Llama's template ends each turn with EOS, which is also its pad token: padding must differ.
    assert (pad_id != tokenizer.pad_token_id) == (family == "llama")
    batch = PreferenceCollator(pad_id)([encoded.dataset[i] for i in range(len(pairs))])
    assert ("token_type_ids" in batch) == (family == "bert")
    model.config.pad_token_id = pad_id
    with torch.inference_mode():
        trained_on = model(**batch).logits[:, 0].tolist()
    served = InProcessRewards.open(str(folder), ModelStore(tmp_path), device="cpu").score(
        [p.chosen for p in pairs] + [p.rejected for p in pairs])
    assert trained_on == pytest.approx(served, abs=1e-5)
    if family == "llama":  # padded with EOS, HF would read each reward one token early
        model.config.pad_token_id = tokenizer.pad_token_id
        naive = PreferenceCollator(tokenizer.pad_token_id)([encoded.dataset[i] for i in range(len(pairs))])
        with torch.inference_mode():
            assert model(**naive).logits[:, 0].tolist() != pytest.approx(served, abs=1e-3)


def test_train_command(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", polite_pairs(40, seed=0), layout="hh")
    store = tmp_path / "store"
    args = ["train", "--data", str(data), "--base", str(tiny_model_dirs["gpt2-right"]), "--name", "rm",
            "--eval-fraction", "0.25", "--epochs", "1", "--batch-pairs", "8", "--max-length", "64",
            "--device", "cpu", "--quiet", "--store", str(store)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "rm:v1" and result["heldout"]["pairs"] == 10
    assert result["training"] | {"train_pairs": 30, "steps": 4, "max_length": 64} == result["training"]
    manifest = ModelStore(store).get("rm").manifest
    assert manifest.max_length == 64 and manifest.normalization is not None
    assert manifest.source.startswith("file://")
    assert "pairs.jsonl (30 of 40 pairs)" in manifest.source
    assert manifest.evaluation["heldout"]["data"] == "pairs.jsonl (10 held out, split seed 0)"
    assert manifest.normalization.count == 20 and manifest.normalization.reference is not None
    assert manifest.normalization.reference.endswith(": pairs.jsonl (10 held out, split seed 0)")

    assert main([*args[:-2], "--store", str(store), "--max-length", "4096"]) == 1  # over the base's limit
    assert "over the base model's limit of 96" in capsys.readouterr().err
