"""All of rmserve's knobs, declared once: RMSERVE_* environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store.demo.build import DEMO_MODEL
from model_store.store import DEFAULT_STORE

DEFAULT_MODEL = DEMO_MODEL


class Settings(BaseSettings):
    """Configuration of `rmserve serve`; every field is also --kebab-case flag and RMSERVE_ env var."""

    model_config = SettingsConfigDict(
        env_prefix="RMSERVE_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="rmserve serve",
    )

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 only when asked")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (same host); 0 = no gRPC")
    store: Path = Field(DEFAULT_STORE, description="model store root folder")
    model: list[str] = Field(
        default_factory=list,
        description="model to serve, repeatable: NAME[:VERSION] from the store, or an HF folder; "
        "optionally ALIAS=REF. The first is the default. Empty: the embedded demo model",
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="inference backend; auto = the manifest's preferred backend (torch for folders)"
    )
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda:N'")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="weights dtype: auto = float32 on CPU, bfloat16 on CUDA"
    )
    threads: int = Field(0, ge=0, description="CPU threads per forward (torch, ONNX Runtime); 0 = all cores")
    max_batch_pairs: int = Field(0, ge=0, description="most pairs per forward; 0 = per-device default")
    max_batch_tokens: int = Field(
        0, ge=0, description="most padded tokens per forward; 0 = per-device default"
    )
    forward_workers: int = Field(
        1, ge=1, description="batches computed at once per device (each on its own thread)"
    )
    max_wait_ms: float = Field(
        0.0, ge=0,
        description="how long the oldest queued item may wait for others to join its batch; batches "
        "already fill while the model is busy, so waiting only pays off for sparse, bursty traffic",
    )
    max_queue_items: int = Field(4096, ge=1, description="queued items beyond this get 503")
    max_inputs_per_request: int = Field(1024, ge=1, description="inputs per request beyond this: 413")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body limit: 413")
    warmup: bool = Field(True, description="run a forward pass per model before reporting ready")
    trust_remote_code: bool = Field(False, description="allow model code from the model folder")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="info logs one line per scoring request; debug adds probes and scrapes"
    )
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line")
