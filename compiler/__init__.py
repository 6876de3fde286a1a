"""Segment compiler: definition model -> sqlglot AST -> SQL in any dialect. Pure: no I/O.

Semantics of the definition language: see ``compiler.model``.
"""
from .compile import EVENT_DATES, compile_segment
from .dialects import DIALECTS, to_sql
from .errors import DefinitionError, FieldError
from .model import Definition, definition_json_schema, parse_definition
from .schema import EventsRelation, LakeSchema, ProfilesRelation, TypedColumn

__all__ = [
    "LakeSchema", "EventsRelation", "ProfilesRelation", "TypedColumn",
    "Definition", "DefinitionError", "FieldError", "parse_definition", "compile_segment", "EVENT_DATES", "to_sql",
    "definition_json_schema", "DIALECTS",
]
