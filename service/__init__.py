"""rmserve: a reward-model scoring service."""
