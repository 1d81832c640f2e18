"""The manifest.json written beside every stored model version."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

MANIFEST_FILE = "manifest.json"
_CHUNK_BYTES = 1 << 20


def is_plain_relative(path: str) -> bool:
    """A forward-slash path that stays inside its folder: no root, no '..', '.' or empty parts."""
    parts = path.split("/")
    return bool(path) and "\\" not in path and all(p not in ("", ".", "..") for p in parts)


def _checked_relative(path: str) -> str:
    # A manifest naming ../x would have verification (and loading) read outside the version.
    if not is_plain_relative(path):
        raise ValueError(f"{path!r} is not a relative path inside the version folder")
    return path


class Normalization(BaseModel):
    """Reward statistics over a reference set, for (r - mean) / std."""

    mean: float
    std: float = Field(gt=0, description="population standard deviation (ddof 0)")
    count: int | None = Field(None, description="rewards in the reference set")
    reference: str | None = Field(None, description="what the reference set was")


class OnnxExport(BaseModel):
    """An ONNX export of the model, stored beside its weights, and how well it matched PyTorch."""

    file: str = Field(description="the graph, relative to the version folder")
    opset: int
    dtype: Literal["float32", "float16"]
    optimized: bool = Field(description="ONNX Runtime transformer fusions applied offline")
    parity: dict[str, int | float] = Field(
        description="vs the PyTorch model: inputs checked, max_abs_diff, ranking_agreement"
    )
    exporter: str
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("file")
    @classmethod
    def _inside_the_version(cls, file: str) -> str:
        return _checked_relative(file)


class Manifest(BaseModel):
    """What a stored model version is, where it came from and how to check it is intact."""

    name: str
    version: str
    architecture: str
    max_length: int = Field(gt=0)
    dtype: str
    files: dict[str, str] = Field(description="relative path -> sha256 of every model file")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    normalization: Normalization | None = None
    evaluation: dict[str, Any] = Field(default_factory=dict)
    onnx: OnnxExport | None = None
    preferred_backend: Literal["torch", "onnx"] = Field(
        "torch", description="what `rmserve serve --backend auto` runs this model with"
    )

    @field_validator("files")
    @classmethod
    def _paths_inside_the_version(cls, files: dict[str, str]) -> dict[str, str]:
        for path in files:
            _checked_relative(path)
        return files

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def write(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        return cls.model_validate_json((folder / MANIFEST_FILE).read_text())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def folder_entries(folder: Path) -> dict[str, str]:
    """Every entry below `folder` that is not a directory, as relative path -> kind ('file',
    'link' or 'other'), found without following symbolic links, the manifest excepted.

    Directories are walked, not listed: only what can be read as a file matters. A link to a
    directory is listed (as 'link'), never entered.
    """
    entries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            relative = path.relative_to(folder).as_posix()
            if relative != MANIFEST_FILE:
                entries[relative] = (
                    "link" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "other"
                )
    return dict(sorted(entries.items()))


def checksum_files(folder: Path) -> dict[str, str]:
    """sha256 of every regular file below `folder` except the manifest itself (links and special
    files are the caller's to refuse first: see `folder_entries`)."""
    return {
        relative: sha256_of(folder / relative)
        for relative, kind in folder_entries(folder).items()
        if kind == "file"
    }
