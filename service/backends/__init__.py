"""Model backends: each turns an already-tokenised batch into one reward per row."""
