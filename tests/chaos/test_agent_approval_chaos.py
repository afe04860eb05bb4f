"""Chaos: SIGKILL real `charter` processes in the middle of `agent`, `llm` and `approval` steps.

The model is a real HTTP server on loopback speaking OpenAI's Chat Completions
(tests/provider_server.py), reached through ``CHARTER_MODEL=compat:chaos``. It
answers as a pure function of the conversation: the ``n``-th turn of the agent
(the number of assistant messages in the request) always gets the same tool
calls, and after the last one a final text built from every tool result the
conversation holds. So a repeated question gets the same answer, and every
request names its *conversation state* ``(prompt, turn)``.

The tools (agent_tools.py) log a line (pid, tool, arguments, idempotency key)
the moment their body starts; ``write`` tools apply their effect once per key.

Kills come from two sources. Random ones: the test waits for the process to do
something (a new model request, a new tool body) and SIGKILLs it then, or a
seeded random moment later. Exact ones: tests/chaos/killpoint.py runs the CLI
so that it SIGKILLs itself right after a given function returned (say, right
after a tool call was committed to the log), windows too narrow to hit by
chance. After every kill the test reads the log with
``charter show RUN --json --events``, so it knows exactly what was committed
before each process died.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.helpers import cli_env, wait_until
from tests.pg import store_for
from tests.provider_server import ProviderServer, Reply, openai_reply, provider_server

from .agent_tools import fact

pytestmark = pytest.mark.chaos

HERE = Path(__file__).resolve().parent
TOOLS_SRC = HERE / "agent_tools.py"
KILLPOINT = HERE / "killpoint.py"

State = tuple[str, int]  # a conversation state: (the user prompt, the number of assistant turns so far)
Call = tuple[str, str]  # one tool call of the agent: (tool, its arguments as sorted JSON); each is unique


# --- the model: a pure function of the conversation ------------------------------------------------

AGENT_PROMPT = "Research topics t0 to t11; write a note on every third finding."
MODEL_DELAY = 0.06  # seconds the server takes to answer an agent turn: a kill can land while it thinks


def _turns() -> list[list[tuple[str, dict[str, Any]]]]:
    turns = []
    for i in range(12):
        calls: list[tuple[str, dict[str, Any]]] = [("lookup", {"topic": f"t{i}", "ms": 30 + (37 * i) % 60})]
        if i % 3 == 1:  # two calls in one answer: a kill can fall between them
            calls.append(("note", {"text": f"n{i}", "ms": 40 + (29 * i) % 50}))
        turns.append(calls)
    return turns


TURNS = _turns()
AGENT_CALLS: list[Call] = [(name, json.dumps(args, sort_keys=True)) for turn in TURNS for name, args in turn]

LLM_PROMPT = "Classify this ticket: the nightly build is red since Tuesday."
LLM_SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
              "required": ["label", "score"]}
LLM_ANSWER = {"label": "bug", "score": 0.75}
LLM_DELAY = 0.4  # long enough that a kill surely lands while the question is in flight


def conversation_state(messages: list[dict[str, Any]]) -> State:
    """The state of a conversation, from the messages of a server request or of a ModelCalled event."""
    prompt = next(m["content"] for m in messages if m["role"] == "user")
    return prompt, sum(1 for m in messages if m["role"] == "assistant")


def tool_output(name: str, args: dict[str, Any]) -> Any:
    """What a tool of agent_tools.py returns: outputs are pure functions of the arguments."""
    if name == "lookup":
        return {"topic": args["topic"], "fact": fact(args["topic"])}
    assert name == "note"
    return f"noted {args['text']}"


def final_answer(results: list[Any]) -> str:
    return "findings: " + json.dumps(results, sort_keys=True)


EXPECTED_AGENT_OUTPUT = final_answer([{"result": tool_output(n, a)} for turn in TURNS for n, a in turn])


def respond(body: Any) -> Reply:
    if not isinstance(body, dict):  # a request cut short by a kill: nobody is there to read an answer
        return Reply(400, {"error": {"message": "truncated request"}})
    prompt, turn = conversation_state(body["messages"])
    if prompt == LLM_PROMPT:
        return replace(openai_reply(json.dumps(LLM_ANSWER)), delay=LLM_DELAY)
    if prompt != AGENT_PROMPT:
        return Reply(400, {"error": {"message": f"unexpected prompt {prompt!r}"}})
    if turn < len(TURNS):
        calls = [{"name": name, "arguments": json.dumps(args)} for name, args in TURNS[turn]]
        return replace(openai_reply(None, tool_calls=calls, finish_reason="tool_calls"), delay=MODEL_DELAY)
    results = [json.loads(m["content"]) for m in body["messages"] if m["role"] == "tool"]
    return replace(openai_reply(final_answer(results)), delay=MODEL_DELAY)


def agent_plan() -> dict[str, Any]:
    return {"goal": "chaos: an agent under SIGKILL", "steps": [
        {"id": "research", "agent": {"prompt": AGENT_PROMPT, "tools": ["lookup", "note"], "max_turns": 16}},
    ]}


def llm_plan() -> dict[str, Any]:
    return {"goal": "chaos: an llm step under SIGKILL", "steps": [
        {"id": "classify", "llm": {"prompt": LLM_PROMPT, "schema": LLM_SCHEMA}},
        {"id": "keep", "tool": "record", "args": {"label": "${classify.label}", "score": "${classify.score}"}},
    ]}


def approval_plan(ms: int = 500) -> dict[str, Any]:
    return {"goal": "chaos: publish after sign-off", "steps": [
        {"id": "gather", "tool": "fetch", "args": {"ms": ms}},
        {"id": "sign_off", "approval": {"message": "Publish ${gather}?"}},
        {"id": "publish", "tool": "publish", "args": {"text": "${gather}"}, "needs": ["sign_off"]},
        {"id": "announce", "tool": "record", "args": {"label": "${publish}", "score": 1}},
    ]}


def parallel_approval_plan() -> dict[str, Any]:
    """The approval waits while another step still runs: the run's process is alive and owns the run."""
    return {"goal": "chaos: sign off while the work goes on", "steps": [
        {"id": "crunch", "tool": "crunch"},
        {"id": "sign_off", "approval": {"message": "Publish when crunched?"}},
        {"id": "publish", "tool": "publish", "args": {"text": "${crunch}"}, "needs": ["sign_off"]},
    ]}


# --- driving processes --------------------------------------------------------------------------------


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Harness:
    """A store, a copy of the tools, the `charter` command, and every process started, stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = store_for(root)
        self.tools = root / "agent_tools.py"
        shutil.copy(TOOLS_SRC, self.tools)
        self.env = cli_env()
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost"
        self.procs: list[subprocess.Popen[bytes]] = []

    def use_model(self, server: ProviderServer) -> None:
        self.env.update({"CHARTER_MODEL": "compat:chaos", "CHARTER_BASE_URL": server.url + "/v1"})

    def plan(self, name: str, plan: dict[str, Any]) -> str:
        path = self.root / name
        path.write_text(json.dumps(plan), encoding="utf-8")
        return str(path)

    def argv(self, args: tuple[str, ...], killpoint: tuple[str, int, str] | None) -> list[str]:
        prefix = ["-m", "charter"] if killpoint is None else [str(KILLPOINT), killpoint[0], str(killpoint[1]),
                                                              killpoint[2]]
        return [sys.executable, *prefix, *args, "--db", self.db]

    def spawn(self, *args: str, killpoint: tuple[str, int, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `charter ARGS` in the background (killing itself at ``killpoint``, if given)."""
        n = len(self.procs)
        with (self.root / f"p{n}.out").open("wb") as out, (self.root / f"p{n}.err").open("wb") as err:
            proc = subprocess.Popen(self.argv(args, killpoint), cwd=self.root, env=self.env, stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> Result:
        n = self.procs.index(proc)
        return Result(proc.returncode if proc.returncode is not None else -1,
                      (self.root / f"p{n}.out").read_text(encoding="utf-8", errors="replace"),
                      (self.root / f"p{n}.err").read_text(encoding="utf-8", errors="replace"))

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> Result:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"process {proc.pid} did not exit within {timeout}s\n{self.output(proc)}") from None
        return self.output(proc)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process this test started (by its pid) and reap it."""
        assert proc.poll() is None, f"process {proc.pid} ended before it was killed:\n{self.output(proc)}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL

    def alive(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"process {proc.pid} ended before it was killed:\n{self.output(proc)}")
        return True

    def cli(self, *args: str) -> Result:
        done = subprocess.run(self.argv(args, None), cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    def show(self, run_id: str) -> dict[str, Any]:
        res = self.cli("show", run_id, "--json", "--events")
        assert res.rc == 0, res
        report: dict[str, Any] = json.loads(res.out)
        return report

    def only_run_id(self) -> str:
        res = self.cli("runs", "--json")
        assert res.rc == 0, res
        [row] = json.loads(res.out)
        return str(row["id"])

    def executions(self, tool: str | None = None) -> list[dict[str, Any]]:
        log = self.root / "executions.log"
        rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
        return [r for r in rows if tool is None or r["tool"] == tool]

    def effects(self) -> Counter[str]:
        log = self.root / "effects.log"
        return Counter(log.read_text(encoding="utf-8").splitlines() if log.exists() else [])

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.stop_all()


@pytest.fixture
def model(h: Harness) -> Iterator[ProviderServer]:
    with provider_server(respond) as server:
        h.use_model(server)
        yield server


def poll(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    return wait_until(predicate, timeout, what, interval=0.005)


def step_of(report: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["id"] == step_id)


def events_of(report: dict[str, Any], kind: str, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in report["events"] if e["type"] == kind and (step is None or e.get("step") == step)]


def call_of(tool: str, args: dict[str, Any]) -> Call:
    return tool, json.dumps(args, sort_keys=True)


def requests(server: ProviderServer) -> list[Any]:
    """The bodies the server received, in order (a request cut short by a kill is raw bytes)."""
    return [r.body for r in list(server.received)]


# --- 1 and 2: an agent step killed at random moments ---------------------------------------------------


@dataclass
class Epoch:
    """One `charter` process of the run: what it was, and what the log held when it was killed."""

    pid: int
    mark: int  # how many requests the server had received when the process started
    moment: str = ""
    models: set[State] = field(default_factory=set)  # conversation states with a ModelCalled in the log at the kill
    tools: set[Call] = field(default_factory=set)  # tool calls with a ToolCalled in the log at the kill


MOMENTS = ("model", "tool", "random")
KILLS = 4  # per run: each moment at least once, one more at random


def kill_at_a_moment(h: Harness, server: ProviderServer, proc: subprocess.Popen[bytes], epoch: Epoch,
                     rng: random.Random) -> None:
    """Wait for the process to be doing something, then SIGKILL it.

    ``model``: right after its j-th new request reached the server (the answer is
    still coming: the kill lands while the model thinks). ``tool``: right after
    the body of its j-th tool call started (the tool is still sleeping).
    ``random``: a random moment up to 0.4 s after it first did anything.
    """
    def new_requests() -> int:
        return len(server.received) - epoch.mark

    def new_tool_calls() -> int:
        return sum(1 for e in h.executions() if e["pid"] == proc.pid)

    j = rng.choice([1, 2])
    if epoch.moment == "model":
        poll(lambda: h.alive(proc) and new_requests() >= j, f"request {j} of process {proc.pid}")
    elif epoch.moment == "tool":
        poll(lambda: h.alive(proc) and new_tool_calls() >= j, f"tool call {j} of process {proc.pid}")
    else:
        poll(lambda: h.alive(proc) and (new_requests() or new_tool_calls()), f"process {proc.pid} to work")
        time.sleep(rng.uniform(0.0, 0.4))  # chaos, not synchronisation: any moment will do
    h.kill(proc)


@pytest.mark.parametrize("seed", [11, 2024, 65537])
def test_agent_killed_at_random_moments_never_pays_twice_nor_repeats_a_tool(
    h: Harness, model: ProviderServer, seed: int
) -> None:
    """An agent step of 12 turns (13 tool calls, 3 of them writes) survives 4 SIGKILLs.

    Invariants asserted (a "process" is one `charter` process; the log is read after each kill):

    - the run succeeds with the answer of an uninterrupted run (the final answer
      is built from every tool result in the conversation, so a lost or changed
      result would show);
    - models: a conversation state whose ModelCalled was in the log when a
      process was killed is never asked again by any later process; no process
      asks the same state twice; hence a state was asked at most 1 + (the kills
      that came after it was first asked and before its answer was committed)
      times, and (total requests - distinct states) <= kills; a
      repeated question is byte for byte the same request; the final log holds
      exactly one ModelCalled per state, indexes 0..n-1 in order, each index
      being the turn it answers;
    - tools: a call whose ToolCalled was in the log when a process was killed
      never runs again in a later process; no process runs a call twice; so a
      call ran at most 1 + (the kills after it first ran and before its
      ToolCalled was committed) times, always with the same idempotency key,
      distinct between calls; the final log holds exactly one ToolCalled per
      call, with its real output; every `note` (a write) had its effect exactly
      once;
    - the chaos was real: some kill caught a model request in flight and some
      kill caught a tool body running (both then uncommitted).
    """
    rng = random.Random(seed)
    plan = h.plan("agent.json", agent_plan())
    moments = [*MOMENTS, *(rng.choice(MOMENTS) for _ in range(KILLS - len(MOMENTS)))]
    rng.shuffle(moments)

    run_id: str | None = None
    epochs: list[Epoch] = []
    for moment in moments:
        mark = len(model.received)
        proc = h.spawn("run", plan, "-t", str(h.tools)) if run_id is None else h.spawn("resume", run_id)
        epoch = Epoch(proc.pid, mark, moment)
        epochs.append(epoch)
        kill_at_a_moment(h, model, proc, epoch, rng)
        run_id = run_id or h.only_run_id()
        report = h.show(run_id)
        assert report["status"] == "running" and step_of(report, "research")["status"] == "running", \
            f"the run ended before every kill (moments {moments}); the agent's task is too short"
        epoch.models = {conversation_state(e["request"]["messages"]) for e in events_of(report, "ModelCalled")}
        epoch.tools = {call_of(e["tool"], e["args"]) for e in events_of(report, "ToolCalled")}

    assert run_id is not None
    last = h.spawn("resume", run_id)
    epochs.append(Epoch(last.pid, len(model.received)))
    res = h.finish(last)
    assert res.rc == 0, res

    report = h.show(run_id)
    assert report["status"] == "succeeded", report["reason"]
    assert report["output"] == EXPECTED_AGENT_OUTPUT
    check_model_calls(report, requests(model), epochs)
    check_tool_calls(h, report, run_id, epochs)


def check_model_calls(report: dict[str, Any], bodies: list[Any], epochs: list[Epoch]) -> None:
    kills = len(epochs) - 1
    asked: dict[State, list[int]] = defaultdict(list)  # state -> the epoch of each request for it
    sent: dict[State, set[str]] = defaultdict(set)  # state -> the distinct request bodies
    for i, body in enumerate(bodies):
        if not isinstance(body, dict):
            continue  # cut short by a kill: never answered, never paid
        by = max(k for k, e in enumerate(epochs) if e.mark <= i)  # processes ran one after the other
        state = conversation_state(body["messages"])
        asked[state].append(by)
        sent[state].add(json.dumps(body, sort_keys=True))
    turns = len(TURNS) + 1
    assert set(asked) == {(AGENT_PROMPT, t) for t in range(turns)}
    for state, at in asked.items():
        assert len(at) == len(set(at)), f"{state}: one process asked the same question twice: epochs {at}"
        open_kills = [k for k in range(min(at), kills) if state not in epochs[k].models]
        assert len(at) <= 1 + len(open_kills), f"{state}: asked in epochs {at}, open at kills {open_kills}"
        for k, epoch in enumerate(epochs[:-1]):
            later = [e for e in at if e > k]
            assert not (state in epoch.models and later), \
                f"{state} was answered in the log at kill {k + 1}, yet asked again by process(es) {later}"
        assert len(sent[state]) == 1, f"{state}: a repeated question differed from the first"
    assert sum(len(at) for at in asked.values()) - len(asked) <= kills

    called = events_of(report, "ModelCalled", "research")
    assert [e["index"] for e in called] == list(range(turns)), "one ModelCalled per turn, in order"
    assert [conversation_state(e["request"]["messages"]) for e in called] == [(AGENT_PROMPT, t) for t in range(turns)]
    assert sum(len(e.models) for e in epochs) > 0, "no kill came after a model answer was committed"
    in_flight = [k for k, e in enumerate(epochs[:-1]) if any(k in at and s not in e.models for s, at in asked.items())]
    assert in_flight, "no kill caught a model request in flight: the test proved little"


def check_tool_calls(h: Harness, report: dict[str, Any], run_id: str, epochs: list[Epoch]) -> None:
    kills = len(epochs) - 1
    pids = [e.pid for e in epochs]
    ran: dict[Call, list[dict[str, Any]]] = defaultdict(list)
    for line in h.executions():
        assert line["run"] == run_id and line["step"] == "research", line
        assert line["pid"] in pids, f"a tool ran in a process this test did not start: {line}"
        ran[call_of(line["tool"], line["args"])].append(line)
    assert set(ran) == set(AGENT_CALLS), "every call the model asked for ran, and nothing else"

    keys = {}
    for call, lines in ran.items():
        call_keys = {line["key"] for line in lines}
        assert len(call_keys) == 1, f"{call} ran with several idempotency keys: {call_keys}"
        keys[call] = call_keys.pop()
        at = [pids.index(line["pid"]) for line in lines]
        assert len(at) == len(set(at)), f"{call}: one process ran it twice (epochs {at})"
        open_kills = [k for k in range(min(at), kills) if call not in epochs[k].tools]
        assert len(at) <= 1 + len(open_kills), f"{call}: ran in epochs {at}, open at kills {open_kills}"
        for k, epoch in enumerate(epochs[:-1]):
            later = [e for e in at if e > k]
            assert not (call in epoch.tools and later), \
                f"{call} was done in the log at kill {k + 1}, yet ran again in process(es) {later}"
    assert len(set(keys.values())) == len(keys), "two tool calls shared an idempotency key"

    called = events_of(report, "ToolCalled", "research")
    assert [e["index"] for e in called] == list(range(len(AGENT_CALLS))), "one ToolCalled per call, in order"
    assert [call_of(e["tool"], e["args"]) for e in called] == AGENT_CALLS
    for e in called:
        assert e["error"] is None and e["output"] == tool_output(e["tool"], e["args"]), e

    notes = {keys[c] for c in AGENT_CALLS if c[0] == "note"}
    assert h.effects() == Counter({k: 1 for k in notes}), "every note written exactly once"
    running = [k for k, e in enumerate(epochs[:-1]) if any(k in [pids.index(x["pid"]) for x in lines]
                                                           and c not in e.tools for c, lines in ran.items())]
    assert running, "no kill caught a tool running: the test proved little"


# --- the same, at exact moments: right after a model answer or a tool call was committed -------------


@pytest.mark.parametrize(("target", "nth"), [
    ("charter.engine.journal:Journal.complete", 4),  # killed right after the 4th answer was committed
    ("charter.engine.journal:Journal.tool", 2),  # right after the 2nd tool call, the first of the two of turn 1
])
def test_agent_killed_right_after_a_commit_repeats_nothing(
    h: Harness, model: ProviderServer, target: str, nth: int
) -> None:
    """Killed with nothing in flight, right after a commit: every question is asked once, every tool runs once."""
    plan = h.plan("agent.json", agent_plan())
    first = h.spawn("run", plan, "-t", str(h.tools), killpoint=(target, nth, "after"))
    assert h.finish(first).rc == -signal.SIGKILL
    run_id = h.only_run_id()
    at_kill = h.show(run_id)
    assert at_kill["status"] == "running"
    if target.endswith("complete"):
        assert len(events_of(at_kill, "ModelCalled")) == nth
    else:
        assert len(events_of(at_kill, "ToolCalled")) == nth

    res = h.finish(h.spawn("resume", run_id))
    assert res.rc == 0, res
    report = h.show(run_id)
    assert report["status"] == "succeeded" and report["output"] == EXPECTED_AGENT_OUTPUT
    states = [conversation_state(b["messages"]) for b in requests(model)]
    assert states == [(AGENT_PROMPT, t) for t in range(len(TURNS) + 1)], "each question asked exactly once"
    runs = Counter(call_of(e["tool"], e["args"]) for e in h.executions())
    assert runs == Counter(AGENT_CALLS), "each tool call ran exactly once"
    assert len(events_of(report, "ModelCalled")) == len(TURNS) + 1
    assert len(events_of(report, "ToolCalled")) == len(AGENT_CALLS)
    assert [a["outcome"] for a in step_of(report, "research")["attempts"]] == ["interrupted", "succeeded"]


# --- 4: an llm step with a schema ------------------------------------------------------------------------


def test_llm_step_killed_after_its_answer_was_committed_reuses_it(h: Harness, model: ProviderServer) -> None:
    """Killed after ModelCalled was committed but before the step succeeded: the answer is reused, not re-asked."""
    plan = h.plan("llm.json", llm_plan())
    # parse_json_answer runs once the answer is in the log, before the step's result is
    first = h.spawn("run", plan, "-t", str(h.tools), killpoint=("charter.engine.llm:parse_json_answer", 1, "before"))
    assert h.finish(first).rc == -signal.SIGKILL
    run_id = h.only_run_id()
    at_kill = h.show(run_id)
    classify = step_of(at_kill, "classify")
    assert classify["status"] == "running" and [a["outcome"] for a in classify["attempts"]] == ["running"]
    [called] = events_of(at_kill, "ModelCalled", "classify")
    assert json.loads(called["response"]["text"]) == LLM_ANSWER

    res = h.finish(h.spawn("resume", run_id))
    assert res.rc == 0, res
    report = h.show(run_id)
    assert report["status"] == "succeeded"
    assert step_of(report, "classify")["output"] == LLM_ANSWER
    assert report["output"] == "bug:0.75"
    assert [conversation_state(b["messages"]) for b in requests(model)] == [(LLM_PROMPT, 0)], "asked exactly once"
    assert len(events_of(report, "ModelCalled")) == 1
    assert [a["outcome"] for a in step_of(report, "classify")["attempts"]] == ["interrupted", "succeeded"]
    assert len(h.executions("record")) == 1


def test_llm_step_killed_while_the_model_thinks_asks_again_once(h: Harness, model: ProviderServer) -> None:
    """Killed with the question in flight (nothing committed): asked again, once, the same question; paid once."""
    plan = h.plan("llm.json", llm_plan())
    first = h.spawn("run", plan, "-t", str(h.tools))
    poll(lambda: h.alive(first) and len(model.received) >= 1, "the question to reach the model")
    h.kill(first)  # the server holds its answer for LLM_DELAY seconds
    run_id = h.only_run_id()
    assert events_of(h.show(run_id), "ModelCalled") == []

    res = h.finish(h.spawn("resume", run_id))
    assert res.rc == 0, res
    report = h.show(run_id)
    assert report["status"] == "succeeded" and report["output"] == "bug:0.75"
    bodies = requests(model)
    assert len(bodies) == 2 and bodies[0] == bodies[1], "asked again exactly once, the same question"
    assert len(events_of(report, "ModelCalled")) == 1, "paid (recorded) once"


# --- 3: approval steps --------------------------------------------------------------------------------------


def ran_in(h: Harness, proc: subprocess.Popen[bytes], tool: str) -> bool:
    """Whether ``tool`` has started in ``proc`` (which must still be alive)."""
    return h.alive(proc) and any(e["pid"] == proc.pid for e in h.executions(tool))


def wait_for_approval(h: Harness, rng: random.Random, run_id: str | None, plan: str, kills: int) -> str:
    """Start the run, SIGKILL its process ``kills`` times while ``gather`` runs, then let it reach the approval."""
    for _ in range(kills):
        proc = h.spawn("run", plan, "-t", str(h.tools)) if run_id is None else h.spawn("resume", run_id)
        poll(partial(ran_in, h, proc, "fetch"), "gather to run")
        time.sleep(rng.uniform(0.0, 0.3))  # gather takes 0.5 s: the kill lands while it runs
        h.kill(proc)
        run_id = run_id or h.only_run_id()
        report = h.show(run_id)
        assert report["status"] == "running" and step_of(report, "gather")["status"] == "running"

    proc = h.spawn("run", plan, "-t", str(h.tools)) if run_id is None else h.spawn("resume", run_id)
    res = h.finish(proc)
    run_id = run_id or h.only_run_id()
    assert res.rc == 3, res
    assert f"charter approve {run_id} sign_off" in res.out, res
    assert_waiting(h, run_id)
    gathers = h.executions("fetch")
    assert len(gathers) == kills + 1 and len({e["key"] for e in gathers}) == 1
    assert [e["attempt"] for e in gathers] == list(range(1, kills + 2))
    return run_id


def assert_waiting(h: Harness, run_id: str) -> None:
    report = h.show(run_id)
    assert report["status"] == "awaiting", report["reason"]
    assert step_of(report, "gather")["status"] == "succeeded"
    assert step_of(report, "sign_off")["status"] == "awaiting"
    assert step_of(report, "sign_off")["args"] == {"message": f"Publish figures {fact('figures')}?"}
    assert step_of(report, "publish")["status"] == "pending"
    assert len(events_of(report, "ApprovalRequested")) == 1
    assert h.executions("publish") == []


def kill_a_resume_of_the_waiting_run(h: Harness, rng: random.Random, run_id: str) -> None:
    """`charter resume` of a waiting run, SIGKILLed at a random moment (or gone already): the wait is kept."""
    proc = h.spawn("resume", run_id)
    time.sleep(rng.uniform(0.0, 0.5))  # chaos: during start-up, while adopting, or after it left
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    else:
        assert proc.returncode == 3, h.output(proc)
    assert_waiting(h, run_id)
    res = h.finish(h.spawn("resume", run_id))  # and a whole resume: it finds the run waiting, and says so
    assert res.rc == 3 and f"charter approve {run_id} sign_off" in res.out, res
    assert_waiting(h, run_id)


def test_approval_survives_kills_then_an_approval_from_another_process_finishes_the_run(h: Harness) -> None:
    """Kills during the step before the approval and around the wait lose nothing; approving runs the write once.

    Asserted: `gather` ran once per process killed while it ran, then once more,
    always with the same key, never again after it succeeded; the run then
    waits ("awaiting", exit 3, the `charter approve RUN sign_off` hint) with
    nothing published; killing and restarting a `charter resume` keeps the
    wait; `charter approve RUN sign_off` from another process finishes the run,
    `publish` (a write) running exactly once; a second approval is refused.
    """
    rng = random.Random(5)
    plan = h.plan("approval.json", approval_plan())
    run_id = wait_for_approval(h, rng, None, plan, kills=2)
    kill_a_resume_of_the_waiting_run(h, rng, run_id)

    res = h.cli("approve", run_id, "sign_off", "--comment", "looks right")
    assert res.rc == 0, res
    report = h.show(run_id)
    assert report["status"] == "succeeded", report["reason"]
    assert step_of(report, "sign_off")["output"]["approved"] is True
    assert step_of(report, "sign_off")["output"]["comment"] == "looks right"
    [published] = h.executions("publish")
    assert published["args"] == {"text": f"figures {fact('figures')}"}
    assert h.effects() == Counter({published["key"]: 1})
    assert report["output"] == f"published figures {fact('figures')}:1.0"
    assert len(h.executions("fetch")) == 3, "gather never ran again once it had succeeded"

    again = h.cli("approve", run_id, "sign_off")  # a second approval changes nothing
    assert again.rc == 2 and "not waiting for approval" in again.err, again
    assert len(h.executions("publish")) == 1


def test_rejecting_an_approval_after_kills_fails_the_run_and_skips_its_dependents(h: Harness) -> None:
    """After the same kills, `charter reject RUN sign_off --reason ...`: the run fails (exit 1) with the reason,
    `publish` and `announce` are skipped and never run, and a later resume changes nothing."""
    rng = random.Random(99)
    plan = h.plan("approval.json", approval_plan())
    run_id = wait_for_approval(h, rng, None, plan, kills=1)
    kill_a_resume_of_the_waiting_run(h, rng, run_id)

    res = h.cli("reject", run_id, "sign_off", "--reason", "numbers look wrong")
    assert res.rc == 1, res
    report = h.show(run_id)
    assert report["status"] == "failed"
    sign_off = step_of(report, "sign_off")
    assert sign_off["status"] == "failed" and "numbers look wrong" in sign_off["error"]["message"]
    assert step_of(report, "publish")["status"] == "skipped"
    assert step_of(report, "announce")["status"] == "skipped"
    assert h.executions("publish") == [] and h.executions("record") == [] and not h.effects()
    res = h.finish(h.spawn("resume", run_id))  # a finished run stays finished
    assert res.rc == 1 and h.executions("publish") == []


@pytest.mark.parametrize("kill", ["random", "right after the request is taken"])
def test_an_approval_asked_of_a_live_process_survives_its_kill(h: Harness, kill: str) -> None:
    """`charter approve` while another process runs the run asks that process; killing it loses nothing.

    The run's process is alive (``crunch`` still works), so the approval is
    stored as a request for it. It is then SIGKILLed, at a random moment or
    right after it read the request from the store (before it recorded the
    decision). After `charter resume`, the approval must be there: the run
    succeeds without a second approval, and publishes once.
    """
    gate = h.root / "gate"
    gate.touch()
    plan = h.plan("parallel.json", parallel_approval_plan())
    killpoint = ("charter.store.sql:SQLStore.pending_requests", 1, "after-truthy") if kill != "random" else None
    proc = h.spawn("run", plan, "-t", str(h.tools), killpoint=killpoint)
    poll(partial(ran_in, h, proc, "crunch"), "crunch to start")
    run_id = h.only_run_id()
    poll(lambda: step_of(h.show(run_id), "sign_off")["status"] == "awaiting", "the approval to be asked")

    res = h.cli("approve", run_id, "sign_off")
    assert res.rc == 0 and f"asked the process running {run_id}" in res.out, res
    if kill == "random":
        time.sleep(random.Random(3).uniform(0.0, 0.4))  # before or after it took the request
        h.kill(proc)
    else:
        assert h.finish(proc, 10).rc == -signal.SIGKILL
    gate.unlink()

    res = h.finish(h.spawn("resume", run_id))
    report = h.show(run_id)
    assert step_of(report, "sign_off")["status"] == "succeeded", \
        f"the approval was lost with the killed process:\n{res}"
    assert res.rc == 0 and report["status"] == "succeeded", res
    assert len(h.executions("publish")) == 1 and sum(h.effects().values()) == 1
