"""The base of the engagement API's request documents."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Request documents: SegmentFlow's camelCase field names, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False)

    def doc(self) -> dict[str, Any]:
        """The fields the client sent, by their API names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
