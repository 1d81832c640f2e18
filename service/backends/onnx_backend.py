"""ONNX Runtime backend: runs a model's onnx/model.onnx export (see model_store.onnx_export)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.backends.base import BackendInfo, EncodedPair
from service.backends.padding import PaddedBatch

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_KNOWN_INPUTS = {"input_ids", "attention_mask", "token_type_ids", "position_ids"}


class BackendUnavailableError(RuntimeError):
    """The backend's package or device is missing; the message says what to install."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "--backend onnx needs ONNX Runtime: pip install 'rmserve[onnx]' (CPU) or 'rmserve[gpu]' (CUDA)"
        ) from exc
    return onnxruntime


class OnnxBackend:
    """Pads a batch on the right and runs the exported graph, which returns one reward per row."""

    def __init__(self, session: Any, *, pad_token_id: int, device: str) -> None:
        self._session = session
        self._pad_token_id = pad_token_id
        self._inputs = [i.name for i in session.get_inputs()]
        unknown = set(self._inputs) - _KNOWN_INPUTS
        if unknown or "input_ids" not in self._inputs:
            raise ValueError(f"the ONNX graph's inputs {self._inputs} are not an rmserve export's")
        self._device_id = int(device.partition(":")[2] or 0) if device.startswith("cuda") else None
        # Halved exports keep float32 inputs and outputs; the export records its weights' dtype.
        dtype = session.get_modelmeta().custom_metadata_map.get("dtype", "float32")
        self.info = BackendInfo("onnx", device, dtype)

    @classmethod
    def load(
        cls, graph_file: Path, *, pad_token_id: int, device: str = "auto", threads: int = 0
    ) -> OnnxBackend:
        ort = import_onnxruntime()
        has_cuda = _CUDA in ort.get_available_providers()
        use_cuda = device.startswith("cuda") or (device == "auto" and has_cuda)
        if use_cuda and not has_cuda:
            raise BackendUnavailableError(
                f"--device {device} with --backend onnx needs onnxruntime-gpu: pip install 'rmserve[gpu]'"
            )
        device_id = int(device.partition(":")[2] or 0)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per physical core
        # Idle ONNX Runtime threads otherwise spin for the next run and starve the event loop and
        # tokenizers of CPU; measured on 2 cores, spinning made each forward ~6x slower when
        # anything else ran between them (benchmarks/RESULTS.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = [(_CUDA, {"device_id": device_id}), _CPU] if use_cuda else [_CPU]
        session = ort.InferenceSession(str(graph_file), options, providers=providers)
        running = session.get_providers()[0]
        if use_cuda and running != _CUDA:
            if device != "auto":
                raise BackendUnavailableError(f"ONNX Runtime could not start CUDA on {device}")
            use_cuda = False  # onnxruntime-gpu on a machine without a usable GPU
        return cls(session, pad_token_id=pad_token_id, device=f"cuda:{device_id}" if use_cuda else "cpu")

    def score(self, batch: Sequence[EncodedPair]) -> list[float]:
        padded = PaddedBatch.of(batch, self._pad_token_id)
        feeds = {name: self._input(name, padded) for name in self._inputs}
        if self._device_id is None:
            return self._session.run(["rewards"], feeds)[0].tolist()
        # I/O binding: inputs are copied to the GPU once and the output stays there until read.
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output("rewards", "cuda", self._device_id)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32).tolist()

    @staticmethod
    def _input(name: str, padded: PaddedBatch) -> np.ndarray:
        if name == "position_ids":
            return np.ascontiguousarray(padded.position_ids())
        if name == "token_type_ids":
            return padded.token_type_ids if padded.token_type_ids is not None \
                else np.zeros_like(padded.input_ids)
        return getattr(padded, name)

