"""Query backends: one compiler, thin engines (design 13, section 2).

``base`` is the interface, ``relations`` the one lake-to-relation builder every backend shares,
``duckdb`` the embedded default, ``registry`` picks one by name. Above this package there are
sqlglot trees only; engine-specific SQL text, reader options and sessions live in a backend's
own package.
"""
