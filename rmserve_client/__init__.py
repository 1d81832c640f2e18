"""Python client for rmserve (no torch needed): RewardClient, AsyncRewardClient, TRL reward functions."""

from rmserve_client.client import AsyncRewardClient, RewardClient
from rmserve_client.errors import (
    RewardAuthError,
    RewardError,
    RewardRequestError,
    RewardTimeoutError,
    RewardUnavailableError,
)
from rmserve_client.transports import Ranking
from rmserve_client.trl import AsyncRmserveReward, RmserveReward

__all__ = [
    "AsyncRewardClient",
    "AsyncRmserveReward",
    "Ranking",
    "RewardAuthError",
    "RewardClient",
    "RewardError",
    "RewardRequestError",
    "RewardTimeoutError",
    "RewardUnavailableError",
    "RmserveReward",
]
