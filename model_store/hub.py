"""Where a model to import comes from: a local folder or a Hugging Face hub id."""

from __future__ import annotations

from pathlib import Path

from model_store.store import ModelStoreError


def resolve_source(src: str) -> tuple[Path, str]:
    """Return (local folder, provenance string) for a folder path or a hub repo id."""
    folder = Path(src).expanduser()
    if folder.is_dir():
        return folder.resolve(), f"file://{folder.resolve()}"
    from huggingface_hub import snapshot_download

    try:
        downloaded = snapshot_download(src, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                            "*.model", "*.jinja"])
    except Exception as exc:  # the hub raises many types; all mean "could not fetch"
        raise ModelStoreError(
            f"{src!r} is neither a local folder nor a reachable hub model: {exc}"
        ) from exc
    return Path(downloaded), f"hf://{src}"
