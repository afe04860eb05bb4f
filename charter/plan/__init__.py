"""The plan: steps, their tools and arguments, what depends on what, and checking it all.

A plan is data: it imports nothing above it (no engine, no store), only the
tool catalogue it is checked against. ``spec`` is the plan file's format and
reads YAML, ``model`` holds ``Plan`` and ``Step`` and compiles a plan from a
file or a dict, ``refs`` the ``${...}`` references between steps, ``inputs``
the run's inputs, ``needs`` what models a plan needs, ``diff`` a plan beside
its revision.
"""

from .model import ID_RULE, Plan, Step, load_plan, parse_plan_text, plan_to_text

__all__ = ["ID_RULE", "Plan", "Step", "load_plan", "parse_plan_text", "plan_to_text"]
