"""Versioned reward models on disk: <root>/<name>/<version>/ with a manifest each."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.errors import ModelStoreError
from model_store.integrity import (
    check_file,
    copy_regular_files,
    read_json_object,
    read_manifest,
    refuse_links,
    refuse_unlisted,
)
from model_store.manifest import MANIFEST_FILE, Manifest, Normalization, checksum_files, folder_entries

DEFAULT_STORE = Path("~/.cache/rmserve/models")  # expanded when used, not at import
# Always used with fullmatch: `$` would also accept a trailing newline. No '/' or '\\', and the
# first character is no '.', so a name or version is one folder inside the store, never '..'.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_PATTERN = re.compile(r"v(\d+)")
_NAME_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
# What the store itself leaves at the top of a version while it works (see add_folder and
# update_manifest); nothing loads from them, so verification does not count them as model files.
_WORK_PREFIXES = (".staging-", ".retired-", f".{MANIFEST_FILE}.tmp")
# Tokenizers report a huge sentinel when they have no length limit of their own.
_UNLIMITED_LENGTH = 1_000_000


@dataclass(frozen=True)
class StoredModel:
    """A resolved model version: its folder and its manifest."""

    path: Path
    manifest: Manifest


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'name' or 'name:version' -> (name, version or None for the latest)."""
    name, _, version = ref.partition(":")
    return name, version or None


def is_valid_name(name: str) -> bool:
    """Whether `name` may be a model name or version in the store (one plain folder name)."""
    return _NAME_PATTERN.fullmatch(name) is not None


def check_name(value: str, what: str) -> str:
    if not is_valid_name(value):
        raise ModelStoreError(f"invalid {what} {value!r}: use {_NAME_RULE}")
    return value


def checked_ref(ref: str) -> tuple[str, str | None]:
    """parse_ref, refusing anything that is not a plain NAME[:VERSION] (no paths, no newlines)."""
    name, version = parse_ref(ref)
    if not is_valid_name(name) or (version is not None and not is_valid_name(version)):
        raise ModelStoreError(
            f"invalid model reference {ref!r}: a store reference is NAME[:VERSION], each {_NAME_RULE}"
        )
    return name, version


def _version_key(version: str) -> tuple[int, int | str]:
    match = _VERSION_PATTERN.fullmatch(version)
    return (1, int(match.group(1))) if match else (0, version)


class ModelStore:
    """A folder of named, versioned models, published atomically and verified on load."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_valid_name(p.name))

    def versions(self, name: str) -> list[str]:
        if not is_valid_name(name):
            return []
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir()
                 if is_valid_name(p.name) and (p / MANIFEST_FILE).is_file()]
        return sorted(found, key=_version_key)

    def list(self) -> list[StoredModel]:
        return [self.get(f"{n}:{v}") for n in self.names() for v in self.versions(n)]

    def contains(self, ref: str) -> bool:
        """Whether `ref` is a valid store reference to a stored version (False for a path)."""
        try:
            name, version = checked_ref(ref)
        except ModelStoreError:
            return False
        versions = self.versions(name)
        return bool(versions) and (version is None or version in versions)

    def get(self, ref: str) -> StoredModel:
        """Resolve 'name[:version]' (latest when no version) without verifying checksums."""
        name, version = checked_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelStoreError(f"no model named {name!r} in store {self.root} (stored: {known})")
        version = version or versions[-1]
        if version not in versions:
            raise ModelStoreError(
                f"model {name!r} has no version {version!r} (versions: {', '.join(versions)})"
            )
        path = self._inside_root(self.root / name / version)
        return StoredModel(path=path, manifest=read_manifest(path))

    def _inside_root(self, path: Path) -> Path:
        # Names are plain folder names, but a symbolic link in the store could still lead out.
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise ModelStoreError(
                f"{path} resolves outside the store root {root} (a symbolic link?); refusing it"
            )
        return path

    def verify(self, stored: StoredModel) -> None:
        """Refuse a model whose set of files or their contents differ from the manifest's: a file
        missing, changed, added (even one the loader picks up by name, like chat_template.jinja),
        or replaced by a symbolic link."""
        present = {
            relative: kind for relative, kind in folder_entries(stored.path).items()
            if not relative.startswith(_WORK_PREFIXES)
        }
        ref = stored.manifest.ref
        refuse_unlisted(ref, stored.path, sorted(set(present) - set(stored.manifest.files)))
        for relative, expected in stored.manifest.files.items():
            check_file(ref, stored.path, relative, present.get(relative), expected)

    def next_version(self, name: str) -> str:
        numbers = [int(m.group(1)) for v in self.versions(name) if (m := _VERSION_PATTERN.fullmatch(v))]
        return f"v{max(numbers, default=0) + 1}"

    def publish(
        self,
        source_folder: Path,
        *,
        name: str,
        version: str | None = None,
        source: str,
        max_length: int | None = None,
        evaluation: dict[str, Any] | None = None,
        normalization: Normalization | None = None,
    ) -> StoredModel:
        """Copy an HF-format folder into the store, checksum it and rename it into place.

        Readers never see a half-written version: everything is written in a temporary
        folder beside the target and moved with one rename.
        """
        check_name(name, "model name")
        version = check_name(self.next_version(name) if version is None else version, "version")
        target = self.root / name / version
        if target.exists():
            raise ModelStoreError(f"{name}:{version} already exists in {self.root}")
        config = read_config(source_folder)
        refuse_links(source_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._inside_root(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            copy_regular_files(source_folder, staging)
            manifest = Manifest(
                name=name,
                version=version,
                architecture=(config.get("architectures") or ["unknown"])[0],
                max_length=max_length or max_length_of(source_folder, config),
                dtype=str(config.get("dtype") or config.get("torch_dtype") or "float32"),
                files=checksum_files(staging),
                source=source,
                evaluation=evaluation or {},
                normalization=normalization,
            )
            manifest.write(staging)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredModel(path=target, manifest=manifest)

    def staging_folder(self, stored: StoredModel) -> Path:
        """A hidden folder inside a version, to build new files in before `add_folder`."""
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=stored.path))

    def add_folder(self, stored: StoredModel, name: str, staging: Path, **changes: Any) -> StoredModel:
        """Move a finished staging folder into a version as `name` (replacing an older one),
        and record its files' checksums and `changes` in the manifest.

        The new files appear with one rename; until the manifest names them they are ignored.
        """
        target = stored.path / name
        retired = stored.path / f".retired-{name}-{os.getpid()}"
        if target.exists():
            os.rename(target, retired)
        os.rename(staging, target)
        kept = {k: v for k, v in stored.manifest.files.items() if not k.startswith(f"{name}/")}
        added = {f"{name}/{k}": v for k, v in checksum_files(target).items()}
        updated = self.update_manifest(stored, files={**kept, **added}, **changes)
        shutil.rmtree(retired, ignore_errors=True)
        return updated

    def update_manifest(self, stored: StoredModel, **changes: Any) -> StoredModel:
        """Rewrite a version's manifest (e.g. new evaluation results) atomically."""
        manifest = stored.manifest.model_copy(update=changes)
        tmp = stored.path / f".{MANIFEST_FILE}.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
        os.replace(tmp, stored.path / MANIFEST_FILE)
        return StoredModel(path=stored.path, manifest=manifest)


def read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelStoreError(f"{folder} is not a Hugging Face model folder: no config.json")
    return read_json_object(config_path)


def max_length_of(folder: Path, config: dict[str, Any]) -> int:
    """The tokenizer's limit when it states one, else the model's position table; never more
    than an absolute position table holds (a longer row would fail its whole batch)."""
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        limit = read_json_object(tokenizer_config).get("model_max_length")
        if isinstance(limit, int | float) and 0 < limit < _UNLIMITED_LENGTH:
            return min(int(limit), position_limit(config) or _UNLIMITED_LENGTH)
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    return int(positions) if positions else 512


# Rotary positions are computed, not looked up: no table to run past.
_ROTARY_KEYS = ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim", "rotary_pct")
# Their position ids start after the padding index, so the table holds pad_token_id + 1 fewer.
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text"})


def position_limit(config: dict[str, Any]) -> int | None:
    """The most tokens the model's absolute position table can index; None when it has none."""
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if not isinstance(positions, int) or positions <= 0 or any(k in config for k in _ROTARY_KEYS):
        return None
    if config.get("relative_attention") and not config.get("position_biased_input", True):
        return None  # DeBERTa-v2/v3: relative buckets only
    if config.get("model_type") in _OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    return positions
