"""All of rmserve's knobs, declared once: RMSERVE_* environment variables and CLI flags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, CliSuppress, NoDecode, SettingsConfigDict

from model_store.demo.build import DEMO_MODEL
from model_store.store import DEFAULT_STORE
from service.api.auth import (
    MIN_KEY_CHARS,
    ApiKeyConfigError,
    is_loopback,
    keys_from_env,
    keys_from_file,
    short_keys,
    split_keys,
)

DEFAULT_MODEL = DEMO_MODEL


class StoreSettings(BaseSettings):
    """Where the model store is: for every command (`rmserve models ...` too), not only `serve`."""

    model_config = SettingsConfigDict(env_prefix="RMSERVE_")

    store: Path = Field(DEFAULT_STORE, description="model store root folder")


class Settings(StoreSettings):
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
    model: list[str] = Field(
        default_factory=list,
        description="model to serve, repeatable: NAME[:VERSION] from the store, or an HF folder; "
        "optionally ALIAS=REF. The first is the default. Empty: the embedded demo model",
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="inference backend; auto = the manifest's preferred backend (torch for folders)"
    )
    device: str = Field(
        "auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda:N'; a comma-separated list "
        "(cuda:0,cuda:1 or cpu,cpu) runs an engine process per device and spreads batches over them"
    )
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
    api_workers: int = Field(
        1, ge=1, le=64, description="API processes serving HTTP and gRPC on the same ports (SO_REUSEPORT): "
        "validation, tokenising, caching; beyond 1 the models run in engine processes"
    )
    engine: Literal["auto", "in-process", "separate"] = Field(
        "auto", description="where the models run: in the API process, or in an engine process per "
        "device beside the API processes; auto = separate with --api-workers > 1 or several devices"
    )
    max_wait_ms: float = Field(
        0.0, ge=0,
        description="how long the oldest queued item may wait for others to join its batch; batches "
        "already fill while the model is busy, so waiting only pays off for sparse, bursty traffic",
    )
    max_queue_items: int = Field(
        4096, ge=1, description="items waiting in a model's queue; a request arriving at a full queue "
        "gets 429. A bigger request is admitted in parts: the rest of its items enter as the queue frees"
    )
    max_queue_tokens: int = Field(
        262144, ge=1, description="tokens waiting in a model's queue (bounds the wait too); full: 429"
    )
    priority_aging_ms: float = Field(
        1000.0, gt=0, description="a queued item gains one priority level per this much waiting, so "
        "bulk work (/v1/score, priority 0) is not starved by interactive best-of-n (/v1/rank, 10)"
    )
    prefix_sharing: bool = Field(
        True, description="compute a prompt shared by a request's items once, the responses as its "
        "continuations (decoder models under PyTorch; exact)"
    )
    min_shared_prefix_tokens: int = Field(
        32, ge=1, description="shorter shared prompts are computed with each item, as usual"
    )
    result_cache_mb: float = Field(
        0.0, ge=0, description="LRU cache of rewards by exact token ids, in MiB; 0 = off"
    )
    max_inputs_per_request: int = Field(
        65536, ge=1, description="inputs per request beyond this: 413 (a trainer's whole rollout batch fits)"
    )
    max_body_bytes: int = Field(
        256 * 1024 * 1024, ge=1024,
        description="request body limit (HTTP: 413), and the largest gRPC message either way",
    )
    max_chars_per_field: int = Field(
        100_000, ge=1, description="characters in one prompt, response, message or text beyond this: 413"
    )
    too_long: Literal["truncate", "reject"] = Field(
        "truncate", description="items over the model's max length: truncate (prompt from the left, then "
        "the response from the right) or reject with 413"
    )
    api_keys: Annotated[CliSuppress[list[str]], NoDecode] = Field(
        default_factory=list,
        description="RMSERVE_API_KEYS only (never a flag): comma-separated keys; any set means scoring "
        "needs `Authorization: Bearer KEY`",
    )
    api_keys_file: Path | None = Field(None, description="file with one API key per line (# comments)")
    protect_metrics: bool = Field(False, description="require an API key for /metrics too")
    protect_health: bool = Field(False, description="require an API key for /healthz and /readyz too")
    shutdown_grace_s: float = Field(
        30.0, gt=0, description="on SIGTERM: seconds for admitted requests to finish before exiting"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a connection must send a request's line and headers within this of "
        "connecting (or of its first byte after an answer), else 408 and closed; gRPC: the HTTP/2 "
        "handshake (preface and settings)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request body must be in within this of its headers, else 408 and "
        "closed; a client that stops reading its answer this long is reset; gRPC: how long calls may "
        "still run once a connection reaches --grpc-max-connection-age-s"
    )
    keep_alive_timeout_s: float = Field(
        20.0, gt=0, description="an HTTP connection idle this long between requests is closed (longer "
        "than clients' own pool expiry, e.g. httpx's 5 s, so that the client closes first; idle "
        "connections are the first displaced when --max-connections is reached)"
    )
    max_connections: int = Field(
        1000, ge=1, description="open HTTP connections; when full, a new one displaces the longest-idle "
        "or slowest-sending one, or is answered 503 if all are busy (probes still answered). Also the "
        "most gRPC connections and calls in progress (beyond: RESOURCE_EXHAUSTED)"
    )
    grpc_idle_timeout_s: float = Field(
        60.0, gt=0, description="a gRPC connection with no call in progress this long is closed "
        "(GOAWAY; clients reconnect by themselves)"
    )
    grpc_max_connection_age_s: float = Field(
        600.0, gt=0, description="every gRPC connection is asked to go away (GOAWAY) after this; with "
        "--body-timeout-s for its calls to finish, this bounds a call whose message never completes"
    )
    malloc_trim_slack_mib: int = Field(
        64, ge=0, description="glibc: give freed heap memory back to the OS (malloc_trim) whenever "
        "resident memory has grown this much since the last trim, so it does not grow with the "
        "variety of batch shapes; 0 = never",
    )
    malloc_mmap_threshold_kib: int = Field(
        0, ge=0, le=32768,
        description="glibc: blocks from this size up are mmapped and given back when freed (flatter "
        "memory than trimming, but a quarter slower on CPU: every activation's pages fault in); "
        "0 = glibc's own (rising) threshold",
    )
    warmup: bool = Field(True, description="run a forward pass per model before reporting ready")
    trust_remote_code: list[str] = Field(
        default_factory=list,
        description="model NAME (as served) allowed to run code from its folder; repeatable. Off for all "
        "by default",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="info logs one line per scoring request; debug adds probes and scrapes"
    )
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line")

    @model_validator(mode="after")
    def _dtype_is_for_torch(self) -> Settings:
        if self.backend == "onnx" and self.dtype != "auto":
            raise ValueError(
                "--dtype applies to the torch backend; an ONNX export's dtype is fixed when it is made "
                "(rmserve models export-onnx [--fp16]): drop --dtype or use --backend torch"
            )
        return self

    @property
    def devices(self) -> list[str]:
        return [device.strip() for device in self.device.split(",")]

    @property
    def separate_engine(self) -> bool:
        return self.engine == "separate" or (
            self.engine == "auto" and (self.api_workers > 1 or len(self.devices) > 1)
        )

    @model_validator(mode="after")
    def _processes_fit(self) -> Settings:
        if self.engine == "in-process" and (self.api_workers > 1 or len(self.devices) > 1):
            raise ValueError("--engine in-process serves one device from one API process: drop "
                             "--api-workers and list one --device, or use --engine separate")
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return split_keys(value) if isinstance(value, str) else value

    # Read once, when the settings are made, so that a bad key source stops the start.
    _keys: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _api_keys_fail_closed(self) -> Settings:
        """A key source that is set must hold keys, and protecting a path needs a key: either
        mistake would otherwise leave the server open while its operator thinks it closed."""
        keys = keys_from_env(self.api_keys) if "api_keys" in self.model_fields_set else []
        if self.api_keys_file is not None:
            keys += keys_from_file(self.api_keys_file)
        protected = [flag for flag, on in [("--protect-health", self.protect_health),
                                           ("--protect-metrics", self.protect_metrics)] if on]
        if protected and not keys:
            raise ApiKeyConfigError(
                f"{' and '.join(protected)}: protecting a path needs API keys, and none is "
                "configured: set RMSERVE_API_KEYS or --api-keys-file"
            )
        self._keys = keys
        return self

    def all_api_keys(self) -> list[str]:
        """Keys from RMSERVE_API_KEYS and --api-keys-file; empty means no authentication, which
        is logged as a warning when the server is reachable from other machines. Called once, at
        start, by the composition root."""
        log = logging.getLogger("rmserve.auth")
        if not self._keys and not is_loopback(self.host):
            log.warning(
                "no API keys configured and binding %s: anyone who can reach this server can score "
                "and list models; set RMSERVE_API_KEYS or --api-keys-file", self.host,
            )
        if short := short_keys(self._keys):
            log.warning("API key(s) %s are shorter than %d characters: easy to guess; use long "
                        "random keys", ", ".join(map(str, short)), MIN_KEY_CHARS)
        return list(self._keys)
