"""The web interface, ``charter ui``: a page and a JSON API over a store's runs, live.

``server`` builds the app (routes, errors, the page), ``safety`` guards it (the token,
actions only from the page, redaction of every secret), ``views`` shapes runs and steps
as JSON, ``runs`` filters and pages the runs list, ``live`` streams a run's events as
server-sent events, ``actions`` carries out what a person asks (through the facade, as
the CLI does). ``static/`` holds the page: plain HTML, CSS and ES modules, and the dagre
layout library vendored by scripts/vendor-web-assets.

Like the CLI, it goes through :class:`~charter.Charter` only: it imports the facade, the
report types, the events and the workspace's redaction, never the engine or the store
(tests/unit/test_architecture.py holds it to that). It reads and watches; it never
slows a run.
"""

from __future__ import annotations

from .server import create_app

__all__ = ["create_app"]
