"""What a scoring request costs is bounded by what is cheap to check.

A body arrives here already bounded in bytes (BodyLimitMiddleware). Before FastAPI validates it
item by item, the route counts its items and the fields of each object against the limits:
validating, and reporting, a million bad items or a million unknown keys would cost seconds of
the event loop, which every other request shares. Lists validate fail-fast (schemas.py), so
what remains is bounded by the items admitted here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from service.scoring.errors import InvalidInputError, TooManyInputsError

# The top-level field holding a route's items, and whether its items are objects.
_ITEM_FIELDS = {
    "/v1/score": ("inputs", True), "/get_reward": ("query", False), "/v1/rank": ("responses", False),
}
# More keys than any object of the API has: past this, an object's unknown keys are not listed
# one by one.
MAX_OBJECT_KEYS = 16


def check_body(body: Any, path: str, max_items: int) -> None:
    """Refuse, before validation, what would be expensive to validate: too many items, or an
    object with more keys than any of the API's (items and their messages included)."""
    if not isinstance(body, dict):
        return  # validation reports it, once
    _check_keys(body, "body")
    field, objects = _ITEM_FIELDS.get(path, (None, False))
    items = body.get(field) if field else None
    if not isinstance(items, list):
        return
    if len(items) > max_items:
        raise TooManyInputsError(
            f"{len(items)} {field} in one request; the limit is {max_items}: split the request"
        )
    if objects:
        for index, item in enumerate(items):
            if isinstance(item, dict):
                _check_keys(item, f"{field}[{index}]")
                _check_messages(item.get("messages"), f"{field}[{index}]")
                if isinstance(kwargs := item.get("chat_template_kwargs"), dict):
                    _check_keys(kwargs, f"{field}[{index}].chat_template_kwargs")
    _check_messages(body.get("messages"), "messages")


def _check_messages(messages: Any, where: str) -> None:
    if isinstance(messages, list):
        for index, message in enumerate(messages):
            if isinstance(message, dict):
                _check_keys(message, f"{where}.messages[{index}]")


def _check_keys(obj: dict[str, Any], where: str) -> None:
    if len(obj) > MAX_OBJECT_KEYS:
        shown = ", ".join(repr(str(key)[:32]) for key in list(obj)[:3])
        raise InvalidInputError(f"{where} has {len(obj)} fields ({shown}, ...); see /docs for the schema")


# Bodies from this size up are parsed off the event loop: a trainer's rollout batch (hundreds of
# MiB) takes seconds to parse, and probes and small requests must still be answered meanwhile.
_PARSE_IN_THREAD_BYTES = 1 << 20


async def parsed_json(request: Request, raw: bytes) -> Any:
    """The body's JSON (None if it does not parse), cached where Starlette's Request.json() and
    so FastAPI look for it."""
    try:
        if len(raw) < _PARSE_IN_THREAD_BYTES:
            return await request.json()
        request._json = await asyncio.to_thread(json.loads, raw)  # Request.json()'s own cache
        return request._json
    except ValueError:
        return None


class CheckedBodyRoute(APIRoute):
    """An APIRoute whose JSON body is counted (check_body) before FastAPI validates it.

    The body is parsed once: Starlette's Request caches what `json()` returned, and FastAPI
    reads it from there. A body that does not parse is left to FastAPI, which reports it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        known = {param.alias for dependant in (self.dependant, *self.dependant.dependencies)
                 for param in dependant.query_params}

        async def checked(request: Request) -> Response:
            if request.method == "POST" and (unknown := [k for k in request.query_params if k not in known]):
                # As with a body's fields: a misspelt option is reported, not silently ignored.
                shown = ", ".join(repr(name[:32]) for name in unknown[:3])
                raise InvalidInputError(f"unknown query parameter {shown}; this route takes: "
                                        f"{', '.join(sorted(known)) or 'none'}")
            if raw := await request.body():
                body = await parsed_json(request, raw)
                check_body(body, self.path, request.app.state.scorer.max_inputs_per_request)
            return await handler(request)

        return checked
