"""Comparing a run's log with its replay's: each attempt's arguments, key and ending, the order steps
waited in, what was skipped, the planner's revisions and how the run ended.

Both logs are read as :class:`~charter.replay.recording.Recording`, so their
attempts are matched by the same keys. What follows a place the log holds no
result for is not compared (the replay could not go on there), and neither is
the run's end then. Imports the plan, the rules' statuses and the recording.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..engine import rules
from ..errors import PlanError
from ..events import ApprovalRequested, StepFailed, StepStarted, StepSucceeded
from ..plan.diff import plan_diff
from ..plan.model import Plan
from ..workspace.secrets import redact_data
from .recording import Attempt, AttemptKey, Recording
from .report import KINDS, Divergence

_LAST = 1 << 30


def compare(rec: Recording, rep: Recording, notes: Iterable[Divergence]) -> list[Divergence]:
    """Every divergence between the log ``rec`` and the replay's log ``rep``, with the ``notes`` the
    feed made on the way, in the order of the log."""
    notes = list(notes)
    keys: list[AttemptKey] = list(rec.attempts) + [k for k in rep.attempts if k not in rec.attempts]
    stuck = {d.step for d in notes if d.kind == "unrecorded" and d.step is not None}
    stopped = any(d.kind == "unrecorded" for d in notes)
    for key in keys:  # an attempt today's rules make that the log does not hold, with no note yet
        if key not in rec.attempts and key[0] not in stuck:
            att = rep.attempts[key]
            what = ("waits for a decision the log does not hold" if isinstance(att.started, ApprovalRequested)
                    else "is an attempt the log does not hold")
            notes.append(Divergence("unrecorded", f"today's rules start it, and it {what}: the replay cannot "
                                    "go further on this branch", key[0], key[1]))
            stuck.add(key[0])
            stopped = True
    blocked = _downstream(stuck, rec, rep)
    found = list(notes)
    for key in keys:
        a, b = rec.attempts.get(key), rep.attempts.get(key)
        if a is None:
            continue
        if b is None:
            if key[0] not in blocked:
                found.append(Divergence("not_run", "the log has this attempt; the replay did not make it",
                                        key[0], key[1], a.number))
            continue
        found += _attempt(a, b)
    found += _skipped(rec, rep, blocked)
    found += _order(rec)
    found += _revisions(rec, rep)
    if not stopped:
        found += _end(rec, rep)
    place = {(k[0], k[1], a.number): i for i, (k, a) in enumerate(rec.attempts.items())}
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k[0], i)

    def order(d: Divergence) -> tuple[int, int]:
        if d.step is None:
            at = _LAST
        elif d.attempt is not None and (d.step, d.item, d.attempt) in place:
            at = place[(d.step, d.item, d.attempt)]
        else:
            at = first.get(d.step, _LAST - 1)
        return at, KINDS.index(d.kind)

    return sorted(found, key=order)


def _downstream(stuck: set[str], rec: Recording, rep: Recording) -> set[str]:
    out = set(stuck)
    for plan in (rec.state.plan, rep.state.plan):
        for sid in stuck:
            if sid in plan.by_id:
                out.update(plan.downstream(sid))
    return out


def _attempt(a: Attempt, b: Attempt) -> list[Divergence]:
    step, item, n = a.step, a.item, a.number
    out = []
    was, now = redact_data(_asked(a)), redact_data(_asked(b))  # both masked: see _same
    if was != now:
        changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        out.append(Divergence("arguments", f"its arguments differ ({', '.join(changed)})", step, item, n,
                              recorded={k: was.get(k) for k in changed}, replayed={k: now.get(k) for k in changed}))
    if isinstance(a.started, StepStarted) and isinstance(b.started, StepStarted) and a.started.key != b.started.key:
        out.append(Divergence("key", "its idempotency key differs: the ledger would not know its effect",
                              step, item, n, recorded=a.started.key, replayed=b.started.key))
    x, y = a.outcome, b.outcome
    if x is None or y is None or _unrecorded(y):
        return out
    if type(x) is not type(y):
        out.append(Divergence("outcome", f"it {_ended(x)} in the log; today it {_ended(y)}", step, item, n,
                              recorded=_result(x), replayed=_result(y)))
    elif isinstance(x, StepFailed) and isinstance(y, StepFailed):
        if not _same((x.error or {}).get("message"), (y.error or {}).get("message")):
            out.append(Divergence("outcome", "it failed with another error", step, item, n,
                                  recorded=x.error, replayed=y.error))
        if (x.retry_at is None) != (y.retry_at is None):
            then = "a retry" if x.retry_at is not None else "no retry"
            today = "a retry" if y.retry_at is not None else "no retry"
            out.append(Divergence("retry", f"the log decided {then} after it failed; today's rules decide {today}",
                                  step, item, n, recorded=x.retry_at is not None, replayed=y.retry_at is not None))
    elif isinstance(x, StepSucceeded) and isinstance(y, StepSucceeded) and not _same(x.output, y.output):
        out.append(Divergence("output", "its output differs", step, item, n, recorded=x.output, replayed=y.output))
    return out


def _same(a: Any, b: Any) -> bool:
    """Whether two values are the same once the workspace's secrets are masked in both: a log written
    by a process that did not know a secret holds it in full, today's holds ``***``; that is no divergence."""
    return bool(redact_data(a) == redact_data(b))


def _asked(att: Attempt) -> dict[str, Any]:
    s = att.started
    return dict(s.args) if isinstance(s, StepStarted) else {"message": s.message}


def _unrecorded(ev: StepSucceeded | StepFailed) -> bool:
    return isinstance(ev, StepFailed) and (ev.error or {}).get("type") == "Unrecorded"


def _ended(ev: StepSucceeded | StepFailed) -> str:
    return "succeeded" if isinstance(ev, StepSucceeded) else "failed"


def _result(ev: StepSucceeded | StepFailed) -> Any:
    return ev.output if isinstance(ev, StepSucceeded) else ev.error


def _skipped(rec: Recording, rep: Recording, blocked: set[str]) -> list[Divergence]:
    out = []
    for sid in [*rec.skipped, *(s for s in rep.skipped if s not in rec.skipped)]:
        if sid in blocked or (sid in rec.skipped) == (sid in rep.skipped):
            continue
        if sid in rec.skipped:
            out.append(Divergence("skipped", f"the log skipped it ({rec.skipped[sid]}); today's rules do not", sid,
                                  recorded=rec.skipped[sid]))
        else:
            out.append(Divergence("skipped", f"today's rules skip it ({rep.skipped[sid]}); the log did not", sid,
                                  replayed=rep.skipped[sid]))
    return out


def _order(rec: Recording) -> list[Divergence]:
    """Steps that started, in the log, before a step they depend on today had finished."""
    plans: dict[int, Plan | None] = {}
    out = []
    for sid, started in rec.first_started.items():
        version = rec.version_at[sid]
        if version not in plans:
            try:
                plans[version] = Plan.from_dict(dict(rec.plans)[version])
            except (PlanError, KeyError):
                plans[version] = None  # reported as a plan that no longer compiles
        plan = plans[version]
        if plan is None or sid not in plan.by_id:
            continue
        for dep in plan.upstream(sid):
            done = rec.first_done.get(dep)
            if done is not None and started < done:
                out.append(Divergence("order", f"today's plan makes it wait for {dep}; in the log it started "
                                      f"before {dep} had finished", sid, recorded=f"started before {dep} finished",
                                      replayed=f"waits for {dep}"))
    return out


def _revisions(rec: Recording, rep: Recording) -> list[Divergence]:
    out = []
    if len(rec.revisions) != len(rep.revisions):
        out.append(Divergence("replan", f"the log has {len(rec.revisions)} revised plan(s) from the planner; "
                              f"the replay {len(rep.revisions)}", recorded=f"{len(rec.revisions)} revised plan(s)",
                              replayed=f"{len(rep.revisions)} revised plan(s)"))
    for x, y in zip(rec.revisions, rep.revisions, strict=False):
        if x.plan != y.plan:
            out.append(Divergence("replan", f"the planner's revised plan (version {x.version}) differs",
                                  recorded=f"plan version {x.version} as the planner revised it",
                                  replayed=f"today's version {x.version}, as a diff from the recorded one:\n"
                                           + plan_diff(x.plan, y.plan, x.version)))
    return out


def _end(rec: Recording, rep: Recording) -> list[Divergence]:
    x, y = rec.state, rep.state
    if x.status != y.status:
        why = f": {y.reason}" if y.reason else ""
        return [Divergence("end", f"the run ends {y.status} today{why}; the log has it {x.status}",
                           recorded=x.status, replayed=y.status)]
    if x.status == rules.SUCCEEDED and not _same(x.output, y.output):
        return [Divergence("end", "the run's output differs", recorded=x.output, replayed=y.output)]
    return []
