"""The manifest.json written beside every stored model version."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
_CHUNK_BYTES = 1 << 20


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


def checksum_files(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` except the manifest itself."""
    return {
        path.relative_to(folder).as_posix(): sha256_of(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
