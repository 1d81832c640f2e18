"""What front ends and engine processes say to each other over ZeroMQ, framed with msgpack.

Items cross already tokenised, as compact arrays: a part's token ids are one int32 buffer with
the rows' lengths beside it, never a JSON list of numbers. Each message is one msgpack array
whose first element names it.

Front end -> engine (a DEALER to the engine's ROUTER):
    ("hello",)                            -> ("models", [ModelCard...]) once loaded, or ("failed", why)
    ("add", sid, model, priority, last, ids, lengths, token_types | None, shared_prefixes)
    ("close", sid)                        no more parts for this request
    ("cancel", sid)                       drop what is still queued
Engine -> front end:
    ("done", sid, rewards(float64), queue_s, compute_s, queue_items)
    ("error", sid, kind, message, queue_items)   kind: QUEUE_FULL, CLOSED or FAILED
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

import msgspec
import zmq

from service.backends.base import EncodedPair

QUEUE_FULL, CLOSED, FAILED = "queue_full", "closed", "failed"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode(*fields: Any) -> bytes:
    return _encoder.encode(fields)


def decode(frame: bytes) -> list[Any]:
    return _decoder.decode(frame)


@dataclass(frozen=True)
class ModelCard:
    """What a front end needs to know of a model an engine serves."""

    name: str
    version: str
    backend: str
    device: str
    dtype: str
    shares_prefixes: bool
    max_pairs: int
    max_tokens: int
    max_padding_fraction: float

    def as_wire(self) -> list[Any]:
        return list(astuple(self))  # the fields in order: from_wire's arguments

    @classmethod
    def from_wire(cls, fields: Sequence[Any]) -> ModelCard:
        return cls(*fields)


def pack_pairs(pairs: Sequence[EncodedPair]) -> tuple[bytes, bytes, bytes | None, list[int]]:
    """Rows as (ids, lengths, token types or None, shared prefixes): int32 buffers."""
    ids, lengths = array("i"), array("i")
    types = array("i") if pairs and pairs[0].token_type_ids is not None else None
    for pair in pairs:
        ids.extend(pair.input_ids)
        lengths.append(len(pair.input_ids))
        if types is not None:
            types.extend(pair.token_type_ids or (0,) * len(pair.input_ids))
    return ids.tobytes(), lengths.tobytes(), None if types is None else types.tobytes(), [
        pair.shared_prefix for pair in pairs
    ]


def unpack_pairs(
    ids: bytes, lengths: bytes, types: bytes | None, prefixes: Sequence[int]
) -> list[EncodedPair]:
    flat, sizes = array("i", ids), array("i", lengths)
    flat_types = None if types is None else array("i", types)
    pairs, start = [], 0
    for size, prefix in zip(sizes, prefixes, strict=True):
        end = start + size
        row_types = None if flat_types is None else tuple(flat_types[start:end])
        pairs.append(EncodedPair(tuple(flat[start:end]), row_types, prefix))
        start = end
    return pairs


def pack_rewards(rewards: Sequence[float]) -> bytes:
    return array("d", rewards).tobytes()


def unpack_rewards(frame: bytes) -> list[float]:
    return array("d", frame).tolist()


def unbounded(socket: zmq.Socket) -> None:  # type: ignore[type-arg]
    """No high-water mark: ZeroMQ would drop (ROUTER) or hold back messages past it, and every
    message here is a request's part or answer. What waits is bounded by the server's own limits
    (connections, items per request, the queue)."""
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.RCVHWM, 0)
