"""Find a model (store reference or HF folder), verify it and load its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from transformers import AutoTokenizer

from model_store.onnx_export import GRAPH_FILE
from model_store.store import (
    ModelStore,
    ModelStoreError,
    check_name,
    checked_ref,
    max_length_of,
    position_limit,
    read_config,
)

BackendName = Literal["torch", "onnx"]


@dataclass(frozen=True)
class ModelSource:
    """A model folder ready to load, with the name and version it is served under."""

    name: str
    version: str
    path: Path
    max_length: int
    backend: BackendName
    # (mean, std) of its rewards over a reference set, for "normalize": true; None if unknown.
    normalization: tuple[float, float] | None = None

    @property
    def onnx_file(self) -> Path:
        return self.path / GRAPH_FILE


def parse_model_arg(arg: str) -> tuple[str | None, str]:
    """'ALIAS=REF' or 'REF' -> (alias or None, ref)."""
    alias, sep, ref = arg.partition("=")
    return (alias, ref) if sep else (None, arg)


def locate_model(arg: str, store: ModelStore, backend: BackendName | Literal["auto"] = "auto") -> ModelSource:
    """An existing folder is served as is ('local' version); anything else is a store reference.

    Store models are checksum-verified here, so a tampered or incomplete model never loads.
    `auto` picks the backend the manifest prefers (torch for plain folders).
    """
    alias, ref = parse_model_arg(arg)
    if alias is not None:
        check_name(alias, f"model alias in {arg!r} (ALIAS=REF)")
    folder = _as_folder(ref, store)
    if folder is not None:
        config = read_config(folder)
        source = ModelSource(
            alias or folder.name, "local", folder, max_length_of(folder, config),
            "torch" if backend == "auto" else backend, _config_statistics(config),
        )
        exported = source.onnx_file.is_file()
    else:
        stored = store.get(ref)
        store.verify(stored)
        m = stored.manifest
        statistics = (m.normalization.mean, m.normalization.std) if m.normalization else None
        source = ModelSource(
            alias or m.name, m.version, stored.path, m.max_length,
            m.preferred_backend if backend == "auto" else backend,
            statistics or _config_statistics(read_config(stored.path)),
        )
        # An export counts once its parity check has recorded it (and its checksum) here.
        exported = m.onnx is not None
    if source.backend == "onnx" and not exported:
        raise ModelStoreError(
            f"{ref} has no ONNX export ({GRAPH_FILE}): run `rmserve models export-onnx {ref}` first"
        )
    return source


def position_capped(source: ModelSource) -> int:
    """The source's max length, no more than the model's position table holds: a manifest or a
    tokenizer may claim more (e.g. 1,000 for 128 positions), and one such row fails its batch."""
    limit = position_limit(read_config(source.path))
    return min(source.max_length, limit) if limit else source.max_length


def _as_folder(ref: str, store: ModelStore) -> Path | None:
    """The folder `ref` names, or None when it is a store reference (checked strictly by the store).

    An empty ref would be the working directory, and a folder that shares its name with a stored
    model would be served, unverified, in its place: both are refused rather than guessed.
    """
    if not ref.strip():
        raise ModelStoreError("empty model reference: give NAME[:VERSION] from the store or a folder")
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        try:
            checked_ref(ref)
        except ModelStoreError as exc:
            raise ModelStoreError(f"{exc}; nor is it an existing folder") from exc
        return None
    if store.contains(ref):
        if folder.resolve().is_relative_to(store.root.resolve()):
            return None  # run from inside the store: the name's own folder there, not a model
        raise ModelStoreError(
            f"{ref!r} is both a folder here and a model in the store {store.root}: write ./{ref} "
            "for the folder, or run from another directory for the stored model"
        )
    return folder


def _config_statistics(config: dict[str, Any]) -> tuple[float, float] | None:
    """OpenRLHF-style reward models carry their reward mean and std in config.json."""
    mean, std = config.get("mean"), config.get("std")
    if isinstance(mean, int | float) and isinstance(std, int | float) and std > 0:
        return float(mean), float(std)
    return None


def refuse_custom_code(source: ModelSource) -> None:
    """Model code shipped in a folder (config.json's `auto_map`) runs only when trusted by name."""
    if "auto_map" in read_config(source.path):
        raise ModelStoreError(
            f"model {source.name!r} ships its own Python code (auto_map in {source.path / 'config.json'}); "
            f"rmserve runs it only with --trust-remote-code {source.name}"
        )


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding is masked and rewards are read by length, so any known token can pad.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer
