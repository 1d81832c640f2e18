"""RewardService's method handlers, as the generated `add_RewardServiceServicer_to_server` makes
them, but with requests that do not parse handed to the method as `Malformed` rather than failing
inside gRPC (which answers UNKNOWN): the method answers INVALID_ARGUMENT, counted and logged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from service.api.grpc import rmserve_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RewardService"].full_name


class Malformed:
    """Request bytes that are not a valid message of the method's request type."""

    def __init__(self, message_type: str, error: str) -> None:
        self.description = f"the request is not a valid {message_type} message ({error})"


def _tolerant(message: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(message.DESCRIPTOR.full_name, str(exc))

    return parse


def reward_service_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    def unary(
        method: Callable[..., Any], request: type[Message], reply: type[Message]
    ) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=_tolerant(request), response_serializer=reply.SerializeToString
        )

    return {
        "Score": unary(servicer.Score, pb.ScoreRequest, pb.ScoreResponse),
        "Rank": unary(servicer.Rank, pb.RankRequest, pb.RankResponse),
        "ListModels": unary(servicer.ListModels, pb.ListModelsRequest, pb.ListModelsResponse),
        "ScoreStream": grpc.stream_stream_rpc_method_handler(
            servicer.ScoreStream, request_deserializer=_tolerant(pb.ScoreRequest),
            response_serializer=pb.ScoreResponse.SerializeToString,
        ),
    }


def add_reward_service(servicer: Any, server: grpc.aio.Server) -> None:
    handlers = reward_service_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
