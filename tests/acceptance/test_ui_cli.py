"""`charter ui` in a subprocess: it prints its address with the token, wants the token, and refuses
bad input (a port out of range, a taken port, a missing store) with one clear line and exit 2."""

from __future__ import annotations

import re
import signal
import socket

import httpx

from .helpers import Workspace, wait_until


def test_ui_serves_the_runs_and_wants_its_token(ws: Workspace) -> None:
    plan = ws.write("plan.yaml", "goal: Say hi\nsteps:\n  - {id: hi, tool: echo, args: {name: hi}}\n")
    assert ws("run", plan, "--tools", ws.tools).rc == 0
    proc = ws.start("ui", "--port", "0", "--tools", ws.tools)
    line = wait_until(lambda: re.search(r"open: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", proc.output()[0]),
                      what="the address")
    base, token = line.group(1), line.group(2)
    assert len(token) >= 24  # a random one, as none was given
    assert httpx.get(f"{base}/api/runs").status_code == 401
    runs = httpx.get(f"{base}/api/runs", headers={"Authorization": f"Bearer {token}"}).json()["runs"]
    assert [r["goal"] for r in runs] == ["Say hi"]
    with httpx.Client(base_url=base, follow_redirects=True) as browser:
        assert browser.get(f"/?token={token}").status_code == 200  # redirected to the page, with the cookie
        assert "<title>Charter</title>" in browser.get("/").text
    proc.popen.send_signal(signal.SIGINT)
    done = proc.wait(20)
    assert done.rc == 0 and "Traceback" not in done.err, done


def test_ui_takes_its_token_from_the_environment(ws: Workspace) -> None:
    assert ws("run", ws.write("p.yaml", "goal: g\nsteps:\n  - {id: a, tool: echo, args: {name: a}}\n"),
              "--tools", ws.tools).rc == 0
    ws.env["CHARTER_UI_TOKEN"] = "from-the-environment"
    proc = ws.start("ui", "--port", "0")
    line = wait_until(lambda: re.search(r"open: (http://\S+)/\?token=(\S+)", proc.output()[0]), what="the address")
    assert line.group(2) == "from-the-environment"
    res = httpx.get(f"{line.group(1)}/api/runs", headers={"Authorization": "Bearer from-the-environment"})
    assert res.status_code == 200
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait(20).rc == 0


def test_the_printed_address_works_whatever_the_token_holds(ws: Workspace) -> None:
    assert ws("run", ws.write("p.yaml", "goal: g\nsteps:\n  - {id: a, tool: echo, args: {name: a}}\n"),
              "--tools", ws.tools).rc == 0
    token = "pa&ss=word#12 /?+%"  # characters an address gives a meaning to
    proc = ws.start("ui", "--port", "0", "--token", token)
    address = wait_until(lambda: re.search(r"open: (\S+)", proc.output()[0]), what="the address").group(1)
    assert "&" not in address and "#" not in address and " " not in address
    with httpx.Client(follow_redirects=True) as browser:
        page = browser.get(address)  # as a person opening it would: the cookie set, the page shown
        assert page.status_code == 200 and "<title>Charter</title>" in page.text, page.text
        assert "token" not in str(page.url)
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait(20).rc == 0


def test_ui_refuses_bad_input_in_one_line(ws: Workspace) -> None:
    assert ws("run", ws.write("p.yaml", "goal: g\nsteps:\n  - {id: a, tool: echo, args: {name: a}}\n"),
              "--tools", ws.tools).rc == 0
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        cases = {
            ("ui", "--port", str(port)): f"port {port} on 127.0.0.1 is taken",
            ("ui", "--port", "70000"): "70000 is not in the range",
            ("ui", "--port", "abc"): "'abc' is not a valid integer",
            ("ui", "--token", "short"): "at least 8 characters",
            ("ui", "--host", "no.such.host.invalid"): "not an address this machine can listen on",
        }
        for args, words in cases.items():
            done = ws(*args)
            assert done.rc == 2 and words in done.err and "Traceback" not in done.err, (args, done)
    finally:
        taken.close()
    missing = ws("ui", "--db", str(ws.root / "nope.db"), db=False)
    assert missing.rc == 2 and "no store at" in missing.err and "Traceback" not in missing.err, missing
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    unreachable = f"postgresql://nobody@127.0.0.1:{closed.getsockname()[1]}/x"  # bound, never listening
    try:
        gone = ws("ui", "--db", unreachable, "--port", "0", db=False)
    finally:
        closed.close()
    assert gone.rc == 2 and "cannot reach store" in gone.err and "open:" not in gone.out, gone
