"""What a model folder must be to enter or leave the store: regular files only (no links, no
special files), exactly the files its manifest lists with their checksums, and JSON that parses;
otherwise a ModelStoreError naming the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from model_store.errors import ModelStoreError
from model_store.manifest import MANIFEST_FILE, Manifest, folder_entries, sha256_of

# Never copied into the store on import.
NOT_IMPORTED = (MANIFEST_FILE, ".git", ".cache")


def refuse_unlisted(ref: str, folder: Path, unlisted: list[str]) -> None:
    """A stored version holds only what its manifest lists: any other file could be picked up by
    name (a chat_template.jinja changes every reward), so it is named and refused."""
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise ModelStoreError(
            f"model {ref} has files its manifest does not list: {shown} in "
            f"{folder}; remove them, or re-import the model to include them"
        )


def check_file(ref: str, folder: Path, relative: str, kind: str | None, expected: str) -> None:
    """A listed file is there, a regular file (kind from folder_entries), with its checksum."""
    if kind is None:
        raise ModelStoreError(
            f"model {ref} is incomplete: {relative} is missing from {folder}; re-import it"
        )
    if kind != "file":
        raise ModelStoreError(
            f"model {ref} is not intact: {relative} in {folder} is no longer a regular file "
            f"(a symbolic link or special file); re-import it"
        )
    if sha256_of(folder / relative) != expected:
        raise ModelStoreError(
            f"model {ref} failed its checksum: {relative} was modified after it was stored "
            f"(expected sha256 {expected[:12]}…); re-import it"
        )


def refuse_links(folder: Path) -> None:
    """Refuse a folder to import that holds a symbolic link or a special file (what would be
    copied in is whatever the link points to, anywhere on the machine, or a device's stream)."""
    for relative, kind in folder_entries(folder).items():
        if not set(relative.split("/")).isdisjoint(NOT_IMPORTED):
            continue  # not copied (shutil.ignore_patterns matches a name at any depth)
        path = folder / relative
        if kind == "link":
            raise ModelStoreError(
                f"cannot import {folder}: {path} is a symbolic link (to {os.readlink(path)}); the store "
                "copies regular files only: replace the link with the file it points to (cp -L)"
            )
        if kind != "file":
            raise ModelStoreError(f"cannot import {folder}: {path} is not a regular file")


def copy_regular_files(source: Path, staging: Path) -> None:
    # symlinks=True: a link that appeared after refuse_links is copied as a link, never followed,
    # and the manifest's own walk then refuses it.
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns(*NOT_IMPORTED))
    except (shutil.Error, OSError) as exc:
        raise ModelStoreError(f"cannot import {source}: copying failed: {exc}") from exc
    refuse_links(staging)


def read_manifest(path: Path) -> Manifest:
    try:
        return Manifest.read(path)
    except (OSError, UnicodeDecodeError, ValidationError) as exc:
        reason = "; ".join(e["msg"] for e in exc.errors()[:3]) if isinstance(exc, ValidationError) else exc
        raise ModelStoreError(f"{path / MANIFEST_FILE} is unreadable or invalid: {reason}") from exc


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder, or a ModelStoreError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelStoreError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelStoreError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelStoreError(f"{path} is not valid: expected a JSON object, got {type(value).__name__}")
    return value
