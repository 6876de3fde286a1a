"""Pydantic request bodies (HTTP types live in api/ only); the engine receives plain dicts."""
