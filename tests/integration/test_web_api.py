"""The JSON API of `charter ui` against a real server on a real store (SQLite, or PostgreSQL with
CHARTER_TEST_STORE=postgresql): the token, actions safe from other sites, runs listed and paged,
a run and a step whole, the actions through the facade, the live stream."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from charter import Charter
from charter.testing import ScriptedModel
from tests.webserver import ACT, TOKEN, TOOLS, client, serving, switches


@pytest.fixture(autouse=True)
def _reset() -> None:
    switches["broken"] = True
    switches["gates"].clear()


def plan(*steps: dict[str, Any], goal: str = "Test the page") -> dict[str, Any]:
    return {"goal": goal, "assumptions": ["the tools answer"], "steps": list(steps)}


APPROVAL = plan({"id": "a", "tool": "echo", "args": {"text": "hi"}},
                {"id": "gate", "approval": {"message": "Go on with ${a}?"}},
                {"id": "b", "tool": "echo", "args": {"text": "after"}, "needs": ["gate"]})


async def test_every_request_needs_the_token(db_path: Path) -> None:
    with Charter(db_path, tools=TOOLS) as charter:
        report = await charter.run(plan({"id": "a", "tool": "echo", "args": {"text": "hi"}}))
        async with serving(charter) as base, httpx.AsyncClient(base_url=base) as anon:
            for path in ("/", "/static/app.js", "/static/vendor/dagre.esm.js", "/api/runs", f"/api/runs/{report.id}",
                         f"/api/runs/{report.id}/stream", "/openapi.json", "/docs"):
                res = await anon.get(path)
                assert res.status_code == 401, path
                assert "token" in res.json()["error"]
            assert (await anon.get("/api/runs", headers={"Authorization": "Bearer wrong-token"})).status_code == 401
            assert (await anon.get("/?token=wrong-token")).status_code == 401
            # ?token= sets an HttpOnly, SameSite=Strict cookie and leaves the address without it
            res = await anon.get(f"/?token={TOKEN}&x=1")
            assert res.status_code == 303 and res.headers["location"] == "/?x=1"
            cookie = res.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert (await anon.get("/api/runs")).status_code == 200  # the cookie now
            page = await anon.get("/")
            assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        async with serving(charter) as base, client(base) as api:
            assert (await api.get("/api/runs")).json()["runs"][0]["id"] == report.id


async def test_actions_refuse_what_another_site_could_send(db_path: Path) -> None:
    with Charter(db_path, tools=TOOLS) as charter:
        run_id = await charter.start(APPROVAL)
        async with serving(charter) as base, httpx.AsyncClient(base_url=base) as browser:
            await browser.get(f"/?token={TOKEN}")  # the cookie, as the page has it
            url = f"/api/runs/{run_id}/cancel"
            res = await browser.post(url, json={})  # a form or script elsewhere cannot add the header
            assert res.status_code == 403 and "X-Charter-Action" in res.json()["error"]
            res = await browser.post(url, json={}, headers={**ACT, "Origin": "http://evil.example"})
            assert res.status_code == 403 and "another site" in res.json()["error"]
            res = await browser.post(url, json={}, headers={**ACT, "Origin": "null"})
            assert res.status_code == 403
            assert (await browser.get(url)).status_code == 405  # actions are POSTs only
            assert (await charter.report(run_id)).status == "running"  # nothing happened (it was never driven)
            res = await browser.post(url, json={"reason": "no"}, headers={**ACT, "Origin": base})
            assert res.status_code == 200, res.text
        assert (await charter.report(run_id)).status == "cancelled"


async def test_runs_are_filtered_and_paged_newest_first(db_path: Path) -> None:
    with Charter(db_path, tools=TOOLS) as charter:
        ids = []
        for i in range(7):
            step = {"id": "s", "tool": "fragile" if i % 3 == 0 else "echo", "args": {"text": f"t{i}"}}
            ids.append((await charter.run(plan(step, goal=f"goal number {i} {'zebra' if i == 4 else ''}"))).id)
        async with serving(charter) as base, client(base) as api:
            seen: list[str] = []
            url: str | None = "/api/runs?limit=3"
            while url:
                page = (await api.get(url)).json()
                assert len(page["runs"]) <= 3
                seen += [r["id"] for r in page["runs"]]
                url = f"/api/runs?limit=3&before={page['next']}" if page["next"] else None
            assert seen == ids[::-1]
            failed = (await api.get("/api/runs", params={"status": "failed"})).json()["runs"]
            assert [r["id"] for r in failed] == [ids[6], ids[3], ids[0]]
            assert all(r["status"] == "failed" and r["steps_total"] == 1 for r in failed)
            both = (await api.get("/api/runs", params=[("status", "failed"), ("status", "succeeded")])).json()
            assert len(both["runs"]) == 7
            assert [r["id"] for r in (await api.get("/api/runs?q=ZEBRA")).json()["runs"]] == [ids[4]]
            assert [r["id"] for r in (await api.get(f"/api/runs?q={ids[2][:8]}")).json()["runs"]] == [ids[2]]
            assert len((await api.get("/api/runs?age=1h")).json()["runs"]) == 7
            assert (await api.get("/api/runs", params={"since": time.time() + 60})).json()["runs"] == []
            for bad, words in (("age=soon", "age must be"), ("status=lost", "status"), ("limit=0", "limit"),
                               ("limit=abc", "limit")):
                res = await api.get(f"/api/runs?{bad}")
                assert res.status_code in (400, 422) and words in res.json()["error"], bad
            garbage = await api.get("/api/runs?before=garbage")  # not an empty page: no such run
            assert garbage.status_code == 404 and garbage.json()["error"].startswith("no run 'garbage'")


async def test_a_run_and_a_step_whole(db_path: Path) -> None:
    big = "x" * 5000
    with Charter(db_path, tools=TOOLS) as charter:
        report = await charter.run(plan(
            {"id": "a", "tool": "echo", "args": {"text": big}, "why": "It makes a big value."},
            {"id": "each", "tool": "echo", "for_each": "${inputs.words}", "args": {"text": "${item}"}},
            {"id": "b", "tool": "fragile", "args": {"text": "${a}"}, "needs": ["each"],
             "retry": {"max_attempts": 2, "initial_interval": 0.01, "retry_unknown_errors": True}},
        ) | {"inputs": {"words": ["one", "two"]}})
        assert report.status == "failed"
        async with serving(charter) as base, client(base) as api:
            run = (await api.get(f"/api/runs/{report.id[:6]}")).json()  # a prefix of the id will do
            assert run["id"] == report.id and run["status"] == "failed" and run["assumptions"] == ["the tools answer"]
            assert {s["id"]: sorted(s["deps"]) for s in run["steps"]} == {"a": [], "each": [], "b": ["a", "each"]}
            assert {s["id"]: s["status"] for s in run["steps"]} == {"a": "succeeded", "each": "succeeded", "b": "failed"}
            assert [w["step"] for w in run["waterfall"]][:1] == ["a"] and len(run["waterfall"]) == 4
            assert all(w["worker"] and w["end"] >= w["start"] for w in run["waterfall"])  # who ran each attempt
            assert run["versions"][0]["approved_by"] == "plan file" and run["last_seq"] == len(report.events)
            assert {a["action"] for a in run["actions"]} == {"retry", "rerun"}
            assert run["budget"]["steps"]["used"] == 4

            step = (await api.get(f"/api/runs/{report.id}/steps/a")).json()
            assert step["why"] == "It makes a big value." and step["output"]["$truncated"] is True
            assert step["output"]["size"] > 5000 and len(step["output"]["preview"]) <= 2000
            whole = (await api.get(step["output"]["href"])).json()
            assert whole == {"value": big}
            assert (await api.get(step["args"]["href"])).json() == {"value": {"text": big}}
            each = (await api.get(f"/api/runs/{report.id}/steps/each")).json()
            assert [(i["item"], i["output"]) for i in each["items"]] == [(0, "one"), (1, "two")]
            assert (await api.get(f"/api/runs/{report.id}/steps/each/value?field=output&item=1")).json() == {
                "value": "two"}
            failed = (await api.get(f"/api/runs/{report.id}/steps/b")).json()
            assert failed["status"] == "failed" and failed["retry"]["max_attempts"] == 2
            assert failed["error"]["$truncated"] is True  # the message holds the big text
            assert failed["error"]["size"] > 5000
            event = (await api.get(f"/api/runs/{report.id}/events/1")).json()
            assert event["type"] == "RunCreated" and event["seq"] == 1
            for path, status in ((f"/api/runs/{report.id}/steps/nope", 404), ("/api/runs/nope", 404),
                                 (f"/api/runs/{report.id}/events/9999", 404), (f"/api/runs/{report.id}/events/0", 422),
                                 (f"/api/runs/{report.id}/steps/each/value?field=output&item=7", 404),
                                 (f"/api/runs/{report.id}/steps/a/value?field=secret", 422)):
                res = await api.get(path)
                assert res.status_code == status, path
                assert res.json()["error"], path


async def test_a_pruned_run_reads_whole_and_offers_no_action(db_path: Path) -> None:
    big = "x" * 5000
    # an answer of small parts, stored (and pruned) whole: the tool call it asked for is gone with it
    model = ScriptedModel([ScriptedModel.call("echo", {"text": "y" * 200}), "done: " + big])
    with Charter(db_path, tools=TOOLS, model=model) as charter:
        report = await charter.run(plan({"id": "a", "tool": "echo", "args": {"text": big}},
                                        {"id": "agent", "agent": {"prompt": "Echo this: " + big, "tools": ["echo"]}},
                                        {"id": "f", "tool": "fragile", "args": {"text": big}}))
        assert report.status == "failed"
        async with serving(charter) as base, client(base) as api:
            offered = (await api.get(f"/api/runs/{report.id}/actions")).json()
            assert {a["action"] for a in offered["actions"]} == {"retry", "rerun"} and offered["actions_note"] is None
            assert (await charter.prune(0)).runs == 1
            run = (await api.get(f"/api/runs/{report.id}")).json()
            assert run["pruned_at"] is not None and run["actions"] == []
            assert run["actions_note"].startswith("pruned: cannot go on")
            assert all(c["prompt"].startswith("(pruned: ") for c in run["model_calls"])
            assert (await api.get(f"/api/runs/{report.id}/actions")).json()["actions"] == []
            step = (await api.get(f"/api/runs/{report.id}/steps/a")).json()
            assert set(step["output"]) == {"$pruned", "size"} and step["output"]["size"] > 5000
            agent = (await api.get(f"/api/runs/{report.id}/steps/agent")).json()
            assert [set(c["request"]) for c in agent["model_calls"]] == [{"$pruned", "size"}] * 2
            assert set(agent["model_calls"][0]["response"]) == {"$pruned", "size"}
            assert set(agent["model_calls"][1]["response"]["text"]) == {"$pruned", "size"}
            # the call the agent made is still listed, from the log, though the answer that asked for it is gone
            assert [(t["tool"], t["refused"], t["output"]) for t in agent["tool_calls"]] == [("echo", False, "y" * 200)]
            for path in (f"/api/runs/{report.id}/steps/a/value?field=output", f"/api/runs/{report.id}/steps/f",
                         f"/api/runs/{report.id}/value?field=output", f"/api/runs/{report.id}/value?field=plan",
                         *(f"/api/runs/{report.id}/events/{n}" for n in range(1, len(report.events) + 1))):
                assert (await api.get(path)).status_code == 200, path
            for action in ("retry", "rerun"):
                res = await api.post(f"/api/runs/{report.id}/{action}", json={"step": "f"})
                assert res.status_code == 409 and "pruned" in res.json()["error"], action


async def test_model_calls_and_agent_tool_calls_the_refused_too(db_path: Path) -> None:
    model = ScriptedModel([ScriptedModel.call("echo", {"text": "ok"}), ScriptedModel.call("record", {"note": "x"}),
                           "done, and I could not record"])
    with Charter(db_path, tools=TOOLS, model=model) as charter:
        report = await charter.run(plan({"id": "agent", "agent": {"prompt": "Echo, then record", "tools": ["echo"]}}))
        assert report.status == "succeeded"
        async with serving(charter) as base, client(base) as api:
            step = (await api.get(f"/api/runs/{report.id}/steps/agent")).json()
        assert [(c["index"], c["model"]) for c in step["model_calls"]] == [(0, "scripted:demo"), (1, "scripted:demo"),
                                                                           (2, "scripted:demo")]
        assert all("latency" in c and "cost" in c for c in step["model_calls"])
        calls = [(t["tool"], t["refused"], t["output"], t["error"]) for t in step["tool_calls"]]
        assert calls == [("echo", False, "ok", None),
                         ("record", True, None, "tool 'record' is not allowed in this step (allowed: echo)")]


async def test_actions_go_through_the_facade(db_path: Path) -> None:
    with Charter(db_path, tools=TOOLS) as charter:
        async with serving(charter) as base, client(base) as api:
            # An approval step: approved from the API, the run goes on here and finishes.
            run_id = await charter.start(APPROVAL)
            await charter.drive()
            assert (await charter.report(run_id)).status == "awaiting"
            offered = (await api.get(f"/api/runs/{run_id}/actions")).json()["actions"]
            assert {k: offered[0][k] for k in ("action", "step")} == {"action": "approve", "step": "gate"}
            assert "Approve step gate" in offered[0]["does"]
            res = await api.post(f"/api/runs/{run_id}/approve", json={"step": "gate", "note": "fine"})
            assert res.status_code == 200 and res.json()["ok"], res.text
            assert (await charter.wait(run_id, until={"succeeded"}, timeout=20)).status == "succeeded"
            again = await api.post(f"/api/runs/{run_id}/approve", json={"step": "gate"})
            assert again.status_code == 409 and "traceback" not in again.text.lower()
            resumed = await api.post(f"/api/runs/{run_id}/resume", json={})
            assert resumed.status_code == 409, resumed.text
            assert resumed.json()["error"] == f"run {run_id} has already ended (succeeded)"
            unknown = await api.post(f"/api/runs/{run_id}/approve", json={"step": "nope"})
            assert unknown.status_code == 404 and unknown.json()["error"] == f"run {run_id} has no step 'nope'"

            # A failed step retried from the API once its cause is fixed.
            failed = (await charter.run(plan({"id": "f", "tool": "fragile", "args": {"text": "x"}}))).id
            bad = await api.post(f"/api/runs/{failed}/retry", json={"step": "nope"})
            assert bad.status_code == 404 and "no step 'nope'" in bad.json()["error"]
            switches["broken"] = False
            assert (await api.post(f"/api/runs/{failed}/retry", json={"step": "f"})).status_code == 200
            assert (await charter.wait(failed, until={"succeeded", "failed"}, timeout=20)).status == "succeeded"

            # Rerun from a step: a new run, reusing what is upstream.
            res = (await api.post(f"/api/runs/{failed}/rerun", json={"step": "f"})).json()
            assert res["run"] != failed
            assert (await charter.wait(res["run"], until={"succeeded"}, timeout=20)).status == "succeeded"

            # A plan in review: revised (as YAML text), then rejected.
            review = await charter.start(APPROVAL)  # a plan from code is approved: make one that waits instead
            await charter.cancel(review)
            proposed = await _proposed(charter)
            res = await api.post(f"/api/runs/{proposed}/revise", json={"plan": "goal: edited\nsteps:\n  - {id: x, tool: echo, args: {text: y}}\n"})
            assert res.status_code == 200, res.text
            assert (await charter.report(proposed)).goal == "edited"
            broken = await api.post(f"/api/runs/{proposed}/revise", json={"plan": "goal: [unclosed"})
            assert broken.status_code == 400 and "YAML" in broken.json()["error"]
            invalid = await api.post(f"/api/runs/{proposed}/revise", json={"plan": {"goal": "g", "steps": [{"id": "x", "tool": "ghost"}]}})
            assert invalid.status_code == 400 and "ghost" in invalid.json()["error"]
            assert (await api.post(f"/api/runs/{proposed}/reject", json={"note": "not now"})).status_code == 200
            assert (await charter.report(proposed)).status == "rejected"

            # Pause and resume a running run; then cancel.
            switches["gates"]["p"] = asyncio.Event()
            slow = await charter.start(plan({"id": "h", "tool": "held", "args": {"name": "p"}}))
            driving = asyncio.get_running_loop().create_task(charter.drive())
            await charter.wait(slow, until={"running"}, timeout=10)
            assert (await api.post(f"/api/runs/{slow}/pause", json={"reason": "lunch"})).status_code == 200
            assert (await charter.wait(slow, until={"paused"}, timeout=20)).status == "paused"
            await driving
            switches["gates"]["p"].set()
            assert (await api.post(f"/api/runs/{slow}/resume", json={})).status_code == 200
            assert (await charter.wait(slow, until={"succeeded"}, timeout=20)).status == "succeeded"
            ended = await api.post(f"/api/runs/{slow}/cancel", json={})
            assert ended.status_code == 409 and "ended" in ended.json()["error"]
            for body in ({"step": 5}, {"unknown": 1, "step": ""}, None):
                res = await api.post(f"/api/runs/{slow}/retry", json=body)
                assert res.status_code == 422 and res.json()["error"].startswith("invalid request")
            assert (await api.post("/api/runs/nope/pause", json={})).status_code == 404


async def _proposed(charter: Charter) -> str:
    """A run whose plan waits for review, as `charter do` leaves one (planned by the scripted model)."""
    charter.model = ScriptedModel([{"goal": "proposed", "steps": [{"id": "x", "tool": "echo", "args": {"text": "y"}}]}])
    return await charter.propose("please echo", max_replans=0)


async def test_the_stream_resumes_after_the_last_event_id_and_outlives_a_pause(db_path: Path) -> None:
    with Charter(db_path, tools=TOOLS) as charter:
        run_id = await charter.start(APPROVAL)
        await charter.drive()  # it waits at the approval: settled, but not over
        report = await charter.report(run_id)
        async with serving(charter) as base, client(base) as api:
            async with api.stream("GET", f"/api/runs/{run_id}/stream", headers={"Last-Event-ID": "3"}) as res:
                assert res.headers["content-type"].startswith("text/event-stream")
                lines = res.aiter_lines()
                first = await _message(lines)
                assert first["id"] == "4" and first["data"]["seq"] == 4  # after the last one the client had
                seen = [first]
                while int(seen[-1]["id"]) < len(report.events):
                    seen.append(await _message(lines))
                assert seen[-1]["data"]["run"]["status"] == "awaiting"
                assert seen[-1]["data"]["steps"]["gate"]["status"] == "awaiting"
                # the stream goes on: approving the step sends what follows
                await charter.approve(run_id, "gate")
                driving = asyncio.get_running_loop().create_task(charter.drive())
                while seen[-1]["data"]["event"]["type"] != "RunSucceeded":
                    seen.append(await _message(lines))
                assert [int(m["id"]) for m in seen] == list(range(4, int(seen[-1]["id"]) + 1))
                await driving
            bad = await api.get(f"/api/runs/{run_id}/stream?after=-1")
            assert bad.status_code == 422


async def _message(lines: Any) -> dict[str, Any]:
    """The next server-sent event: its id, event and decoded data."""
    msg: dict[str, Any] = {}
    async for line in lines:
        if not line:
            if "data" in msg:
                return msg
            continue
        field, _, value = line.partition(": ")
        msg[field] = json.loads(value) if field == "data" else value
    raise AssertionError("the stream ended")


async def test_a_client_that_never_reads_does_not_hold_a_run_up(db_path: Path) -> None:
    steps = [{"id": f"step{i}", "tool": "echo", "args": {"text": "y"}} for i in range(250)]
    with Charter(db_path, tools=TOOLS) as charter:
        async with serving(charter) as base, client(base) as api:
            run_id = await charter.start(plan(*steps))
            port = int(base.rsplit(":", 1)[1])
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(("127.0.0.1", port))
            stuck.sendall(f"GET /api/runs/{run_id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                          .encode())
            try:
                # on the server's own loop, as a run approved from the page is; a stream that held
                # the run up would hold it for good (the client never reads): a generous bound says so
                await asyncio.wait_for(charter.drive(), timeout=120)
                # ... and the server still serves everyone else while that stream stays stuck
                assert (await api.get(f"/api/runs/{run_id}")).json()["status"] == "succeeded"
            except TimeoutError:
                raise AssertionError("a run of 250 steps did not end while a client never read its stream") from None
            finally:
                stuck.close()
        report = await charter.report(run_id)
    assert report.status == "succeeded"
    # Each update carries every step's state: the stream holds far more than the socket's buffers can
    # (at most 4 MB sent, 4 KB received), so the server's writer was held for most of the run.
    per_update = len(json.dumps({f"step{i}": {"status": "succeeded", "attempt": 1, "retry_at": None, "items_total": None,
                                              "items_done": 0} for i in range(250)}))
    assert per_update * len(report.events) > 2 * (4 * 1024 * 1024 + 4096)


async def test_no_secret_reaches_the_page_or_the_api(db_path: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-" + secrets.token_hex(12)  # never seen before by this process: stored as it is
    with Charter(db_path, tools=TOOLS) as writer:
        report = await writer.run(plan(
            {"id": "leak", "tool": "echo", "args": {"text": f"key={secret}"}},
            {"id": "boom", "tool": "fragile", "args": {"text": secret}}))
    assert report.status == "failed"
    monkeypatch.setenv("WEB_TEST_API_KEY", secret)
    (tmp_path / "charter.yaml").write_text("email:\n  host: smtp.example.com\n  from: c@example.com\n"
                                           "  password: ${env:WEB_TEST_API_KEY}\n")
    with Charter(db_path, tools=TOOLS, workspace=tmp_path / "charter.yaml") as charter:
        async with serving(charter) as base, client(base) as api:
            bodies = []
            for path in ("/api/runs", f"/api/runs/{report.id}", f"/api/runs/{report.id}/steps/leak",
                         f"/api/runs/{report.id}/steps/boom", f"/api/runs/{report.id}/steps/leak/value?field=args",
                         f"/api/runs/{report.id}/steps/leak/value?field=output",
                         f"/api/runs/{report.id}/steps/boom/value?field=error",
                         *(f"/api/runs/{report.id}/events/{n}" for n in range(1, len(report.events) + 1))):
                res = await api.get(path)
                assert res.status_code == 200, path
                bodies.append(res.text)
            async with api.stream("GET", f"/api/runs/{report.id}/stream") as res:
                lines = res.aiter_lines()
                for _ in report.events:
                    bodies.append(json.dumps(await _message(lines)))
    text = "\n".join(bodies)
    assert secret not in text
    assert "key=***" in text and "broken on '***'" in text


async def test_the_openapi_schema_lists_every_route(db_path: Path) -> None:
    with Charter(db_path, tools=TOOLS) as charter:
        async with serving(charter) as base, client(base) as api:
            schema = (await api.get("/openapi.json")).json()
    assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/steps/{step_id}", "/api/runs/{run_id}/stream",
            "/api/runs/{run_id}/approve", "/api/runs/{run_id}/rerun"} <= set(schema["paths"])
