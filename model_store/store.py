"""Versioned reward models on disk: <root>/<name>/<version>/ with a manifest each."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.manifest import MANIFEST_FILE, Manifest, Normalization, checksum_files, sha256_of

DEFAULT_STORE = Path("~/.cache/rmserve/models")  # expanded when used, not at import
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION_PATTERN = re.compile(r"^v(\d+)$")
# Tokenizers report a huge sentinel when they have no length limit of their own.
_UNLIMITED_LENGTH = 1_000_000


class ModelStoreError(Exception):
    """A model reference that cannot be resolved, or a stored model that is not intact."""


@dataclass(frozen=True)
class StoredModel:
    """A resolved model version: its folder and its manifest."""

    path: Path
    manifest: Manifest


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'name' or 'name:version' -> (name, version or None for the latest)."""
    name, _, version = ref.partition(":")
    return name, version or None


def _version_key(version: str) -> tuple[int, int | str]:
    match = _VERSION_PATTERN.match(version)
    return (1, int(match.group(1))) if match else (0, version)


class ModelStore:
    """A folder of named, versioned models, published atomically and verified on load."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[str]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if (p / MANIFEST_FILE).is_file()]
        return sorted(found, key=_version_key)

    def list(self) -> list[StoredModel]:
        return [self.get(f"{n}:{v}") for n in self.names() for v in self.versions(n)]

    def contains(self, ref: str) -> bool:
        name, version = parse_ref(ref)
        versions = self.versions(name)
        return bool(versions) and (version is None or version in versions)

    def get(self, ref: str) -> StoredModel:
        """Resolve 'name[:version]' (latest when no version) without verifying checksums."""
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelStoreError(f"no model named {name!r} in store {self.root} (stored: {known})")
        version = version or versions[-1]
        if version not in versions:
            raise ModelStoreError(
                f"model {name!r} has no version {version!r} (versions: {', '.join(versions)})"
            )
        path = self.root / name / version
        return StoredModel(path=path, manifest=Manifest.read(path))

    def verify(self, stored: StoredModel) -> None:
        """Refuse a model whose files are missing or differ from the manifest's checksums."""
        ref = stored.manifest.ref
        for relative, expected in stored.manifest.files.items():
            path = stored.path / relative
            if not path.is_file():
                raise ModelStoreError(
                    f"model {ref} is incomplete: {relative} is missing from {stored.path}; "
                    "re-import it"
                )
            if sha256_of(path) != expected:
                raise ModelStoreError(
                    f"model {ref} failed its checksum: {relative} was modified after it was stored "
                    f"(expected sha256 {expected[:12]}…); re-import it"
                )

    def next_version(self, name: str) -> str:
        numbers = [int(m.group(1)) for v in self.versions(name) if (m := _VERSION_PATTERN.match(v))]
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
        if not _NAME_PATTERN.match(name):
            raise ModelStoreError(f"invalid model name {name!r}: use letters, digits, '.', '_', '-'")
        version = version or self.next_version(name)
        if not _NAME_PATTERN.match(version):
            raise ModelStoreError(f"invalid version {version!r}: use letters, digits, '.', '_', '-'")
        target = self.root / name / version
        if target.exists():
            raise ModelStoreError(f"{name}:{version} already exists in {self.root}")
        config = read_config(source_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            shutil.copytree(
                source_folder, staging, dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(MANIFEST_FILE, ".git", ".cache"),
            )
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
    return json.loads(config_path.read_text())


def max_length_of(folder: Path, config: dict[str, Any]) -> int:
    """The tokenizer's limit when it states one, else the model's position table."""
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        limit = json.loads(tokenizer_config.read_text()).get("model_max_length")
        if isinstance(limit, int | float) and 0 < limit < _UNLIMITED_LENGTH:
            return int(limit)
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    return int(positions) if positions else 512
