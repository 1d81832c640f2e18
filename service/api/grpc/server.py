"""The gRPC server beside HTTP: RewardService, grpc.health.v1 and reflection, on the same event loop
(and so the same batcher) as the HTTP app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.api.auth import UNAUTHORIZED_MESSAGE, ApiKeys
from service.api.grpc import rmserve_pb2
from service.api.grpc.handlers import add_reward_service
from service.api.grpc.servicer import RewardServicer
from service.api.observe import RequestObservation, request_id_from
from service.metrics import Metrics
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer

SERVICE_NAME = rmserve_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
_HEALTH_NAMES = ("", SERVICE_NAME)  # "" is the whole server, as health checkers ask by default
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
# The endpoint label of each method a client can name (as the servicer labels its calls); any
# other name is "grpc:other", so that clients cannot grow the label set.
_ENDPOINTS = {
    **{f"/{SERVICE_NAME}/{m.name}": f"grpc:{m.name}"
       for m in rmserve_pb2.DESCRIPTOR.services_by_name["RewardService"].methods},
    **{f"/{_HEALTH.full_name}/{m.name}": f"grpc:Health.{m.name}" for m in _HEALTH.methods},
}
# A connection's calls at once; the server's total is GrpcConnectionLimits.max_concurrent_rpcs.
_STREAMS_PER_CONNECTION = 100
# The server pings a connection with calls in progress this often and drops a peer that does not
# answer in _KEEPALIVE_TIMEOUT_S: a client machine that vanished (no FIN) frees its calls.
_KEEPALIVE_S = 60
_KEEPALIVE_TIMEOUT_S = 20


@dataclass(frozen=True)
class GrpcConnectionLimits:
    """How long a gRPC client may take to open a connection, leave it idle or keep it, and how
    many connections and calls it may hold (gRPC core enforces each; see `options`)."""

    handshake_timeout_s: float  # connect to HTTP/2 preface, settings and their acknowledgement
    idle_timeout_s: float  # no call in progress (a half-sent HEADERS frame is no call yet)
    max_age_s: float  # then GOAWAY; clients reconnect transparently
    age_grace_s: float  # calls still running at max_age_s, e.g. one whose message is dripped
    max_connections: int
    max_concurrent_rpcs: int  # beyond: RESOURCE_EXHAUSTED, which clients retry

    def options(self) -> list[tuple[str, int]]:
        def ms(seconds: float) -> int:
            return max(1, round(seconds * 1000))

        return [
            ("grpc.server_handshake_timeout_ms", ms(self.handshake_timeout_s)),
            ("grpc.http2.settings_timeout", ms(self.handshake_timeout_s)),
            ("grpc.max_connection_idle_ms", ms(self.idle_timeout_s)),
            ("grpc.max_connection_age_ms", ms(self.max_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(self.age_grace_s)),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.max_concurrent_streams", _STREAMS_PER_CONNECTION),
            ("grpc.keepalive_time_ms", ms(_KEEPALIVE_S)),
            ("grpc.keepalive_timeout_ms", ms(_KEEPALIVE_TIMEOUT_S)),
        ]


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for calls to protected services without `authorization: Bearer KEY`; each
    refusal is counted and logged like any answered call."""

    def __init__(self, keys: ApiKeys, protected_services: set[str], metrics: Metrics) -> None:
        self._keys = keys
        self._protected = protected_services
        self._metrics = metrics

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

        endpoint = _ENDPOINTS.get(details.method, "grpc:other")
        request_id = request_id_from(metadata.get("x-request-id"))

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            observation = RequestObservation(self._metrics, endpoint, request_id)
            context.set_trailing_metadata((("x-request-id", request_id),))
            observation.failed("unauthorized")
            observation.answered(grpc.StatusCode.UNAUTHENTICATED.name, failed=True)
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
        limits: GrpcConnectionLimits | None = None,
    ) -> GrpcServer:
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   *(limits.options() if limits else [])]
        health_name = _HEALTH.full_name
        protected = {SERVICE_NAME, *([health_name] if protect_health else [])}
        server = grpc.aio.server(
            options=options, interceptors=[ApiKeyInterceptor(keys, protected, metrics)],
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs if limits else None,
        )
        servicer = RewardServicer(scorer, registry, metrics)
        add_reward_service(servicer, server)  # bytes that do not parse: INVALID_ARGUMENT
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
