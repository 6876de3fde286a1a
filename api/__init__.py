"""The HTTP API (FastAPI): routers, auth dependencies, the error envelope.

Path parameters typed ``{name:int}`` match at most 19 digits, which covers every id SQLite's INTEGER
can hold. Starlette's own convertor matches any run of digits and calls ``int()`` on it, which raises
past 4,300 digits (CPython's limit on decimal conversion): a 500 from the router itself. A longer
number cannot name a resource, so here it is no route match, i.e. a 404. The convertor is set in this
package's ``__init__`` because Starlette keeps convertors in one table per process and a route reads
it when its router module is imported: this runs before any of them.
"""
from starlette.convertors import IntegerConvertor, register_url_convertor


class _IdConvertor(IntegerConvertor):
    regex = "[0-9]{1,19}"


register_url_convertor("int", _IdConvertor())
