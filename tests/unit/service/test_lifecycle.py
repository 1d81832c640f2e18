"""Readiness of one API process among several: ready the moment the last of them has loaded."""

from __future__ import annotations

import asyncio
import multiprocessing

from service.lifecycle import Lifecycle, PeersLoaded
from service.metrics import Metrics
from service.scoring.registry import ModelRegistry
from service.settings import Settings


def test_an_api_process_turns_ready_the_moment_its_last_peer_has_loaded() -> None:
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    lifecycle = Lifecycle(Settings(), ModelRegistry(), Metrics(), peers=PeersLoaded(counter, 2))

    async def scenario() -> None:
        loading = asyncio.create_task(lifecycle.load_all([]))
        await asyncio.sleep(0.2)
        assert lifecycle.not_ready_reason == "models are still loading"  # its peer has not loaded
        PeersLoaded(counter, 2).mark_loaded()  # the peer, in another process
        assert lifecycle.not_ready_reason is None  # at once: no poll between
        assert await loading

    asyncio.run(scenario())
