"""The engagement layer: templates, brand kits, assets, recipients, emails, journeys, broadcasts.

Reach it through ``runtime.sends`` (engagement/service.py). Modules:
  templates, brand, assets      content and its building blocks
  recipients, engagement        subscription state, suppressions, signed links, opens/clicks
  outbound, dispatch, transport, mime   durable EmailSends and the at-most-once hand-off
  emails, idempotency           the emails API and Idempotency-Key handling
  journeys/                     model (the document), store (CRUD, versions), runner (entry, advancing runs)
"""
