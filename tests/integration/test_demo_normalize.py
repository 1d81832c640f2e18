"""The demo model answers `"normalize": true` out of the box: its build records normalisation
statistics (the mean and std of its held-out rewards) in the manifest, as `rmserve models
calibrate` would, and a store built before that gets them on the next build-demo or serve."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_store.demo import training
from model_store.demo.build import DEMO_MODEL, build_demo
from model_store.demo.preference_data import generate_pairs
from model_store.demo.training import HELD_OUT_PAIRS, DemoModel
from model_store.manifest import Normalization
from model_store.store import ModelStore
from service.settings import Settings
from tests.integration.server import running_server


@pytest.fixture(scope="module")
def demo_store() -> ModelStore:
    """The default store, with the demo model built (or given its statistics) as `serve` would."""
    store = ModelStore(Settings(_cli_parse_args=[]).store)
    build_demo(store, progress=False)
    return store


@pytest.fixture(scope="module")
def demo_url(demo_store: ModelStore) -> Iterator[str]:
    with running_server([], store=demo_store.root) as url:
        yield url


def test_the_served_demo_normalises_with_its_manifest_statistics(
    demo_store: ModelStore, demo_url: str
) -> None:
    normalization = demo_store.get(DEMO_MODEL).manifest.normalization
    assert normalization is not None and normalization.count == 2 * HELD_OUT_PAIRS
    held_out = generate_pairs(HELD_OUT_PAIRS, 0, held_out=True)
    items = [{"prompt": p.prompt, "response": r} for p in held_out for r in (p.chosen, p.rejected)]
    raw, scaled = [], []
    for start in range(0, len(items), 200):  # the server's items per request is more; smaller is quicker
        chunk = items[start : start + 200]
        plain = httpx.post(f"{demo_url}/v1/score", json={"inputs": chunk}, timeout=120)
        normalized = httpx.post(f"{demo_url}/v1/score", json={"inputs": chunk, "normalize": True},
                                timeout=120)
        assert (plain.status_code, normalized.status_code) == (200, 200), normalized.text
        raw += plain.json()["rewards"]
        scaled += normalized.json()["rewards"]
    expected = [(r - normalization.mean) / normalization.std for r in raw]
    assert scaled == pytest.approx(expected, abs=1e-6)
    # The statistics are those of this reference set, as the server scores it: mean 0, std 1.
    assert statistics.fmean(scaled) == pytest.approx(0, abs=1e-4)
    assert statistics.pstdev(scaled) == pytest.approx(1, abs=1e-4)


def test_a_fresh_build_publishes_the_statistics(
    tmp_path: Path, tiny_model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_demo stores what training returns (the training itself is the module above's)."""
    recorded = Normalization(mean=0.25, std=2.0, count=800, reference="held-out pairs")

    def trained(output_dir: Path, **_: object) -> DemoModel:
        for file in tiny_model_dirs["bert-right"].iterdir():
            (output_dir / file.name).write_bytes(file.read_bytes())
        return DemoModel(evaluation={"heldout_pairwise_accuracy": 1.0}, normalization=recorded)

    monkeypatch.setattr(training, "train_demo_model", trained)
    stored = build_demo(ModelStore(tmp_path / "store"), progress=False)
    assert stored.manifest.normalization == recorded
    assert ModelStore(tmp_path / "store").get(DEMO_MODEL).manifest.normalization == recorded


def test_a_demo_built_before_gets_its_statistics_once_and_a_read_only_store_still_serves(
    tmp_path: Path, tiny_model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path / "store")
    old = store.publish(tiny_model_dirs["bert-right"], name=DEMO_MODEL, source="an older build")
    calls: list[Path] = []

    def calibrated(folder: Path, **_: object) -> Normalization:
        calls.append(folder)
        return Normalization(mean=1, std=3)

    def read_only(*_: object, **__: object) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(training, "calibrate_demo_model", calibrated)
    with monkeypatch.context() as patched:  # the manifest cannot be rewritten: still served
        patched.setattr(store, "update_manifest", read_only)
        assert build_demo(store, progress=False).manifest.normalization is None
    upgraded = build_demo(store, progress=False)
    assert upgraded.manifest.normalization == Normalization(mean=1, std=3)
    assert upgraded.manifest.files == old.manifest.files  # the same weights, not a new version
    assert build_demo(store, progress=False).manifest.ref == old.manifest.ref
    assert calls == [old.path, old.path]  # once more after the read-only try, then never again
