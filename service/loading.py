"""Find a model (store reference or HF folder), verify it and load its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from model_store.store import ModelStore, max_length_of, read_config


@dataclass(frozen=True)
class ModelSource:
    """A model folder ready to load, with the name and version it is served under."""

    name: str
    version: str
    path: Path
    max_length: int


def parse_model_arg(arg: str) -> tuple[str | None, str]:
    """'ALIAS=REF' or 'REF' -> (alias or None, ref)."""
    alias, sep, ref = arg.partition("=")
    return (alias, ref) if sep else (None, arg)


def locate_model(arg: str, store: ModelStore) -> ModelSource:
    """An existing folder is served as is ('local' version); anything else is a store reference.

    Store models are checksum-verified here, so a tampered or incomplete model never loads.
    """
    alias, ref = parse_model_arg(arg)
    folder = Path(ref).expanduser()
    if folder.is_dir():
        config = read_config(folder)
        return ModelSource(alias or folder.name, "local", folder, max_length_of(folder, config))
    stored = store.get(ref)
    store.verify(stored)
    manifest = stored.manifest
    return ModelSource(alias or manifest.name, manifest.version, stored.path, manifest.max_length)


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding is masked and rewards are read by length, so any known token can pad.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer
