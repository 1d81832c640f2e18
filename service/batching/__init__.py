"""Dynamic batching: a pure policy choosing the next batch, and the loop that runs it."""
