"""Other serving projects' HTTP APIs (vLLM's pooling routes, Hugging Face TEI's), answered by the
same Scorer as rmserve's own routes: their clients point at rmserve unchanged. Each project's
routes are one router module; their wire models are our own, written from those projects' docs."""
