"""Typed columns for JSON properties (events) and traits (profiles).

The original JSON object always stays, losslessly, in the ``properties`` (or
``traits``) column. In addition every top-level key with a scalar value gets a
typed column, so segment queries compare numbers as numbers and read one narrow
column instead of parsing JSON.

Rules (deterministic, per tenant, recorded in the tenant's catalog):

* Kinds: a JSON number is ``number`` (stored as DOUBLE, integers included, so a
  column's type never changes between files; integers beyond 2**53 lose precision
  in the typed column only), a JSON string is ``string`` (VARCHAR), ``true``/``false``
  is ``boolean`` (BOOLEAN). ``null``, objects and arrays are JSON-only: they never
  create a typed column and read as NULL in one. Strings that look like dates or
  numbers stay strings.
* First kind wins: a property's kind is fixed by its first non-null value (within
  a batch: the first such row in input order). Later values of another kind read
  as NULL in the typed column (no coercion: ``"12"`` in a number property is NULL
  there) but remain in the JSON column. A property whose first non-null value is
  an object or array stays JSON-only for good (remembered in the catalog, so
  later batches need not look at it again); one only ever seen as null stays
  undecided.
* Column names: ``<prefix><name>`` with the name lower-cased, every character
  outside ``[a-z0-9_]`` replaced by ``_`` and cut to 48 characters; if that is
  taken (case-insensitively, DuckDB identifiers are case-insensitive), ``__2``,
  ``__3``... is appended. Assigned names never change. New names of one batch are
  assigned in sorted order.
* At most ``MAX_TYPED_COLUMNS`` typed columns per tenant; later properties are JSON-only.

Cost per batch: one parse for the key set (with each key's first row), one for the
values. A key never seen before is decided by its first row's value, read from
that row alone; only a key whose first value is null costs another full pass.

Extraction is vectorized in DuckDB: one ``json_transform`` per batch parses each
row once; the JSON text of each value tells its kind by its first character.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import orjson

KINDS = ("number", "string", "boolean")
MAX_TYPED_COLUMNS = 400
_NAME_LEN = 48
MAX_JSON_ONLY = 2000  # remembered JSON-only names; beyond this they are re-examined per batch
_JSON_TYPE_KIND = {"BIGINT": "number", "UBIGINT": "number", "DOUBLE": "number",
                   "VARCHAR": "string", "BOOLEAN": "boolean", "OBJECT": None, "ARRAY": None}
# A JSON value's first character: '"' string, t/f boolean, {/[ object/array; else a
# number (digits, '-', and the NaN/Infinity DuckDB's parser also accepts as numbers).
_FIRST_CHAR_KIND = {'"': "string", "t": "boolean", "f": "boolean", "{": None, "[": None}


@dataclass(frozen=True)
class Catalog:
    """name -> (column, kind) in assignment order, and the names decided JSON-only."""

    columns: dict[str, tuple[str, str]]
    json_only: frozenset[str] = frozenset()

    @classmethod
    def empty(cls) -> "Catalog":
        return cls({})

    @classmethod
    def from_json(cls, columns: dict, json_only: list[str] = ()) -> "Catalog":
        return cls({name: (col, kind) for name, (col, kind) in columns.items()}, frozenset(json_only))

    def to_json(self) -> dict:
        """The ``columns`` part (``json_only`` is stored separately: ``sorted(catalog.json_only)``)."""
        return {name: [col, kind] for name, (col, kind) in self.columns.items()}

    def known(self, name: str) -> bool:
        return name in self.columns or name in self.json_only

    def extended(self, new: dict[str, str | None], prefix: str) -> "Catalog":
        """A catalog with ``new`` (name -> kind, None = JSON-only) added; known names keep
        their decision."""
        columns = dict(self.columns)
        json_only = set(self.json_only)
        taken = {col.lower() for col, _ in columns.values()}
        for name in sorted(new):
            if self.known(name):
                continue
            if new[name] is None:
                if len(json_only) < MAX_JSON_ONLY:
                    json_only.add(name)
            elif len(columns) < MAX_TYPED_COLUMNS:
                column = _column_name(prefix, name, taken)
                taken.add(column)
                columns[name] = (column, new[name])
        return Catalog(columns, frozenset(json_only))


def _column_name(prefix: str, name: str, taken: set[str]) -> str:
    base = prefix + re.sub(r"[^a-z0-9_]", "_", name.lower())[:_NAME_LEN]
    column, n = base, 1
    while column in taken:
        n += 1
        column = f"{base}__{n}"
    return column


def discover(con: duckdb.DuckDBPyConnection, relation: str, json_column: str, order_column: str,
             catalog: Catalog, prefix: str) -> Catalog:
    """The catalog extended with the keys of ``relation.json_column`` it does not know yet.

    ``relation`` is a table or view name (ours, not user input); ``order_column``
    gives input order for the first-kind rule (unique per row)."""
    if len(catalog.columns) >= MAX_TYPED_COLUMNS:
        return catalog  # nothing left to decide: every new name is JSON-only
    first_rows = {key: rn for key, rn in con.execute(
        f'SELECT k, min({order_column}) FROM (SELECT unnest(json_keys("{json_column}")) AS k, {order_column} '
        f'FROM {relation}) GROUP BY k').fetchall() if not catalog.known(key)}
    if not first_rows:
        return catalog
    # Usually the first row holding a key holds a value: read only those rows. Keys
    # whose first value is null need the full pass (first non-null value per key).
    unknown = sorted(first_rows)
    found, pending = {}, []
    fields = ", ".join(f"struct_extract_at(x, {i + 1})::VARCHAR" for i in range(len(unknown)))
    values = dict(con.execute(
        f'SELECT {order_column}, [{fields}] FROM (SELECT {order_column}, json_transform("{json_column}", ?) AS x '
        f'FROM {relation} WHERE {order_column} IN (SELECT unnest(?)))',
        [_structure(unknown), sorted(set(first_rows.values()))]).fetchall())
    for i, key in enumerate(unknown):
        text = values[first_rows[key]][i]
        if text is None:
            pending.append(key)
        else:
            found[key] = _kind_of_json(text)
    if pending:
        found.update(_first_kinds(con, relation, json_column, order_column, pending))
    return catalog.extended(found, prefix)


def _structure(keys: list[str]) -> str:
    """A json_transform structure reading each key as JSON text."""
    return orjson.dumps(dict.fromkeys(keys, "JSON")).decode()


def _kind_of_json(text: str) -> str | None:
    """The kind of a JSON value's text (as json_transform writes it: no leading space)."""
    return _FIRST_CHAR_KIND.get(text[0], "number")


def _first_kinds(con: duckdb.DuckDBPyConnection, relation: str, json_column: str, order_column: str,
                 keys: list[str]) -> dict[str, str | None]:
    """Kind of each key's first non-null value (keys only ever null are left out)."""
    kinds_sql = ", ".join(
        f"arg_min(json_type(struct_extract_at(x, {i + 1})), {order_column}) FILTER "
        f"(WHERE struct_extract_at(x, {i + 1}) IS NOT NULL)"  # JSON null reads as SQL NULL here
        for i in range(len(keys)))
    row = con.execute(
        f'SELECT {kinds_sql} FROM (SELECT json_transform("{json_column}", ?) AS x, {order_column} FROM {relation})',
        [_structure(keys)]).fetchone()
    return {key: _JSON_TYPE_KIND[json_type] for key, json_type in zip(keys, row) if json_type}


def typed_select(catalog: Catalog, source_sql: str, json_column: str, keep: list[str]) -> tuple[str, dict]:
    """``SELECT keep..., typed columns FROM source`` and its named parameter
    (``$typed_structure``; ``source_sql`` may use other named parameters).

    Each catalogued key is extracted once with ``json_transform`` (one parse per row)
    as JSON text; its first character tells the kind: ``"`` string, ``t``/``f``
    boolean, ``-``/digit number. Mismatched kinds become NULL."""
    keep_sql = ", ".join(f'"{c}"' for c in keep)
    if not catalog.columns:
        return f"SELECT {keep_sql} FROM ({source_sql})", {}
    names = list(catalog.columns)
    structure = _structure(names)
    raw = ", ".join(f"struct_extract_at(__x, {i + 1})::VARCHAR AS __v{i}" for i in range(len(names)))
    typed = ", ".join(
        f'{_typed_expr(f"__v{i}", catalog.columns[name][1])} AS "{catalog.columns[name][0]}"'
        for i, name in enumerate(names))
    sql = (f"SELECT {keep_sql}, {typed} FROM ("
           f"SELECT *, {raw} FROM (SELECT *, json_transform(\"{json_column}\", $typed_structure) AS __x FROM ({source_sql})))")
    return sql, {"typed_structure": structure}


def _typed_expr(v: str, kind: str) -> str:
    # The first character by its code point (ascii): cheaper than comparing substrings.
    if kind == "number":  # '-' or a digit
        return f"CASE WHEN ascii({v}) BETWEEN 48 AND 57 OR ascii({v}) = 45 THEN {v}::DOUBLE END"
    if kind == "boolean":
        return f"CASE {v} WHEN 'true' THEN true WHEN 'false' THEN false END"
    if kind == "string":  # '"'
        # Fast path: no escapes -> strip the quotes; otherwise let the JSON parser unescape.
        return (f"CASE WHEN ascii({v}) = 34 THEN (CASE WHEN contains({v}, '\\') "
                f"THEN json_extract_string({v}, '$') ELSE {v}[2:-2] END) END")
    raise ValueError(f"unknown kind {kind!r}")
