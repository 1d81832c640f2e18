"""The gRPC server beside HTTP: RewardService, grpc.health.v1 and reflection, on the same event loop
(and so the same batcher) as the HTTP app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.api.auth import UNAUTHORIZED_MESSAGE, ApiKeys
from service.api.grpc import rmserve_pb2, rmserve_pb2_grpc
from service.api.grpc.servicer import RewardServicer
from service.metrics import Metrics
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer

SERVICE_NAME = rmserve_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
_HEALTH_NAMES = ("", SERVICE_NAME)  # "" is the whole server, as health checkers ask by default


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for calls to protected services without `authorization: Bearer KEY`."""

    def __init__(self, keys: ApiKeys, protected_services: set[str]) -> None:
        self._keys = keys
        self._protected = protected_services

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service = details.method.lstrip("/").partition("/")[0]
        metadata = dict(details.invocation_metadata or ())
        if handler is None or service not in self._protected:
            return handler
        if self._keys.allows(metadata.get("authorization")):
            return handler

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED_MESSAGE)

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


class GrpcServer:
    def __init__(self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer) -> None:
        self._server = server
        self._health = health_servicer

    @classmethod
    async def start(
        cls, scorer: Scorer, registry: ModelRegistry, metrics: Metrics, *, host: str, port: int,
        max_message_bytes: int, keys: ApiKeys, protect_health: bool = False,
    ) -> GrpcServer:
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        protected = {SERVICE_NAME, *([health_name] if protect_health else [])}
        server = grpc.aio.server(options=options, interceptors=[ApiKeyInterceptor(keys, protected)])
        servicer = RewardServicer(scorer, registry, metrics)
        rmserve_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_name, reflection.SERVICE_NAME),
            server,
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 hosts in brackets
        server.add_insecure_port(address)  # raises if the port is taken
        grpc_server = cls(server, health_servicer)
        await grpc_server.set_serving(False)  # until the models are loaded
        await server.start()
        return grpc_server

    async def set_serving(self, serving: bool) -> None:
        states = health_pb2.HealthCheckResponse
        status = states.SERVING if serving else states.NOT_SERVING
        for name in _HEALTH_NAMES:
            await self._health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls at once (health NOT_SERVING), let running ones finish within grace_s."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
