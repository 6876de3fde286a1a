"""The HTTP API (FastAPI): routers, auth dependencies, the error envelope."""
