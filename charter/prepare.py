"""Before a store: plans loaded and checked, tool registries made, requests planned.

What an interface (and :class:`~charter.Charter`) does with a plan or a request
before any run exists. Needs no store: ``charter validate`` and ``charter
plan`` use it alone. May import planning, the plan, tools, models and the
workspace; the facade (:mod:`charter.app`) re-exports its public names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .clock import Clock
from .errors import ConfigError, PlanError
from .models import Model, Retrying, RetryingModel, model_from_spec
from .plan.inputs import check_inputs
from .plan.model import Plan, load_plan
from .plan.needs import require_models
from .planning.planner import Planner, PlanningResult
from .tools import Registry, Tool, load_tools
from .workspace import Workspace, WorkspaceRegistry

ToolsLike = Registry | Iterable[Tool | str] | str | None
PlanLike = Plan | str | Path | Mapping[str, Any]


async def check_plan(plan: PlanLike, registry: Registry, model: Model | None = None, *,
                     inputs: Mapping[str, Any] | None = None) -> Plan:
    """A plan (file, dict or Plan) checked as :meth:`Charter.start` checks it, with no store:
    against ``registry``'s tools; if given, ``inputs`` against the tool arguments they go
    to; and for a model where ``llm`` and ``agent`` steps need one (``model``, else
    ``$CHARTER_MODEL``). Raises :class:`PlanError` or :class:`ConfigError`.

    An interface that must not create a store for a plan that cannot run (``charter run``)
    checks with this first. The MCP servers whose tools the plan names are started first,
    while the loop goes on.
    """
    await start_servers(registry, plan)
    loaded = plan_of(plan, registry)
    if inputs is not None:
        check_inputs(loaded, inputs, registry)
    require_models(loaded, model, str(plan) if isinstance(plan, str | Path) else None)
    return loaded


def plan_of(plan: PlanLike, registry: Registry | None) -> Plan:
    """``plan`` (file, dict or Plan) as a Plan over ``registry``'s tools (``None``: any tool), checked."""
    if isinstance(plan, Plan):
        return Plan.from_dict(plan.to_json(), registry)
    if isinstance(plan, str | Path):
        return load_plan(plan, registry)
    return Plan.from_dict(dict(plan), registry)


async def plan_request(request: str, registry: Registry, model: Model | None = None, *, clock: Clock | None = None,
                       on_retry: Callable[[Retrying], None] | None = None) -> PlanningResult:
    """Ask ``model`` (default: ``$CHARTER_MODEL``) for a plan of ``request`` over ``registry``'s
    tools, checked and repaired if needed; needs no store (:meth:`Charter.plan` is this with the
    app's tools, model and clock). A model call that fails for a while is retried, each wait
    told to ``on_retry`` (default: the ``charter.models`` logger)."""
    retrying = RetryingModel(model or model_from_spec(None), clock=clock, on_retry=on_retry)
    return await Planner(retrying, registry).plan(request)


def make_registry(tools: ToolsLike, workspace: Workspace | None = None) -> Registry:
    """A registry from tool objects, tool files/modules, or both, plus a workspace's tools and MCP servers.

    Tool objects defined in an importable module record that module as their
    source, so a later process can load them again to resume a run.
    """
    registry = _registry(tools)
    if workspace is not None and not isinstance(registry, WorkspaceRegistry):
        registry = workspace.registry(registry)
    return registry


def _registry(tools: ToolsLike) -> Registry:
    if tools is None:
        return Registry()
    if isinstance(tools, Registry):
        return tools
    if isinstance(tools, str):
        tools = [tools]
    objects: list[Tool] = []
    sources: list[str] = []
    for t in tools:
        if isinstance(t, Tool):
            objects.append(t)
        elif isinstance(t, str | Path):
            sources.append(str(t))
        else:
            raise ConfigError(f"not a tool or tool source: {t!r}")
    registry = load_tools(sources) if sources else Registry()
    for t in objects:
        registry.add(t)
        module: str = getattr(t.fn, "__module__", None) or "__main__"
        top_level = getattr(sys.modules.get(module), t.fn.__name__, None) is t
        importable = top_level and module != "__main__" and not module.startswith("_charter_tools_")
        if importable and module not in registry.sources:
            registry.sources.append(module)
    return registry


async def start_servers(registry: Registry, plan: PlanLike) -> None:
    """Start the MCP servers whose tools ``plan`` names while the loop goes on: checking the plan
    then finds their tools there, without waiting on the loop for a server to start."""
    if not registry.unstarted:
        return
    try:
        names: list[str] | None = [n for s in plan_of(plan, None).steps for n in s.tool_names()]
    except PlanError:
        names = None  # the check after reports every problem, tools too: all of them are needed
    await registry.start(names)
