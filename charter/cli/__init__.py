"""The `charter` command: run plans, and inspect and steer runs.

Exit codes: 0 the run succeeded (or the command worked), 1 the run failed,
2 bad input (an invalid plan, an unknown run, bad options), 3 the run was
paused or cancelled, 130 interrupted with Ctrl-C (the run is paused).

The commands live by concern: ``runs`` (run, resume, retry, rerun, pause,
cancel), ``inspecting`` (runs, watch, show, effects), ``planning`` (plan, do,
from . import replay as replay
from . import web as web
"""

from __future__ import annotations

# isort: off
# Importing a command module registers its commands: in this order `charter --help` lists them.
from . import runs as runs
from . import inspecting as inspecting
from . import planning as planning
from . import checks as checks
from . import fleet as fleet
from . import history as history
from . import replay as replay
from . import web as web

# isort: on
from .shared import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
