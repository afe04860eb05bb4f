"""Output into a pipe whose reader goes away (`charter run plan | head -1`): the run still ends well."""

from __future__ import annotations

import subprocess

from .helpers import Workspace

PLAN = """\
goal: Several steps, several lines of output
steps:
""" + "".join(f"  - {{id: s{i}, tool: echo, args: {{name: s{i}}}}}\n" for i in range(8))


def test_a_reader_that_leaves_does_not_stop_the_run(ws: Workspace) -> None:
    plan = ws.write("plan.yaml", PLAN)
    proc = subprocess.Popen(ws._argv(("run", plan, "-t", ws.tools), True), cwd=ws.root, env=ws.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # what `head -1` reads, then it is gone
    proc.stdout.close()
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert first and "Traceback" not in err, err
    assert rc == 0, (rc, err)  # the exit code is the run's
    run_id = ws.only_run_id()
    assert ws.status(run_id) == "succeeded"
    assert sorted(c["name"] for c in ws.calls(run=run_id)) == sorted(f"s{i}" for i in range(8))
