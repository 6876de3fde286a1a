"""Emails over HTTP with the outbox transport: rendering, RFC 8058 headers, unsubscribe,
suppression, batch, tracking, tenancy, send permission."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import duckdb

from tests.sends_fixtures import make_template, outbox, profiles

pytest_plugins = ["tests.api_fixtures", "tests.sends_fixtures"]

USERS = {"u1": {"email": "Ann@Example.com", "first_name": "Ann", "plan": "pro"},
         "u2": {"email": "bob@example.com", "first_name": "Bob"},
         "u3": {"first_name": "NoMail"}}


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_send_renders_and_hands_off_to_outbox(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    t = make_template(client, a.headers, dataVariables=["coupon"],
                      html="<html><body><p>Hi {{ first_name }}, use {{ coupon }}</p>"
                           "<a href=\"https://shop.example/x?a=1&amp;b=2\">Shop</a></body></html>",
                      text="Hi {{ first_name }}, use {{ coupon }}", subject="Hello {{ first_name }} ✓")
    r = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1", "dataVariables": {"coupon": "C10"}},
                    headers=a.headers)
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["status"] == "sent" and sent["to"] == "ann@example.com" and sent["sentAt"].endswith("Z")
    assert sent["subject"] == "Hello Ann ✓"
    assert client.get(f"/api/emails/{sent['id']}/", headers=a.headers).json() == sent

    [msg] = outbox(data_dir)
    assert msg["To"] == "ann@example.com" and msg["Subject"] == "Hello Ann ✓"
    assert msg["Message-ID"] == f"<{sent['messageId']}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(r"<http://127\.0\.0\.1:8000/api/recipients/unsubscribe/[^>]+/>", msg["List-Unsubscribe"])
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Hi Ann, use C10" in text and "Unsubscribe: http" in text  # footer added: template has no link
    assert "Hi Ann, use C10" in html and "/api/recipients/open/" in html
    assert "https://shop.example/x" not in html  # rewritten to the click redirect

    # The click redirect leads to the original URL (HTML entities decoded) and is counted.
    click_url = re.search(r'href="(http://127\.0\.0\.1:8000/api/recipients/click/[^"]+)"', html).group(1)
    hop = client.get(_path(click_url), follow_redirects=False)
    assert hop.status_code == 302 and hop.headers["location"] == "https://shop.example/x?a=1&b=2"
    pixel = re.search(r'src="(http://127\.0\.0\.1:8000/api/recipients/open/[^"]+)"', html).group(1)
    img = client.get(_path(pixel))
    assert img.status_code == 200 and img.headers["content-type"] == "image/gif"
    after = client.get(f"/api/emails/{sent['id']}/", headers=a.headers).json()
    assert after["openCount"] == 1 and after["clickCount"] == 1 and after["openedAt"] and after["clickedAt"]
    # Forged or altered tokens are refused.
    assert client.get(_path(click_url[:-3] + "xx/"), follow_redirects=False).status_code == 404

    # Opens and clicks land in the lake as events, through the ingest WAL.
    runtime.ingest.flush_now()
    files = runtime.lake.snapshot(a.tenant_id).files
    con = duckdb.connect()
    rows = con.execute("SELECT event_type, user_id, properties FROM read_parquet(?) ORDER BY event_type",
                       [list(files)]).fetchall()
    assert [(e, u) for e, u, _ in rows] == [("email_clicked", "u1"), ("email_opened", "u1")]
    assert sent["messageId"] in rows[0][2] and "https://shop.example/x?a=1&b=2" in rows[0][2]


def test_one_click_unsubscribe_skips_marketing_but_not_transactional(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    promo = make_template(client, a.headers)
    receipt = make_template(client, a.headers, name="Receipt", purpose="transactional")
    first = client.post("/api/emails/", json={"templateId": promo["id"], "userId": "u2"}, headers=a.headers).json()
    [msg] = outbox(data_dir)
    link = msg["List-Unsubscribe"].strip("<>")
    # GET shows a form only (link scanners must not unsubscribe anyone).
    assert client.get(_path(link)).status_code == 200
    assert client.get("/api/recipients/subscription/?email=bob@example.com",
                      headers=a.headers).json()["topics"] == {}
    one_click = client.post(_path(link), content="List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status_code == 200
    status = client.get("/api/recipients/subscription/?userId=u2", headers=a.headers).json()
    assert status["topics"]["marketing"]["status"] == "unsubscribed"

    again = client.post("/api/emails/", json={"templateId": promo["id"], "userId": "u2"}, headers=a.headers).json()
    assert again["status"] == "skipped_unsubscribed" and again["skippedAt"]
    tx = client.post("/api/emails/", json={"templateId": receipt["id"], "userId": "u2"}, headers=a.headers).json()
    assert tx["status"] == "sent"
    assert len(outbox(data_dir)) == 2 and first["status"] == "sent"
    tx_msg = [m for m in outbox(data_dir) if m["Message-ID"] == f"<{tx['messageId']}>"][0]
    assert tx_msg["List-Unsubscribe"] is None  # transactional mail carries no unsubscribe header
    # A tampered link changes nothing.
    assert client.post(_path(link.replace("/unsubscribe/", "/unsubscribe/x"))).status_code == 404


def test_bounce_and_complaint_suppress_every_purpose(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    receipt = make_template(client, a.headers, name="Receipt", purpose="transactional")
    first = client.post("/api/emails/", json={"templateId": receipt["id"], "userId": "u1"}, headers=a.headers).json()
    soft = client.post("/api/recipients/feedback/", json={"type": "soft_bounce", "messageId": first["messageId"]},
                       headers=a.headers)
    assert soft.status_code == 202 and soft.json() == {"email": "ann@example.com", "type": "soft_bounce",
                                                       "suppressed": False}
    hard = client.post("/api/recipients/feedback/", json={"type": "hard_bounce", "messageId": first["messageId"]},
                       headers=a.headers).json()
    assert hard["suppressed"]
    blocked = client.post("/api/emails/", json={"templateId": receipt["id"], "to": "ann@example.com"},
                          headers=a.headers).json()
    assert blocked["status"] == "suppressed"
    client.post("/api/recipients/feedback/", json={"type": "complaint", "email": "bob@example.com"}, headers=a.headers)
    assert client.post("/api/emails/", json={"templateId": receipt["id"], "userId": "u2"},
                       headers=a.headers).json()["status"] == "suppressed"
    assert len(outbox(data_dir)) == 1
    # Tenant B's state is its own.
    status_b = client.get("/api/recipients/subscription/?email=ann@example.com", headers=tenants.b.headers).json()
    assert status_b["suppressed"] is False
    lifted = client.delete("/api/recipients/suppressions/?email=ann@example.com", headers=a.headers)
    assert lifted.status_code == 200 and lifted.json()["suppressed"] is False


def test_batch_is_validated_whole_and_reports_each_send(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    t = make_template(client, a.headers, dataVariables=["n"])
    bad = client.post("/api/emails/batch/", json={"emails": [
        {"templateId": t["id"], "userId": "u1"}, {"templateId": t["id"], "to": "not-an-address"}]}, headers=a.headers)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_email" and "emails[1].to" in bad.json()
    no_mail = client.post("/api/emails/batch/", json={"emails": [{"templateId": t["id"], "userId": "u3"}]},
                          headers=a.headers)
    assert no_mail.status_code == 422 and "emails[0].userId" in no_mail.json()
    undeclared = client.post("/api/emails/batch/", json={"emails": [
        {"templateId": t["id"], "userId": "u1", "dataVariables": {"zzz": 1}}]}, headers=a.headers)
    assert undeclared.status_code == 400 and "emails[0].dataVariables.zzz" in undeclared.json()
    assert outbox(data_dir) == [] and client.get("/api/emails/", headers=a.headers).json()["count"] == 0

    ok = client.post("/api/emails/batch/", json={"emails": [
        {"templateId": t["id"], "userId": "u1", "dataVariables": {"n": 1}},
        {"templateId": t["id"], "to": "carol@example.com"}]}, headers=a.headers)
    assert ok.status_code == 201
    assert [s["status"] for s in ok.json()["results"]] == ["sent", "sent"]
    assert sorted(m["To"] for m in outbox(data_dir)) == ["ann@example.com", "carol@example.com"]
    listed = client.get("/api/emails/?status=sent", headers=a.headers).json()
    assert listed["count"] == 2


def test_send_permission_scopes_and_tenancy(client, tenants, runtime):
    a, b = tenants.a, tenants.b
    profiles(runtime, a.tenant_id, USERS)
    t = make_template(client, a.headers)
    no_send = a.key_headers("sends:write", "templates:read", allow_sends=False)
    r = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=no_send)
    assert r.status_code == 403 and r.json()["code"] == "sends_not_allowed"
    other = client.post("/api/emails/", json={"templateId": t["id"], "to": "x@example.com"}, headers=b.headers)
    assert other.status_code == 400 and other.json()["code"] == "template_not_found"
    sent = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=a.headers).json()
    assert client.get(f"/api/emails/{sent['id']}/", headers=b.headers).status_code == 404
    reader = a.key_headers("broadcasts:read")
    assert client.get(f"/api/emails/{sent['id']}/", headers=reader).status_code == 200
    assert client.get("/api/emails/", headers=a.key_headers("templates:read")).status_code == 403
    client.post(f"/api/templates/{t['id']}/archive/", headers=a.headers)
    archived = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=a.headers)
    assert archived.status_code == 400 and archived.json()["code"] == "template_archived"


def test_brand_kit_sender_and_colors_reach_the_message(client, tenants, runtime, data_dir):
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    client.post("/api/brand-kits/", json={"name": "Main", "isDefault": True, "colors": {"primary": "#aa0000"},
                                          "sender": {"fromName": "Shop Team", "fromEmail": "team@shop.example",
                                                     "replyTo": "help@shop.example"}}, headers=a.headers)
    t = make_template(client, a.headers, html="<p style=\"color:{{ brand.colors.primary }}\">{{ unsubscribe_url }}</p>",
                      text="")
    client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=a.headers)
    [msg] = outbox(data_dir)
    assert msg["From"] == "Shop Team <team@shop.example>" and msg["Reply-To"] == "help@shop.example"
    html = msg.get_body(("html",)).get_content()
    assert "color:#aa0000" in html and "Unsubscribe</a>" not in html  # template shows its own link
    assert msg.get_body(("plain",)) is None or msg.get_content_type() == "text/html"


def test_an_open_counts_once_per_message_and_every_fetch_stays_an_event(client, tenants, runtime, data_dir):
    """The pixel of one message is fetched on every view, proxy prefetch or replay: openCount
    counts the message opened once; the lake keeps every fetch as an ``email_opened`` event."""
    a = tenants.a
    profiles(runtime, a.tenant_id, USERS)
    t = make_template(client, a.headers)
    sent = client.post("/api/emails/", json={"templateId": t["id"], "userId": "u1"}, headers=a.headers).json()
    [msg] = outbox(data_dir)
    html = msg.get_body(("html",)).get_content()
    pixel = _path(re.search(r'src="(http://127\.0\.0\.1:8000/api/recipients/open/[^"]+)"', html).group(1))
    for _ in range(3):
        assert client.get(pixel).status_code == 200
    first = client.get(f"/api/emails/{sent['id']}/", headers=a.headers).json()
    assert first["openCount"] == 1 and first["openedAt"]
    runtime.ingest.flush_now()
    files = runtime.lake.snapshot(a.tenant_id).files
    opens = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?) WHERE event_type = 'email_opened'",
                                     [list(files)]).fetchone()[0]
    assert opens == 3
