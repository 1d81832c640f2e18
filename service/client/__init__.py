"""Python client for rmserve (no torch needed): RewardClient, AsyncRewardClient, TRL reward functions."""

from service.client.client import AsyncRewardClient, RewardClient
from service.client.errors import (
    RewardError,
    RewardRequestError,
    RewardTimeoutError,
    RewardUnavailableError,
)
from service.client.transports import Ranking
from service.client.trl import AsyncRmserveReward, RmserveReward

__all__ = [
    "AsyncRewardClient",
    "AsyncRmserveReward",
    "Ranking",
    "RewardClient",
    "RewardError",
    "RewardRequestError",
    "RewardTimeoutError",
    "RewardUnavailableError",
    "RmserveReward",
]
