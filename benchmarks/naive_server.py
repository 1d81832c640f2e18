"""The baseline rmserve is measured against: one forward pass per request, no batching across requests.

    python benchmarks/naive_server.py --model FOLDER [--port 8001] [--forward-threads 1]

Same wire shape as rmserve's POST /v1/score ({"inputs": [{"prompt", "response"}]} -> {"rewards"}),
so the load benchmark can drive both with the same client. It is what a first FastAPI wrapper of a
Hugging Face model looks like: tokenise the request, pad it, run `model(**inputs).logits` on a
worker thread. Only the text-pair encoding that the demo model uses is supported.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MAX_LENGTH = 512


class PairIn(BaseModel):
    prompt: str
    response: str


class ScoreRequest(BaseModel):
    inputs: list[PairIn] = Field(min_length=1)
    model: str | None = None


class ScoreResponse(BaseModel):
    model: str
    rewards: list[float]


class NaiveScorer:
    """Scores each request on its own: tokenise, pad to the request's longest item, forward."""

    def __init__(self, folder: Path, forward_threads: int, device: str, dtype: str) -> None:
        self.name = folder.name
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=getattr(torch, dtype), device_map=device
        ).eval()
        # One thread serialises forwards like a GIL-bound handler would; more threads let
        # concurrent requests' forwards overlap and compete for the same cores.
        self._executor = ThreadPoolExecutor(forward_threads, thread_name_prefix="forward")

    def _score_sync(self, pairs: list[PairIn]) -> list[float]:
        inputs: Any = self._tokenizer(
            [p.prompt for p in pairs], [p.response for p in pairs],
            padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt",
        )
        with torch.inference_mode():
            return self._model(**inputs.to(self._model.device)).logits[:, 0].float().tolist()

    async def score(self, pairs: list[PairIn]) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._score_sync, pairs)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def create_app(scorer: NaiveScorer) -> FastAPI:
    app = FastAPI(title="naive reward-model server")

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest) -> ScoreResponse:
        return ScoreResponse(model=scorer.name, rewards=await scorer.score(body.inputs))

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model folder")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--forward-threads", type=int, default=1, help="concurrent forward passes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    scorer = NaiveScorer(args.model, args.forward_threads, args.device, args.dtype)
    try:
        # Loopback only: this is a benchmark baseline, not something to expose.
        uvicorn.run(create_app(scorer), host="127.0.0.1", port=args.port, log_level=args.log_level)
    finally:
        scorer.close()


if __name__ == "__main__":
    main()
