"""The write-step rule: which steps of a plan may change the world, and which of them a policy lets run unreviewed."""

from __future__ import annotations

import fnmatch

from ..plan.model import Plan
from ..plan.refs import has_refs
from ..tools import Registry
from ..workspace import Policy


def write_steps(plan: Plan, registry: Registry) -> list[str]:
    """The steps that may change the world: a ``write`` tool, or an agent allowed one."""
    out = []
    for s in plan.steps:
        if any((t := registry.get(n)) is not None and t.effect == "write" for n in s.tool_names()):
            out.append(s.id)
    return out


def writes_needing_review(plan: Plan, registry: Registry, policy: Policy) -> list[str]:
    """The write steps that ``policy`` does not allow as they stand (so a person must review the plan).

    A target that comes from another step's output (``${...}``) is not known
    yet, so the step needs review unless the rule allows the tool everywhere;
    an agent step needs a rule without a target for each write tool it may call.
    """
    out = []
    for s in plan.steps:
        if s.id not in write_steps(plan, registry):
            continue
        if s.kind == "agent":
            tools = [t for n in s.args.get("tools", ()) if (t := registry.get(n)) is not None and t.effect == "write"]
            if not all(any(r.target is None and fnmatch.fnmatchcase(t.name, r.tool) for r in policy.allow)
                       for t in tools):
                out.append(s.id)
            continue
        tool = registry.get(s.tool)
        if tool is None:
            continue
        args = s.args
        if s.for_each is not None or any(has_refs(args.get(n)) for n in tool.target):
            args = {k: v for k, v in args.items() if k not in tool.target}  # targets not known until it runs
        if not policy.allows(tool, args):
            out.append(s.id)
    return out
