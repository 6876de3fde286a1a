"""What one template render may cost (engagement/sandbox.py): refused at save when the template is
too expensive whatever the data, at preview and per send when it is with the given data; normal
templates render as Jinja2's own sandbox renders them; rendering refuses to run on an event loop."""
from __future__ import annotations

import asyncio
import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import ChainableUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from engagement.sandbox import MAX_CHARS
from engagement.templates import CompiledContent, Content
from tests.sends_fixtures import make_template

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

ISSUE_PROBE = "{{ (10**(4*10**6)) > 5 }}"

# Too expensive whatever the data: each is refused when saved.
CONSTANT_PROBES = {
    "power": ISSUE_PROBE,
    "power_chain": "{{ 9 ** 9 ** 9 ** 9 ** 9 }}",
    "string_repeat": "{{ 'a' * 10**9 }}",
    "list_repeat": "{{ [1] * 10**9 }}",
    "int_product": "{{ (2**4000) * (2**4000) }}",
    "range": "{{ range(10**9)|length }}",
    "range_beyond_ssize": "{{ range(10**30)|length }}",
    "nested_loops_output": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "nested_loops_steps": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "captured_output": "{% set x %}{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}{% endset %}{{ x|length }}",
    "percent_width": "{{ '%999999999s' % 'a' }}",
    "percent_repeat": "{{ ('%(a)s' * 100000) % {'a': 'x' * 100} }}",
    "format_filter": "{{ '%999999999d'|format(1) }}",
    "str_format_width": "{{ '{:>999999999}'.format(1) }}",
    "str_format_nested": "{{ '{:{}}'.format(1, 999999999) }}",
    "center": "{{ 'a'|center(999999999) }}",
    "indent": "{{ ('a\\n' * 100000)|indent('x' * 100) }}",
    "wordwrap": "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 100) }}",
    "join": "{{ range(100000)|join('x' * 100) }}",
    "replace": "{{ ('a' * 100000)|replace('a', 'x' * 100) }}",
    "ljust": "{{ 'a'.ljust(10**9) }}",
    "expandtabs": "{{ ('\\t' * 1000).expandtabs(10**6) }}",
    "to_bytes": "{{ (1).to_bytes(10**9, 'big') }}",
    "shared_references": "{% set ns = namespace(a=['x']) %}{% for i in range(60) %}{% set ns.a = [ns.a, ns.a] %}"
                         "{% endfor %}{{ ns.a }}",
    "concat_doubling": "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "plus_doubling": "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
                     "{% endfor %}{{ ns.s|length }}",
    "sum_of_lists": "{{ ([[1] * 100] * 1000)|sum(start=[]) }}",
    "batch_fill": "{{ [1]|batch(10**7, fill_with='x' * 1000)|list }}",
    "slice": "{{ [1]|slice(10**8)|list }}",
    "tojson_indent": "{{ [1, [2]]|tojson(indent=10**7) }}",
    "lipsum": "{{ lipsum(10**6) }}",
}

# Too expensive with the given data only: saved, then refused at preview and at send time.
DATA_PROBES = {
    "power": ("{{ (10**(4*10**n)) > 5 }}", 6),
    "string_repeat": ("{{ 'a' * n }}", 10**9),
    "list_repeat": ("{{ [1] * n }}", 10**9),
    "range": ("{% for i in range(n) %}{% endfor %}", 10**9),
    "nested_loops": ("{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}", 100000),
    "percent": ("{{ ('%(a)s' * n) % {'a': 'x' * 100} }}", 100000),
    "center": ("{{ 'a'|center(n) }}", 10**9),
    "join": ("{{ range(100000)|join('x' * n) }}", 100),
    "replace": ("{{ ('a' * 100000)|replace('a', 'x' * n) }}", 100),
}


def _error(response, status: int, part: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == "template_too_expensive" and part in body, body
    return body


@pytest.mark.parametrize("part", ["subject", "html", "text"])
def test_issue_probe_is_refused_at_save_naming_the_part(client, tenants, part):
    body = {"name": "probe", "subject": "s", "text": "t", part: ISSUE_PROBE}
    body = _error(client.post("/api/templates/", json=body, headers=tenants.a.headers), 400, part)
    assert "4,096 bits" in body[part][0]


def test_issue_probe_in_a_stored_template_is_refused_at_preview(client, tenants, runtime):
    """A template saved before saving checked its cost still previews as a clear 422."""
    h = tenants.a.headers
    t = make_template(client, h)
    runtime.sends.templates.meta.execute("UPDATE templates SET html = ? WHERE id = ?", (ISSUE_PROBE, t["id"]))
    _error(client.post(f"/api/templates/{t['id']}/preview/", json={}, headers=h), 422, "html")


@pytest.mark.parametrize("name", sorted(CONSTANT_PROBES))
def test_amplification_is_refused_at_save(client, tenants, name):
    h = tenants.a.headers
    _error(client.post("/api/templates/", json={"name": name, "subject": "s", "html": CONSTANT_PROBES[name]},
                       headers=h), 400, "html")
    t = make_template(client, h, name=name)
    r = client.patch(f"/api/templates/{t['id']}/", json={"text": CONSTANT_PROBES[name]}, headers=h)
    _error(r, 400, "text")


@pytest.mark.parametrize("name", sorted(DATA_PROBES))
def test_amplification_by_data_is_refused_at_preview(client, tenants, name):
    h = tenants.a.headers
    source, n = DATA_PROBES[name]
    t = make_template(client, h, name=name, dataVariables=["n"], text=source)
    _error(client.post(f"/api/templates/{t['id']}/preview/", json={"dataVariables": {"n": n}}, headers=h),
           422, "text")


def test_output_limit_is_enforced_at_its_boundary(client, tenants):
    h = tenants.a.headers
    t = make_template(client, h, dataVariables=["n"], html="x{{ 'a' * n }}", text="")
    fits = client.post(f"/api/templates/{t['id']}/preview/", json={"dataVariables": {"n": MAX_CHARS - 1}}, headers=h)
    assert fits.status_code == 200 and fits.json()["html"] == "x" + "a" * (MAX_CHARS - 1)
    over = client.post(f"/api/templates/{t['id']}/preview/", json={"dataVariables": {"n": MAX_CHARS}}, headers=h)
    body = _error(over, 422, "html")
    assert f"more than {MAX_CHARS:,} characters of output" in body["html"][0]


def test_a_send_over_the_limits_fails_alone_with_its_reason(client, tenants):
    h = tenants.a.headers
    t = make_template(client, h, dataVariables=["n"], subject="Hi", html="<p>{{ 'a' * n }}</p>", text="")
    r = client.post("/api/emails/batch/", headers=h, json={"emails": [
        {"templateId": t["id"], "to": "big@example.com", "dataVariables": {"n": 10**9}},
        {"templateId": t["id"], "to": "small@example.com", "dataVariables": {"n": 3}}]})
    assert r.status_code == 201, r.text
    big, small = r.json()["results"]
    assert big["status"] == "failed" and "html" in big["error"] and "2,000,000 characters" in big["error"]
    assert small["status"] == "sent"


# -- compile errors are input errors too ---------------------------------------------------------
@pytest.mark.parametrize("source", [
    "{% for loop in items %}{% endfor %}",           # parses, but the compiler refuses it
    "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",   # nested beyond the parser's recursion
    "{{ " + "9" * 5000 + " }}",                      # a number literal beyond Python's digit limit
], ids=["loop_target", "deep_nesting", "long_number"])
def test_template_that_does_not_compile_is_a_syntax_error_at_save(client, tenants, source):
    r = client.post("/api/templates/", json={"name": "x", "subject": "s", "html": source}, headers=tenants.a.headers)
    assert r.status_code == 400 and r.json()["code"] == "template_syntax_error" and "html" in r.json(), r.text


def test_stored_content_that_does_not_compile_fails_its_send_not_the_request(client, tenants, runtime):
    h = tenants.a.headers
    t = make_template(client, h)
    runtime.sends.templates.meta.execute("UPDATE templates SET html = ? WHERE id = ?",
                                         ("{% for loop in items %}{% endfor %}", t["id"]))
    r = client.post("/api/emails/", json={"templateId": t["id"], "to": "x@example.com"}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "failed" and "template syntax error" in r.json()["error"]


# -- normal templates render as Jinja2's sandbox renders them -----------------------------------
NORMAL = [
    "Hello {{ first_name }} ✓",
    "Order {{ order_id }} for {{ first_name }}",
    "{{ first_name }} / {{ plan }} / {{ coupon }}",
    "{{ missing_trait }} {{ order_id }} {{ unsubscribe_url }} {{ profile.x }}",
    "{{ first_name }} {{ n * 2 }} {{ n ** 2 }} {{ n // 3 }} {{ n % 7 }} {{ -n }} {{ n / 4 }} {{ n - 1 }}",
    '<p style="color:{{ brand.colors.primary }}">{{ unsubscribe_url }}</p>',
    "<html><body><p>Hi {{ first_name }}, use {{ coupon }}</p></body></html>",
    "{% for item in items %}{{ loop.index }}. {{ item }}{% if not loop.last %}, {% endif %}{% else %}none{% endfor %}",
    "{% for item in items if item %}{{ item|upper }}{{ loop.length }}{% endfor %}",
    "{{ items|join(', ') }} {{ items|length }} {{ items|first }} {{ items|sort|list }} {{ items|reverse|list }}",
    "{% set ns = namespace(rows=[]) %}{% for i in items %}{% set ns.rows = ns.rows + [(loop.index, i)] %}"
    "{% endfor %}{{ ns.rows }}",
    "{% macro row(k, v) %}<td>{{ k }}</td><td>{{ v }}</td>{% endmacro %}{% for k, v in data.items() %}"
    "{{ row(k, v) }}{% endfor %}",
    "{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}{{ first_name }}{% endcall %}",
    "{% set greeting %}Dear {{ first_name|title }}{% endset %}{{ greeting|trim }}!",
    "{% filter upper %}{{ first_name }} {{ plan }}{% endfilter %}",
    "{{ '%.2f'|format(price) }} {{ '{:,.2f}'.format(price) }} {{ '%s-%s' % (first_name, plan) }} {{ price|round(1) }}",
    "{{ first_name ~ ' ' ~ plan }} {{ first_name|default('friend') }} {{ coupon|default('none', true) }}",
    "{{ text|wordwrap(10) }}|{{ text|truncate(12) }}|{{ text|center(30) }}|{{ text|indent(2, true) }}",
    "{{ text|replace('a', 'A') }} {{ text|wordcount }} {{ text|striptags }} {{ text|urlize }} {{ text|e }}",
    "{{ data|tojson }} {{ data|dictsort }} {{ [1, 2, 3]|sum }} {{ range(3)|list }} {{ {'k': first_name} }}",
    "{% autoescape false %}{{ first_name }}{% endautoescape %}{{ first_name|safe }}",
    "{% if plan == 'pro' and n > 3 %}pro{% elif plan in ['free', none] %}free{% else %}other{% endif %}",
    "{{ first_name.upper() }} {{ first_name.ljust(8, '.') }} {{ text.split()|join('|') }} {{ '-'.join(items) }}",
    "{% with total = price * n %}{{ total }}{% endwith %} {{ (n, price) }} {{ items[0] if items else '' }}",
]

_strings = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_contexts = st.fixed_dictionaries({
    "first_name": _strings, "plan": st.sampled_from(["pro", "free", "<b>vip</b>"]), "coupon": _strings,
    "order_id": st.integers(-10**6, 10**6), "n": st.integers(-10**9, 10**9),
    "price": st.floats(-1e6, 1e6, allow_nan=False), "text": _strings,
    "items": st.lists(_strings, max_size=5),
    "data": st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers() | _strings, max_size=3),
    "brand": st.just({"colors": {"primary": "#123456"}}),
})


@functools.cache
def _compiled() -> list[tuple[str, CompiledContent, Template, Template]]:
    """Each normal template compiled by us and by Jinja2's stock sandbox (the reference)."""
    html_env = SandboxedEnvironment(autoescape=True, undefined=ChainableUndefined)
    text_env = SandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)
    return [(source, CompiledContent(Content("s", source, source, "marketing", "marketing")),
             html_env.from_string(source), text_env.from_string(source)) for source in NORMAL]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(context=_contexts)
def test_normal_templates_render_as_jinja2_sandbox_does(context):
    for source, content, html_reference, text_reference in _compiled():
        _, html, text = content.render(context)
        assert html == html_reference.render(context), source
        assert text == text_reference.render(context), source


def test_rendering_refuses_to_run_on_an_event_loop():
    content = CompiledContent(Content("Hi {{ first_name }}", "", "", "marketing", "marketing"))
    assert content.render({"first_name": "Ann"})[0] == "Hi Ann"  # in a thread without a loop

    async def on_the_loop():
        return content.render({"first_name": "Ann"})

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(on_the_loop())
