"""Errors that point at the offending field of a segment definition.

The API turns a ``DefinitionError`` into its 4xx error envelope, so every
error carries the JSON path of the field (``definition.conditions[1].operator``)
and a stable machine-readable code next to the human message.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. "definition.conditions[1].operator"
    message: str  # e.g. "expected one of gt, gte, lt, lte"
    code: str  # stable, e.g. "invalid_operator"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DefinitionError(ValueError):
    """A definition is invalid, or invalid against the lake schema it is compiled for."""

    def __init__(self, errors: list[FieldError]):
        if not errors:
            raise ValueError("DefinitionError needs at least one FieldError")
        self.errors = list(errors)
        super().__init__("; ".join(str(error) for error in self.errors))

    @classmethod
    def single(cls, path: str, message: str, code: str) -> DefinitionError:
        return cls([FieldError(path, message, code)])

    @property
    def code(self) -> str:
        """The code of the first error: what an API envelope reports as its top-level code."""
        return self.errors[0].code
