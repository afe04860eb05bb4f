"""The page of `charter ui` in a real browser: Debian's Chromium driven by Playwright.

A plan with an approval step: the graph changes live as the run goes on (no reload), the
approval is given from the page, the run finishes. A failed step is retried from the page;
the runs list then shows a run started after it opened, and its ages move (no reload).
Every request the page makes goes to the server (it loads nothing from the internet), and so
does every request of the API's reference page, /docs.
Screenshots go to test-artifacts/ (git ignores it); the live updates' delays (commit to
shown) to test-artifacts/web-latency.json, reported in docs/web.md, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from charter import Charter
from charter.testing import ScriptedModel
from tests.webserver import TOKEN, TOOLS, serving, switches

playwright = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium (scripts/ensure-chromium installs it)")


@pytest.fixture(autouse=True)
def _reset() -> None:
    switches["broken"] = True
    switches["gates"].clear()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        try:
            yield b
        finally:
            await b.close()


class Page:
    """A browser tab on the UI that records every request it makes and every error it meets."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    async def open(self, hash_: str) -> None:
        await self.page.goto(f"{self.base}/?token={TOKEN}")
        await self.page.evaluate("h => { location.hash = h; }", hash_)

    async def node(self, step: str, status: str) -> None:
        """Wait until the graph shows ``step`` in ``status``."""
        await self.page.wait_for_selector(f'svg.dag g.node.status-{status}[data-step="{step}"]', timeout=15_000)

    async def act(self, action: str, step: str) -> None:
        await self.page.click(f'#actions button[data-action="{action}"][data-step="{step}"]')
        await self.page.wait_for_selector(".action-form .does")
        await self.page.click(".action-form button.confirm")

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def only_the_server(self) -> None:
        elsewhere = [u for u in self.requests if not u.startswith(self.base + "/")]
        assert elsewhere == [], f"the page asked for things elsewhere: {elsewhere}"
        assert self.errors == []


PLAN = {"goal": "Send the weekly report, once someone agrees", "assumptions": ["the report is ready"], "steps": [
    {"id": "draft", "tool": "held", "args": {"name": "draft"}, "why": "The report must exist first."},
    {"id": "check", "tool": "echo", "args": {"text": "${draft}"}},
    {"id": "sign_off", "approval": {"message": "Send ${draft}?"}, "needs": ["check"]},
    {"id": "send", "tool": "record", "args": {"note": "${draft}"}, "needs": ["sign_off"]},
]}


async def test_the_graph_goes_live_and_the_approval_is_given_from_the_page(db_path: Path, browser: Any) -> None:
    switches["gates"]["draft"] = asyncio.Event()
    with Charter(db_path, tools=TOOLS) as charter:
        async with serving(charter) as base:
            run_id = await charter.start(PLAN)
            driving = asyncio.get_running_loop().create_task(charter.drive())
            tab = Page(await browser.new_page(viewport={"width": 1300, "height": 900}), base)
            await tab.open(f"#/runs/{run_id}")
            await tab.node("draft", "running")
            await tab.node("send", "pending")
            await tab.page.evaluate("window.__sameDocument = true")  # gone if the page reloads
            await tab.shot("approval-1-running")

            switches["gates"]["draft"].set()  # the run goes on while the page watches
            await tab.node("draft", "succeeded")
            await tab.node("check", "succeeded")
            await tab.node("sign_off", "awaiting")
            await driving  # the run waits for a person
            await tab.page.wait_for_selector('#actions button[data-action="approve"][data-step="sign_off"]')
            await tab.shot("approval-2-awaiting")

            await tab.act("approve", "sign_off")
            await tab.node("sign_off", "succeeded")
            await tab.node("send", "succeeded")
            await tab.page.wait_for_selector("#run-status.status-succeeded", timeout=15_000)
            assert await tab.page.evaluate("window.__sameDocument === true"), "the page reloaded"
            await tab.page.click('svg.dag g.node[data-step="send"]')
            await tab.page.wait_for_selector("#step h2:has-text('Step send')")
            await tab.page.wait_for_selector("text=Effects (ledger)")
            await tab.shot("approval-3-done")
            latencies = await tab.page.evaluate("window.charterLive.latencies")
            tab.only_the_server()
        report = await charter.report(run_id)
    assert report.status == "succeeded"
    assert report.versions[0].approved_by == "plan file"
    _keep_latencies(latencies)


async def test_a_failed_step_is_retried_from_the_page(db_path: Path, browser: Any) -> None:
    plan = {"goal": "Fix and go on", "steps": [
        {"id": "first", "tool": "echo", "args": {"text": "a"}},
        {"id": "fragile", "tool": "fragile", "args": {"text": "${first}"}},
        {"id": "last", "tool": "echo", "args": {"text": "${fragile}"}},
    ]}
    with Charter(db_path, tools=TOOLS) as charter:
        report = await charter.run(plan)
        assert report.status == "failed"
        async with serving(charter) as base:
            tab = Page(await browser.new_page(viewport={"width": 1300, "height": 900}), base)
            await tab.open(f"#/runs/{report.id}/steps/fragile")
            await tab.node("fragile", "failed")
            await tab.node("last", "skipped")
            await tab.page.wait_for_selector("#step :text('broken on')")
            await tab.shot("retry-1-failed")
            switches["broken"] = False  # the cause is fixed
            assert "failed (fragile)" in await tab.page.inner_text("#run-reason")
            await tab.act("retry", "fragile")
            await tab.node("fragile", "succeeded")
            await tab.node("last", "succeeded")
            await tab.page.wait_for_selector("#run-status.status-succeeded", timeout=15_000)
            await tab.page.wait_for_selector("#run-reason", state="detached")  # the old failure's reason goes too
            await tab.shot("retry-2-succeeded")
            await tab.open("#/")  # the runs list
            await tab.page.wait_for_selector(f'tr[data-run="{report.id}"] .status-succeeded')
            await tab.page.evaluate("window.__sameDocument = true")  # gone if the page reloads
            # Live: a run started elsewhere shows up, and the ages move, without a reload.
            age = f'tr[data-run="{report.id}"] td.age'
            shown_age = await tab.page.inner_text(age)
            later = await charter.run({"goal": "Started after the list opened", "steps": [
                {"id": "x", "tool": "echo", "args": {"text": "x"}}]})
            await tab.page.wait_for_selector(f'tr[data-run="{later.id}"] .status-succeeded', timeout=10_000)
            assert await tab.page.evaluate("document.querySelector('tbody tr').dataset.run") == later.id
            await tab.page.wait_for_function("([sel, was]) => document.querySelector(sel).textContent !== was",
                                              arg=[age, shown_age], timeout=10_000)
            assert await tab.page.evaluate("window.__sameDocument === true"), "the page reloaded"
            await tab.shot("runs-list")
            # The API's reference page too: Swagger UI from the server's own files, the schema read and shown.
            await tab.page.goto(f"{base}/docs")
            await tab.page.wait_for_selector(".swagger-ui .opblock-summary-path[data-path='/api/runs']")
            tab.only_the_server()
        assert (await charter.report(report.id)).status == "succeeded"


async def test_a_plan_in_review_is_edited_and_rejected_from_the_page(db_path: Path, browser: Any) -> None:
    proposed = {"goal": "Echo once", "steps": [{"id": "say", "tool": "echo", "args": {"text": "hi"}}]}
    with Charter(db_path, tools=TOOLS, model=ScriptedModel([proposed])) as charter:
        run_id = await charter.propose("please echo hi", max_replans=0)
        async with serving(charter) as base:
            tab = Page(await browser.new_page(viewport={"width": 1300, "height": 900}), base)
            await tab.open(f"#/runs/{run_id}")
            await tab.node("say", "pending")
            assert await tab.page.inner_text('#actions button[data-action="revise"]') == "edit"  # as docs/web.md says
            await tab.page.click('#actions button[data-action="revise"]')
            await tab.page.fill(".action-form textarea", "goal: [unclosed")
            await tab.page.click(".action-form button.confirm")
            await tab.page.wait_for_selector("#error:has-text('not valid YAML')")  # said on the page, not a traceback
            await tab.page.fill(".action-form textarea", json.dumps({"goal": "Echo twice", "steps": [
                {"id": "say", "tool": "echo", "args": {"text": "hi"}},
                {"id": "again", "tool": "echo", "args": {"text": "${say}"}}]}))
            await tab.page.click(".action-form button.confirm")
            await tab.node("again", "pending")  # the graph is laid out again for the new version
            await tab.page.wait_for_selector("h1:has-text('Echo twice')")
            await tab.shot("review-1-revised")
            await tab.act("reject", "")
            await tab.page.wait_for_selector("#run-status.status-rejected", timeout=15_000)
            tab.only_the_server()
    async with Charter(db_path, mode="ro") as reader:
        report = await reader.report(run_id)
    assert report.status == "rejected" and report.goal == "Echo twice"
    assert report.versions[1].by.endswith("(web)") and report.versions[1].rejected_by is not None


def _keep_latencies(latencies: list[dict[str, Any]]) -> None:
    """Write what the page measured (ms from an event's commit to the graph showing it) as an artefact."""
    ARTIFACTS.mkdir(exist_ok=True)
    ms = sorted(x["ms"] for x in latencies)
    summary = {"updates": len(ms), "median_ms": statistics.median(ms) if ms else None,
               "max_ms": ms[-1] if ms else None, "each": latencies}
    (ARTIFACTS / "web-latency.json").write_text(json.dumps(summary, indent=1))
