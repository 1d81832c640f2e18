"""The HTTP transport: FastAPI routes over the scoring core."""
