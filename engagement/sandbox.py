"""The template sandbox: Jinja2's ``ImmutableSandboxedEnvironment`` with a bound on what one render costs.

Templates are written by tenants. Jinja2's sandbox keeps them away from Python internals and bounds
``range()`` (MAX_RANGE), but not cost: ``{{ (10**(4*10**6)) > 5 }}`` is one C-level operation that holds
the GIL for seconds, and ``'a' * 10**9`` or a list that holds itself twice, twenty times over, is a
gigabyte. So, on top of the sandbox:

- Compiling never evaluates a tenant expression (no constant folding, ``finalize`` takes the context,
  ``{% autoescape %}`` is decided at run time): it costs what the source's size costs.
- Every operator, call, filter, loop item and output is a step of the render's budget
  (``render_limits``): at most MAX_STEPS steps and a wall-time deadline.
- An operation that would make a huge value is refused *before* it runs: ``**`` and ``*`` beyond
  MAX_INT_BITS, and beyond MAX_CHARS characters: ``*`` on strings and lists, ``~``, ``%`` and
  ``str.format``, the filters and ``str`` methods that amplify their input (``center``, ``indent``,
  ``wordwrap``, ``join``, ``replace``, ``format``, ``ljust``, ``zfill``, ``expandtabs``, ...).
- Every result is checked after it is made: no string over MAX_CHARS, no container whose printed
  size is over MAX_CHARS (a nested reference counts each time it would print), no number over
  MAX_INT_BITS; and everything made counts towards MAX_PRODUCED per render.
- The output of a part, and of every captured block (macro, ``{% set %}`` block, ``{% filter %}``,
  ``self.block()``), stops at MAX_CHARS.

A render that would exceed a limit raises RenderLimit (a ``SecurityError``). The limits are
approximate by design (a printed size is an estimate), but each is a hard upper bound on the work.
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import abc
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from string import Formatter
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

MAX_CHARS = 2_000_000          # the longest string (or printed container) a render makes; also a part's output
MAX_PRODUCED = 10 * MAX_CHARS  # characters and container slots one render may make in all
MAX_INT_BITS = 4096            # the largest number (about 1,233 digits)
MAX_STEPS = 1_000_000          # operators, calls, filters, loop items and outputs in one render
RENDER_SECONDS = 2.0           # wall time of one render (all its parts)
MAX_JSON_INDENT = 16
_FLOAT_CHARS = 320             # the most characters one float formats to with %f or {:f}


class RenderLimit(SecurityError):
    """A render refused because it would exceed a limit; ``part`` names the template part when known."""

    def __init__(self, message: str, part: str | None = None):
        super().__init__(f"{part}: {message}" if part else message)
        self.reason = message
        self.part = part


class _Budget:
    __slots__ = ("deadline", "steps", "produced")

    def __init__(self) -> None:
        self.deadline = time.monotonic() + RENDER_SECONDS
        self.steps = MAX_STEPS
        self.produced = MAX_PRODUCED

    def check(self) -> None:
        if self.steps < 0:
            raise RenderLimit(f"more than {MAX_STEPS:,} steps (operators, calls, filters, loop items and outputs)")
        if time.monotonic() > self.deadline:
            raise RenderLimit(f"rendering took longer than {RENDER_SECONDS:g} seconds")


_BUDGET: ContextVar[_Budget | None] = ContextVar("segops_render_budget", default=None)


class render_limits:  # noqa: N801 - used like a function: ``with render_limits():``
    """The budget of one render. Refused on an event loop: a render is CPU work, and on the loop it
    would stall every request of every tenant (render in a worker thread)."""

    def __enter__(self) -> None:
        if asyncio._get_running_loop() is not None:  # the non-raising form of get_running_loop
            raise RuntimeError("templates must not be rendered on the event loop; render in a worker thread")
        self._token = _BUDGET.set(_Budget())

    def __exit__(self, *exc) -> None:
        _BUDGET.reset(self._token)


def _step() -> None:
    """One step of the current render (none outside a render: the size checks hold there too)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.steps -= 1
        if not budget.steps & 63:  # the clock is read every 64 steps
            budget.check()


def _charge(amount: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.produced -= amount
        if budget.produced < 0:
            raise RenderLimit(f"more than {MAX_PRODUCED:,} characters and items made in one render")


def _at_most(estimate: int, what: str) -> None:
    if estimate > MAX_CHARS:
        raise RenderLimit(f"{what} would make more than {MAX_CHARS:,} characters")


def _int(value: Any, default: int = 0) -> int:
    """A size argument as an int (anything else: the operation itself raises its TypeError)."""
    return value if isinstance(value, int) else default


def printed_size(value: Any) -> int:
    """About how many characters ``str(value)`` makes, counted only up to just past MAX_CHARS.

    A container counts what it would print: a nested reference counts each time it appears, so
    ``[a, a]`` counts ``a`` twice (the walk stops once past the limit, so it stays cheap)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= MAX_CHARS:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, (list, tuple)):
            total += 2 + 2 * len(item)
            if total <= MAX_CHARS:
                stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, (dict, abc.Mapping)):  # the concrete type first: ABC checks are slow
            total += 2 + 2 * len(item)
            if total <= MAX_CHARS:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, (abc.Set, abc.MappingView)):
            total += 2 + 2 * len(item)
            if total <= MAX_CHARS:
                stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)
        else:
            total += 4
    return total


_CONTAINERS = (list, tuple, abc.Mapping, abc.Set, Namespace)


def checked(value: Any) -> Any:
    """An operation's result, refused when over a limit and charged to the render's budget."""
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise RenderLimit(f"a number of more than {MAX_INT_BITS:,} bits")
    elif isinstance(value, (str, bytes)):
        _at_most(len(value), "a string")
        _charge(len(value))
    elif isinstance(value, _CONTAINERS):
        _at_most(printed_size(value), "a container")
        _charge(len(value) if isinstance(value, abc.Sized) else 1)
    return value


def bounded_join(pieces: Iterable[str]) -> str:
    """``"".join`` that stops at MAX_CHARS: a part's output, and every captured block's."""
    out: list[str] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_CHARS:
            raise RenderLimit(f"more than {MAX_CHARS:,} characters of output")
        out.append(piece)
    _charge(total)
    return "".join(out)


# -- operators ------------------------------------------------------------------------------
def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1 \
            and (base.bit_length() - 1) * exponent > MAX_INT_BITS:
        raise RenderLimit(f"** would make a number of more than {MAX_INT_BITS:,} bits")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(times, int) and isinstance(seq, (str, bytes, list, tuple)):
            if times > 0 and printed_size(seq) * times > MAX_CHARS:
                raise RenderLimit(f"* would make more than {MAX_CHARS:,} characters or items")
            return
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() - 1 > MAX_INT_BITS:
        raise RenderLimit(f"* would make a number of more than {MAX_INT_BITS:,} bits")


_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[#0+ -]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _check_percent(form: Any, args: Any) -> None:
    """``form % args`` estimated spec by spec: each prints its width, precision and argument."""
    if not isinstance(form, str):
        return
    mapping = args if isinstance(args, abc.Mapping) else None
    values = args if isinstance(args, tuple) else (args,)
    estimate, position = len(form), 0
    for match in _PERCENT_SPEC.finditer(form):
        key, width, precision, kind = match.groups()
        if kind == "%":
            continue
        if "*" in (width, precision):
            raise RenderLimit("'*' widths in % formatting are not supported in templates")
        if key is not None:
            value = mapping.get(key) if mapping is not None else None
        else:
            value = values[position] if position < len(values) else None
            position += 1
        estimate += int(width or 0) + int(precision or 0) + _formatted_size(value)
    _at_most(estimate, "% formatting")


def _formatted_size(value: Any) -> int:
    return _FLOAT_CHARS if isinstance(value, float) else printed_size(value)


def _check_format(form: str, args: tuple, kwargs: abc.Mapping) -> None:
    """``form.format(*args, **kwargs)`` estimated field by field (each as large as the largest argument)."""
    largest = max(map(_formatted_size, (*args, *kwargs.values())), default=0)
    estimate = 0
    for literal, field, spec, _ in Formatter().parse(form):
        estimate += len(literal)
        if field is not None:
            if spec and "{" in spec:
                raise RenderLimit("nested fields in format specs are not supported in templates")
            estimate += largest + _FLOAT_CHARS + sum(int(n) for n in re.findall(r"\d+", spec or ""))
    _at_most(estimate, "str.format")


_BINOP_CHECKS = {"**": _check_power, "*": _check_repeat, "%": _check_percent}


def _check_concat(operands: tuple) -> tuple:
    """The operands of ``a ~ b ~ ...``, refused before they are joined if the result would be too long."""
    total = sum(map(printed_size, operands))
    _at_most(total, "~")
    _charge(total)
    return operands


# -- calls: str methods that amplify their receiver -----------------------------------------
def _check_method(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a ``str``/``bytes`` (or ``int.to_bytes``) call whose result would be too long; returns
    the arguments to call with (``join`` gets its iterable as a list, counted once)."""
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if isinstance(owner, int) and name == "to_bytes":
        _at_most(_int(args[0] if args else kwargs.get("length", 1)), "int.to_bytes")
        return args
    if not isinstance(owner, (str, bytes)):
        return args
    size = len(owner)
    if name in ("center", "ljust", "rjust", "zfill") and args:
        estimate = max(size, _int(args[0]))
    elif name == "expandtabs":
        tabsize = _int(args[0] if args else kwargs.get("tabsize", 8), 8)
        estimate = size + owner.count("\t" if isinstance(owner, str) else b"\t") * tabsize
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = _int(args[2] if len(args) > 2 else kwargs.get("count", -1), -1)
        hits = owner.count(old) if old else size + 1
        estimate = size + (hits if count < 0 else min(hits, count)) * printed_size(new)
    elif name == "join" and args:
        items = list(args[0])
        estimate = size * max(len(items) - 1, 0) + sum(map(printed_size, items))
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], abc.Mapping):
        longest = max((printed_size(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        estimate = size * max(longest, 1)
    else:
        return args
    _at_most(estimate, f"str.{name}")
    return args


# -- filters: each amplifying filter estimates its result before it runs ---------------------
def _center(value, width=80):
    _at_most(max(printed_size(value), _int(width)), "center")
    return value


def _indent(s, width=4, first=False, blank=False):
    prefix = len(width) if isinstance(width, str) else _int(width)
    _at_most(printed_size(s) + (str(s).count("\n") + 1) * prefix, "indent")
    return s


def _wordwrap(s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True):
    # textwrap never makes two consecutive lines shorter than ``width`` together, so a line of n
    # characters wraps into at most 2n/width + 1 lines.
    text = str(s)
    breaks = 2 * len(text) // max(_int(width, 1), 1) + 2 * (text.count("\n") + 1)
    _at_most(len(text) + breaks * len(str(wrapstring or "\n")), "wordwrap")
    return s


def _join(value, d="", attribute=None):
    items = list(value)
    _at_most(printed_size(d) * max(len(items) - 1, 0) + sum(map(printed_size, items)), "join")
    return items


def _replace(s, old, new, count=None):
    text, old = str(s), str(old)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _at_most(len(text) + hits * len(str(new)), "replace")
    return s


def _format(value, *args, **kwargs):
    _check_percent(str(value), kwargs or args)
    return value


def _batch(value, linecount, fill_with=None):
    if fill_with is not None:
        _at_most(_int(linecount) * (printed_size(fill_with) + 2), "batch")
    return value


def _slice(value, slices, fill_with=None):
    per_slice = 4 + (printed_size(fill_with) + 2 if fill_with is not None else 0)
    _at_most(_int(slices) * per_slice, "slice")
    return value


def _sum(iterable, attribute=None, start=0):
    if not isinstance(start, (int, float)):  # summing lists or tuples copies them over and over
        raise RenderLimit("sum starts from a number in templates")
    return iterable


def _urlize(value, trim_url_limit=None, nofollow=False, target=None, rel=None, extra_schemes=None):
    text = str(value)
    per_link = len(str(target or "")) + len(str(rel or "")) + 64
    _at_most(3 * len(text) + (len(text.split()) + 1) * per_link, "urlize")
    return value


def _tojson(value, indent=None):
    width = len(indent) if isinstance(indent, str) else _int(indent)
    if width > MAX_JSON_INDENT:
        raise RenderLimit(f"tojson indent of more than {MAX_JSON_INDENT}")
    return value


_FILTER_CHECKS = {"center": _center, "indent": _indent, "wordwrap": _wordwrap, "join": _join, "replace": _replace,
                  "format": _format, "batch": _batch, "slice": _slice, "sum": _sum, "urlize": _urlize,
                  "tojson": _tojson}


def _bounded_filter(name: str, func):
    """``func`` as a step of the budget, its result checked; an amplifying filter is estimated first
    (its check takes the filter's arguments after the one Jinja passes, and returns the value)."""
    check = _FILTER_CHECKS.get(name)
    passed = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        if check is not None and len(args) > passed:
            value = check(*args[passed:], **kwargs)
            args = (*args[:passed], value, *args[passed + 1:])
        return checked(func(*args, **kwargs))

    return bounded


# -- globals --------------------------------------------------------------------------------
def _range(*args: int) -> range:
    """``range()`` bounded like Jinja2's sandbox bounds it (MAX_RANGE items), refused as a render limit."""
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:
        count = MAX_RANGE + 1
    if count > MAX_RANGE:
        raise RenderLimit(f"range() of more than {MAX_RANGE:,} items")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    _at_most(_int(n) * _int(max) * 14, "lipsum")
    return generate_lorem_ipsum(n, html, min, max)


@pass_context
def _finalize(context, value: Any) -> Any:
    """Every ``{{ }}`` output is a step. Taking the context keeps Jinja from evaluating outputs at compile time."""
    _step()
    return value


# -- the environment ------------------------------------------------------------------------
class _CodeGenerator(CodeGenerator):
    """Generated code with the budget's checks: each for-loop's items are steps, every ``~`` and
    every list/tuple/dict display is checked."""

    def visit_For(self, node: nodes.For, frame) -> None:
        iterable = node.iter
        node.iter = nodes.Call(nodes.EnvironmentAttribute("loop_items"), [iterable], [], None, None,
                               lineno=iterable.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = iterable

    def _checked_display(self, visit, node, frame) -> None:
        self.write("environment.checked(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node, frame) -> None:
        self._checked_display(super().visit_List, node, frame)

    def visit_Dict(self, node, frame) -> None:
        self._checked_display(super().visit_Dict, node, frame)

    def visit_Tuple(self, node, frame) -> None:
        if node.ctx == "load":
            self._checked_display(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def visit_Concat(self, node, frame) -> None:
        # Jinja2's visit_Concat, with the operands checked before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.concat_operands((")
        for operand in node.nodes:
            self.visit(operand, frame)
            self.write(", ")
        self.write(")))")

    def visit_EvalContextModifier(self, node, frame) -> None:
        frame.eval_ctx.volatile = True  # decide {% autoescape expr %} at run time, not by evaluating expr now
        super().visit_EvalContextModifier(node, frame)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox every template renders in (see the module docstring). Immutable, because a list
    grown in place (``append``, ``extend``) would slip past every size check."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)
    intercepted_unops = frozenset(ImmutableSandboxedEnvironment.default_unop_table)
    concat = staticmethod(bounded_join)
    checked = staticmethod(checked)
    concat_operands = staticmethod(_check_concat)

    def __init__(self, **options: Any):
        super().__init__(optimized=False, finalize=_finalize, **options)
        self.globals.update(range=_range, lipsum=_lipsum)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}

    @staticmethod
    def loop_items(iterable: Iterable) -> Iterator:
        for item in iterable:
            _step()
            yield item

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _step()
        check = _BINOP_CHECKS.get(operator)
        if check is not None:
            check(left, right)
        return checked(super().call_binop(context, operator, left, right))

    def call_unop(self, context, operator: str, arg: Any) -> Any:
        _step()
        return checked(super().call_unop(context, operator, arg))

    def call(self, context, obj, /, *args: Any, **kwargs: Any) -> Any:
        _step()
        args = _check_method(obj, args, kwargs)
        return checked(super().call(context, obj, *args, **kwargs))

    def wrap_str_format(self, value: Any):
        """``str.format``/``format_map`` (sandboxed by Jinja2), estimated before they run."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        form, is_map = value.__self__, value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_map:
                _check_format(form, (), args[0] if args and isinstance(args[0], abc.Mapping) else {})
            else:
                _check_format(form, args, kwargs)
            return wrapped(*args, **kwargs)

        return functools.update_wrapper(bounded, wrapped)
