"""How runs look in a terminal: live progress, the result, tables and timelines.

The engine knows nothing of this module: :class:`Progress` is an observer the
CLI attaches to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..engine.report import ModelCall, RunReport, StepReport, preview
from ..engine.watchers import RunSnapshot
from ..events import (
    ApprovalRequested,
    Event,
    PlanRevised,
    ReplanRequested,
    RunCancelled,
    RunFailed,
    RunPaused,
    RunSucceeded,
    RunWaiting,
    StepFailed,
    StepInterrupted,
    StepSkipped,
    StepsReset,
    StepStarted,
    StepSucceeded,
)
from ..store import EffectRow, RunRow

ICONS = {
    "pending": ("·", "dim"),
    "running": ("▶", "cyan"),
    "waiting": ("↻", "yellow"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("⊘", "dim"),
    "paused": ("⏸", "yellow"),
    "cancelled": ("■", "red"),
    "awaiting": ("⏳", "yellow"),
    "rejected": ("✗", "red"),
    "replanning": ("↺", "yellow"),
    "created": ("·", "dim"),
    "interrupted": ("⚠", "yellow"),
}


def icon(status: str) -> Text:
    char, style = ICONS.get(status, ("?", ""))
    return Text(char, style=style)


def styled_status(status: str) -> Text:
    return Text(status, style=ICONS.get(status, ("", ""))[1])


def counted(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``: a count with its noun, singular or plural."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)  # a planned run's model calls are logged a moment before the run itself
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def fmt_age(ts: float, now: float | None = None) -> str:
    delta = (now or time.time()) - ts
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.0f}h ago"
    return f"{delta / 86400:.0f}d ago"


def short_json(value: Any, limit: int = 200) -> str:
    value = _unpruned(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unpruned(value: Any) -> Any:
    """``value`` with what ``charter prune`` dropped said in words: ``(pruned: 5,449 bytes)``."""
    if isinstance(value, dict):
        if set(value) == {"$pruned", "size"}:
            return f"(pruned: {value['size']:,} bytes)"
        return {k: _unpruned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpruned(v) for v in value]
    return value


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


class Progress:
    """Shows a run's progress: a live table on a terminal, one line per transition elsewhere."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live_mode = console.is_terminal if live is None else live
        self.states: dict[str, RunSnapshot] = {}  # the latest of each run
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.live_mode:
            self._live = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def __call__(self, state: RunSnapshot, events: Sequence[Event]) -> None:
        first = state.run_id not in self.states
        self.states[state.run_id] = state
        if first and not self.live_mode:
            total = len(state.steps)
            self.console.print(f"run [bold]{state.run_id}[/]: {escape(state.plan.goal)} "
                               f"({counted(total, 'step')})")
        if not self.live_mode:
            for ev in events:
                line = _event_line(state, ev)
                if line:
                    self.console.print(line, highlight=False)

    def _render(self) -> Group:
        tables = []
        now = time.time()
        for state in self.states.values():
            t = Table(title=f"{state.run_id} · {state.plan.goal}", title_justify="left",
                      show_edge=False, pad_edge=False, box=None)
            t.add_column("", width=1)
            t.add_column("step")
            t.add_column("tool", style="dim")
            t.add_column("try", justify="right")
            t.add_column("time", justify="right")
            t.add_column("note", overflow="ellipsis", no_wrap=True, max_width=60)
            for step in state.plan.steps:
                st = state.steps[step.id]
                status = st.status
                attempts = st.attempt
                note = ""
                if st.items_total is not None:
                    note = f"{st.items_done}/{st.items_total} items"
                if status == "waiting" and st.retry_at:
                    note = f"retry in {max(0.0, st.retry_at - now):.1f}s · {_error_text(st.error)}"
                elif status == "failed":
                    note = _error_text(st.error)
                elif status == "skipped":
                    note = st.reason
                end = st.finished_at or (now if st.started_at else None)
                elapsed = end - st.started_at if end and st.started_at else None
                t.add_row(icon(status), step.id, step.tool, str(attempts or ""),
                          fmt_duration(elapsed), escape(note))
            tables.append(t)
        return Group(*tables)


def _event_line(state: RunSnapshot, ev: Event) -> str | None:
    def name(step: str, item: int | None) -> str:
        return f"{step}[{item}]" if item is not None else step

    if isinstance(ev, StepStarted):
        return f"  [cyan]▶[/] {name(ev.step, ev.item)} [dim](attempt {ev.attempt})[/]"
    if isinstance(ev, StepSucceeded):
        if ev.reused_from:
            return f"  [green]✓[/] {ev.step} [dim](reused from {ev.reused_from})[/]"
        if ev.item is not None or state.plan.by_id[ev.step].for_each is not None:
            return f"  [green]✓[/] {name(ev.step, ev.item)}" if ev.item is None else None
        started = state.steps[ev.step].attempt_started_at
        took = fmt_duration(ev.at - started) if started else ""
        return f"  [green]✓[/] {ev.step} [dim]{took}[/]"
    if isinstance(ev, StepFailed):
        err = escape(_error_text(ev.error))
        if ev.retry_at is not None:
            return (f"  [yellow]↻[/] {name(ev.step, ev.item)} attempt {ev.attempt} failed: {err} "
                    f"[dim](retry in {fmt_duration(ev.retry_at - ev.at)})[/]")
        return f"  [red]✗[/] {name(ev.step, ev.item)} failed: {err}"
    if isinstance(ev, StepSkipped):
        return f"  [dim]⊘ {ev.step} skipped ({escape(ev.reason)})[/]"
    if isinstance(ev, StepInterrupted):
        what = f"{name(ev.step, ev.item)} attempt {ev.attempt}"
        return f"  [yellow]⏸[/] {what} interrupted ({escape(ev.reason)})"
    if isinstance(ev, ApprovalRequested):
        return f"  [yellow]⏳[/] {ev.step} waits for approval: {escape(ev.message)}"
    if isinstance(ev, RunWaiting):
        return f"[yellow]run {state.run_id} waits for a decision[/] on {', '.join(ev.steps)}"
    if isinstance(ev, ReplanRequested):
        return f"[yellow]replanning[/] ({escape(ev.reason)})"
    if isinstance(ev, PlanRevised):
        head = f"[cyan]plan v{ev.version}[/] by {ev.by}" + (" [bold red](needs review: adds writes)[/]"
                                                               if ev.needs_review else "")
        return head + ("\n" + escape(ev.diff) if ev.diff else "")
    if isinstance(ev, StepsReset):
        return f"  [cyan]↺[/] reset: {', '.join(ev.steps)}"
    if isinstance(ev, RunPaused):
        return f"[yellow]run {state.run_id} paused[/]: {escape(ev.reason)}"
    if isinstance(ev, RunCancelled):
        return f"[red]run {state.run_id} cancelled[/]: {escape(ev.reason)}"
    if isinstance(ev, RunFailed | RunSucceeded):
        return None  # the final summary says it
    return None


def print_outcome(console: Console, report: RunReport) -> None:
    """The end of `charter run`: the result, or what failed and how to go on."""
    took = fmt_duration((report.finished_at or report.updated_at) - report.created_at)
    rid = report.id
    if report.status == "succeeded":
        console.print(f"[green]✓[/] run [bold]{rid}[/] succeeded in {took}")
        console.print("[bold]result:[/]")
        console.print_json(json.dumps(report.output, default=str)) if not isinstance(report.output, str) \
            else console.print(escape(report.output))
        return
    if report.status == "failed":
        console.print(f"[red]✗[/] run [bold]{rid}[/] failed after {took}: {escape(report.reason)}")
        t = Table(show_edge=False, box=None, pad_edge=False)
        t.add_column("step")
        t.add_column("status")
        t.add_column("attempts", justify="right")
        t.add_column("why it failed / was skipped", overflow="fold")
        for s in report.steps:
            if s.status == "failed":
                t.add_row(s.id, styled_status("failed"), str(_tries(s)), escape(_error_text(s.error)))
            elif s.status == "skipped":
                t.add_row(s.id, styled_status("skipped"), "0", escape(s.reason))
        console.print(t)
        done = sum(1 for s in report.steps if s.status == "succeeded")
        console.print(f"{done} of {counted(len(report.steps), 'step')} succeeded.")
        failed = report.failed_steps()
        if failed:
            retries = "   ".join(f"[bold]charter retry {rid} {s.id}[/]" for s in failed)
            console.print(f"Fix the cause, then: {retries}")
        return
    if report.status == "created":
        console.print(f"[yellow]⏳[/] run [bold]{rid}[/] waits for its plan to be reviewed"
                      + (f": {escape(report.reason)}" if report.reason else ""))
        console.print(f"  see it: [bold]charter show {rid}[/]   approve: [bold]charter approve {rid}[/]   "
                      f"reject: [bold]charter reject {rid} --reason ...[/]")
        return
    if report.status == "awaiting":
        for s in report.steps:
            if s.status == "awaiting":
                console.print(f"[yellow]⏳[/] run [bold]{rid}[/] waits for a decision on [bold]{s.id}[/]: "
                              f"{escape(str((s.args or {}).get('message', '')))}")
                console.print(f"  approve: [bold]charter approve {rid} {s.id}[/]   "
                              f"reject: [bold]charter reject {rid} {s.id} --reason ...[/]")
        return
    if report.status == "paused":
        console.print(f"[yellow]⏸[/] run [bold]{rid}[/] paused: {escape(report.reason)}")
        if report.reason.startswith("budget reached"):
            console.print(f"Raise the budget to go on: [bold]charter resume {rid} --max-tokens/--max-cost/"
                          "--max-time/--max-steps ...[/]")
        else:
            console.print(f"Resume it with: [bold]charter resume {rid}[/]")
        return
    console.print(f"run [bold]{rid}[/] {styled_status(report.status)}: {escape(report.reason)}")


def _tries(s: StepReport) -> int:
    """Attempts that ran to an outcome; for a fan-out, those of its most-tried element."""
    if s.items:
        return max(_tries(i) for i in s.items)
    return len([a for a in s.attempts if a.outcome != "interrupted"])


def runs_table(rows: Sequence[RunRow]) -> Table:
    t = Table(show_edge=False, box=None, pad_edge=False)
    for col in ("run", "status", "progress", "age", "goal"):
        t.add_column(col, overflow="ellipsis", no_wrap=col != "goal")
    now = time.time()
    for r in rows:
        t.add_row(r.id, styled_status("interrupted" if r.interrupted else r.status), f"{r.steps_done}/{r.steps_total}",
                  fmt_age(r.created_at, now), escape(r.goal))
    return t


def effects_table(rows: Sequence[EffectRow]) -> Table:
    t = Table(show_edge=False, box=None, pad_edge=False)
    for col in ("when", "run", "step", "tool", "target", "key", "result"):
        t.add_column(col, overflow="ellipsis", no_wrap=col not in ("target", "result"))
    for r in rows:
        step = r.step_id if r.item is None else f"{r.step_id}[{r.item}]"
        target = ", ".join(str(x) for x in r.target)
        result = json.dumps(r.result, default=str)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at))
        t.add_row(when, r.run_id, escape(step), escape(r.tool), escape(target), escape(r.key),
                  escape(result if len(result) <= 80 else result[:77] + "..."))
    return t


def print_report(console: Console, report: RunReport) -> None:
    """`charter show`: the run, then each step's status, attempts, arguments, output, error and why."""
    took = fmt_duration((report.finished_at or report.updated_at) - report.created_at)
    shown = "interrupted" if report.interrupted else report.status
    console.print(f"[bold]run {report.id}[/] · {styled_status(shown)} · {took}"
                  + (f" · {escape(report.reason)}" if report.reason else ""))
    if report.interrupted:
        console.print(f"[yellow]nobody is running it: the process running it stopped.[/] Continue it with "
                      f"[bold]charter resume {report.id}[/] (finished steps do not run again)")
    console.print(f"[bold]goal:[/] {escape(report.goal)}")
    if report.request:
        console.print(f"[bold]request:[/] {escape(report.request)}")
    if report.versions:
        _print_versions(console, report)
    if report.tokens or report.budget or report.model_calls:
        spend = f"{report.tokens:,} model tokens, {_run_cost(report)}"
        limits = ", ".join(f"{k} {v:g}" for k, v in report.budget.items())
        console.print(f"[bold]spent:[/] {escape(spend)}" + (f" [dim](budget: {limits})[/]" if limits else ""))
    if report.parent_run:
        console.print(f"[bold]rerun of:[/] {report.parent_run}")
    if report.assumptions:
        console.print("[bold]assumptions:[/]")
        for a in report.assumptions:
            console.print(f"  - {escape(a)}")
    if report.inputs:
        console.print(f"[bold]inputs:[/] {escape(short_json(report.inputs))}")
    planner = [c for c in report.model_calls if not c.step]
    if planner:
        console.print(f"[bold]planner:[/] {counted(len(planner), 'model call')}")
        for call in planner:
            _print_call(console, call, "  ")
    console.print()
    for s in report.steps:
        head = Text.assemble(icon(s.status), " ", (s.id, "bold"), f"  {s.tool or s.kind}  ", styled_status(s.status))
        if s.duration is not None:
            head.append(f"  {fmt_duration(s.duration)}", style="dim")
        tries = _tries(s)
        if tries:
            head.append(f"  {counted(tries, 'attempt')}", style="dim")
        console.print(head)
        if s.title:
            console.print(f"    {escape(s.title)}")
        if s.why:
            console.print(f"    [dim]why:[/] {escape(s.why)}")
        if s.reused_from:
            console.print(f"    [dim]output reused from run {s.reused_from}[/]")
        if s.args is not None:
            console.print(f"    [dim]args:[/] {escape(short_json(s.args))}")
        versioned = len({a.plan_version for a in s.attempts}) > 1
        for attempt in s.attempts:
            _print_attempt(console, attempt, "    ", versioned)
        for item in s.items:
            console.print(Text.assemble("    ", icon(item.status), f" item {item.item}  ",
                                        styled_status(item.status),
                                        (f"  {fmt_duration(item.duration)}", "dim")))
            if item.args is not None:
                console.print(f"        [dim]args:[/] {escape(short_json(item.args))}")
            versioned = len({a.plan_version for a in item.attempts}) > 1
            for attempt in item.attempts:
                _print_attempt(console, attempt, "        ", versioned)
        if s.status == "succeeded":
            console.print(f"    [dim]output:[/] {escape(short_json(s.output, 400))}")
        elif s.status == "failed" and s.error:
            console.print(f"    [red]error:[/] {escape(_error_text(s.error))}")
        elif s.status == "skipped":
            console.print(f"    [dim]skipped: {escape(s.reason)}[/]")
    if report.status == "succeeded":
        console.print()
        console.print(f"[bold]result:[/] {escape(short_json(report.output, 2000))}")


def _print_versions(console: Console, report: RunReport) -> None:
    """The plan's versions: who made and approved each, how its steps ended, and the diff from the one before."""
    if len(report.versions) > 1:
        console.print(f"[bold]plan versions:[/] {len(report.versions)} (v{report.plan_version} is the current one)")
    for v in report.versions:
        made = f" by {v.by}" if v.by else ""
        line = (f"  [bold]v{v.number}[/]" if len(report.versions) > 1 else "[bold]plan:[/] v1") + escape(made)
        if v.reason:
            line += f" [dim]because[/] {escape(v.reason)}"
        if v.approved_by:
            line += f" · approved by {escape(v.approved_by)}"
            if v.approval_note:
                line += f": {escape(v.approval_note)}"
        elif v.rejected_by:
            line += f" · [red]rejected[/] by {escape(v.rejected_by)}: {escape(v.rejected_reason)}"
        elif v.number == report.plan_version and report.status == "created":
            line += (f" · [yellow]waits for review:[/] [bold]charter approve {report.id}[/] or "
                     f"[bold]charter reject {report.id} --reason ...[/]")
        console.print(line)
        for e in v.ended:
            style = "red" if e["status"] == "failed" else "dim"
            console.print(f"    [{style}]{e['status']}:[/] {escape(e['step'])}"
                          + (f" [dim]({escape(preview(str(e['detail']), 200))})[/]" if e["detail"] else ""))
        for diff_line in v.diff.splitlines():
            if diff_line.startswith(("---", "+++")):
                continue
            style = "green" if diff_line.startswith("+") else "red" if diff_line.startswith("-") else "dim"
            console.print(f"      [{style}]{escape(diff_line)}[/]", soft_wrap=True)


def _print_attempt(console: Console, a: Any, indent: str, versioned: bool = False) -> None:
    where = f"v{a.plan_version} " if versioned else ""
    line = f"{indent}[dim]{where}attempt {a.number}: {a.outcome}"
    if a.duration is not None:
        line += f" after {fmt_duration(a.duration)}"
    line += "[/]"
    if a.error:
        line += f" {escape(_error_text(a.error) if 'type' in a.error else a.error.get('message', ''))}"
    if a.retry_at:
        line += f" [dim](retry scheduled {fmt_duration(a.retry_at - (a.ended_at or a.started_at))} later)[/]"
    console.print(line)
    for call in a.model_calls:
        _print_call(console, call, indent + "  ")


def fmt_cost(cost: float | None) -> str:
    """Dollars, or "cost unknown" for a model without a known price: never a made-up $0."""
    return "cost unknown" if cost is None else f"${cost:.4f}"


def _run_cost(report: RunReport) -> str:
    if not report.unpriced_models:
        return fmt_cost(report.cost)
    known = f"; ${report.cost_known:.4f} for the calls with a price" if report.cost_known else ""
    return (f"cost unknown (no price for {', '.join(report.unpriced_models)}{known}; "
            "add prices with CHARTER_PRICES)")


def _print_call(console: Console, call: ModelCall, indent: str) -> None:
    """One model call: model, tokens, cost, latency; then the start of the prompt and of the answer."""
    head = (f"{call.model} · {call.input_tokens:,} in + {call.output_tokens:,} out tokens · "
            f"{fmt_cost(call.cost)}" + (f" · {fmt_duration(call.latency)}" if call.latency is not None else ""))
    console.print(f"{indent}[cyan]model[/] {escape(head)}")
    console.print(f"{indent}  [dim]prompt:[/] {escape(preview(call.prompt, 120))}")
    console.print(f"{indent}  [dim]answer:[/] {escape(preview(call.answer, 120))}")
