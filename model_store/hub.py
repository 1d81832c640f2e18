"""Where a model to import comes from: a local folder or a Hugging Face hub id."""

from __future__ import annotations

import re
from pathlib import Path

from model_store.store import ModelStoreError

# Hub downloads land here as plain files (the hub's own cache is symbolic links into blobs, which
# the store refuses to import); expanded when used, not at import.
DOWNLOADS = Path("~/.cache/rmserve/downloads")
_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def resolve_source(src: str) -> tuple[Path, str]:
    """Return (local folder, provenance string) for a folder path or a hub repo id."""
    folder = Path(src).expanduser()
    if folder.is_dir():
        return folder.resolve(), f"file://{folder.resolve()}"
    from huggingface_hub import snapshot_download

    try:
        downloaded = snapshot_download(src, allow_patterns=_PATTERNS, local_dir=download_folder(src))
    except Exception as exc:  # the hub raises many types; all mean "could not fetch"
        raise ModelStoreError(
            f"{src!r} is neither a local folder nor a reachable hub model: {exc}"
        ) from exc
    return Path(str(downloaded)), f"hf://{src}"


def download_folder(repo_id: str) -> Path:
    """One folder per hub id, its name made of safe characters only (an id never picks the path)."""
    return DOWNLOADS.expanduser() / ("hub--" + re.sub(r"[^A-Za-z0-9._-]", "--", repo_id))
