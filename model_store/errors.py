"""The one error type of the model store."""

from __future__ import annotations


class ModelStoreError(Exception):
    """A model reference that cannot be resolved, or a stored model that is not intact."""
