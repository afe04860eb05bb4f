"""Replaying a recorded run offline with today's code, and reporting where it now decides otherwise.

``runner`` drives today's engine on a throwaway in-memory store, ``feed`` answers
its model and tool calls from the run's log (a write tool is never called),
``recording`` reads a log into attempts keyed for the comparison, ``compare``
finds the divergences, ``report`` holds them (:class:`ReplayReport`).

A core layer beside the engine and planning: it may import them and everything
below (plan, store, tools, models, workspace, events); only the facade imports it.
"""

from .report import Divergence, ReplayReport
from .runner import replay_run

__all__ = ["Divergence", "ReplayReport", "replay_run"]
