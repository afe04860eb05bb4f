// The page of `charter ui`: the runs list, a run (its plan as a live graph), a step, and the actions.
// Plain DOM, no framework: every text goes in through textContent, never as HTML.
import { drawDag, setStep } from "./dag.js";
import { h, fmtAge, fmtTime, fmtDuration, fmtCost, valueView, waterfall } from "./render.js";

const main = document.getElementById("main");
const live = { source: null, run: null, svg: null, refresh: null };
// The runs list while it is shown: its poll, its ages' tick, and which showing of the list they belong to.
const listing = { poll: null, tick: null, shown: 0 };
const POLL_MS = 2000;  // a new or changed run shows within this; each poll is one keyset page of the store
// The action names people see (the API's `revise` is the docs' and the page's "edit").
const LABELS = { revise: "edit" };
window.charterLive = { latencies: [], updates: 0 };  // read by the browser tests and the latency bench

// --- talking to the server -----------------------------------------------------------------

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-Charter-Action": "1" },
  };
  const res = await fetch(path, { credentials: "same-origin", ...init });
  let data = null;
  try { data = await res.json(); } catch { data = { error: `the server answered ${res.status} without JSON` }; }
  if (!res.ok) throw new Error(data.error || `the server answered ${res.status}`);
  return data;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

function showNotice(message) {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.hidden = !message;
}

// --- routing: #/ (runs), #/runs/ID, #/runs/ID/steps/STEP -------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  showError("");
  stopListing();
  if (parts[0] === "runs" && parts[1]) {
    showRun(parts[1], parts[2] === "steps" ? parts[3] : null).catch((e) => showError(e.message));
  } else {
    stopLive();
    showRuns().catch((e) => showError(e.message));
  }
}

// --- the runs list -----------------------------------------------------------------------------

const STATUSES = ["created", "running", "awaiting", "paused", "interrupted", "succeeded", "failed", "cancelled",
                  "rejected", "replanning"];

async function showRuns() {
  document.getElementById("where").textContent = "runs";
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const status = h("select", { name: "status", "aria-label": "status" }, h("option", { value: "" }, "any status"),
    ...STATUSES.map((s) => h("option", { value: s }, s)));
  const age = h("select", { name: "age", "aria-label": "age" }, h("option", { value: "" }, "any age"),
    ...[["1h", "last hour"], ["24h", "last day"], ["7d", "last week"], ["30d", "last 30 days"]]
      .map(([v, t]) => h("option", { value: v }, t)));
  const text = h("input", { name: "q", type: "search", placeholder: "goal, request or id", "aria-label": "text" });
  status.value = params.get("status") || "";
  age.value = params.get("age") || "";
  text.value = params.get("q") || "";
  const body = h("tbody");
  const more = h("button", { type: "button", class: "more", hidden: true }, "More");
  const form = h("form", { class: "filters" }, status, age, text, h("button", { type: "submit" }, "Filter"));
  const table = h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, ...["status", "run", "request or goal", "age", "progress", "cost", "tokens"]
      .map((t) => h("th", {}, t)))), body);
  main.replaceChildren(h("h1", {}, "Runs"), form, table, more);
  const shown = listing.shown;
  let next = null;
  const query = (before, limit) => {
    const q = new URLSearchParams();
    if (params.get("status")) q.set("status", params.get("status"));
    if (params.get("age")) q.set("age", params.get("age"));
    if (params.get("q")) q.set("q", params.get("q"));
    if (before) q.set("before", before);
    if (limit) q.set("limit", limit);
    return q;
  };
  const fetchPage = async (before, limit) => {
    const page = await api(`/api/runs?${query(before, limit)}`);
    listing.offset = page.now - Date.now() / 1000;  // the server's clock, for the ages
    return page;
  };
  const load = async (before) => {
    const page = await fetchPage(before);
    if (listing.shown !== shown) return;
    for (const r of page.runs) body.append(runLine(r));
    if (!before && !page.runs.length) body.append(noRuns());
    next = page.next;
    more.hidden = !next;
  };
  // Live: the newest rows again every POLL_MS while the page is visible (as many as are shown, up to 500).
  // A row is replaced only when its run changed, so a click on it is never lost; rows loaded with More
  // past that window stay as they are.
  const poll = async () => {
    if (document.visibilityState !== "visible") return;
    const rows = [...body.querySelectorAll("tr[data-run]")];
    const page = await fetchPage(null, Math.min(500, Math.max(50, rows.length)));
    if (listing.shown !== shown) return;
    const had = new Map(rows.map((tr) => [tr.dataset.run, tr]));
    const lines = page.runs.map((r) => {
      const old = had.get(r.id);
      return old && old.dataset.sig === JSON.stringify(r) ? old : runLine(r);
    });
    let tail = [];
    if (page.next) {
      const last = rows.findIndex((tr) => tr.dataset.run === page.runs.at(-1).id);
      tail = last >= 0 ? rows.slice(last + 1) : [];
      if (!tail.length) next = page.next;
    } else {
      next = null;
    }
    const want = [...lines, ...tail];
    if (!want.length) want.push(body.querySelector("tr.none") || noRuns());
    if (want.length !== body.children.length || want.some((n, i) => body.children[i] !== n)) body.replaceChildren(...want);
    more.hidden = !next;
  };
  const again = () => {
    listing.poll = setTimeout(async () => {
      try {
        await poll();
        if (listing.failing) showError("");  // the poll's own error, once it works again
        listing.failing = false;
      } catch (e) {
        listing.failing = true;
        showError(`runs: ${e.message}`);
      }
      if (listing.shown === shown) again();
    }, POLL_MS);
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (age.value) q.set("age", age.value);
    if (text.value.trim()) q.set("q", text.value.trim());
    const target = `#/?${q}`;
    if (location.hash === target) route(); else location.hash = target;
  });
  more.addEventListener("click", () => load(next).catch((e) => showError(e.message)));
  await load(null);
  if (listing.shown !== shown) return;
  again();
  listing.tick = setInterval(tickAges, 1000);
}

function stopListing() {
  clearTimeout(listing.poll);
  clearInterval(listing.tick);
  listing.shown += 1;  // a poll under way finds the list it was for gone, and stops
}

// Every age on the list moves on with the server's clock, between polls too.
function tickAges() {
  for (const td of document.querySelectorAll("table.runs td.age")) {
    const age = fmtAge(serverNow() - Number(td.dataset.created));
    if (td.textContent !== age) td.textContent = age;
  }
}

function serverNow() {
  return Date.now() / 1000 + (listing.offset || 0);
}

function noRuns() {
  return h("tr", { class: "none" }, h("td", { colspan: 7, class: "dim" }, "no runs"));
}

function runLine(r) {
  const progress = `${r.steps_done}/${r.steps_total}`;
  return h("tr", { "data-run": r.id, "data-sig": JSON.stringify(r) },
    h("td", {}, h("span", { class: `badge status-${r.status}` }, r.status)),
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.id)),
    h("td", { class: "goal" }, r.request || r.goal),
    h("td", { class: "age", title: fmtTime(r.created_at), "data-created": r.created_at }, fmtAge(serverNow() - r.created_at)),
    h("td", {}, h("progress", { max: Math.max(1, r.steps_total), value: r.steps_done }), " ", progress),
    h("td", {}, fmtCost(r.cost)),
    h("td", {}, r.tokens == null ? "—" : String(r.tokens)));
}

// --- a run --------------------------------------------------------------------------------------

function stopLive() {
  if (live.source) live.source.close();
  clearTimeout(live.refresh);
  Object.assign(live, { source: null, run: null, svg: null, refresh: null, step: null });
  setLive("");
}

function setLive(state) {
  const dot = document.getElementById("live");
  dot.className = `live ${state}`;
  dot.textContent = state === "on" ? "live" : state === "off" ? "reconnecting…" : "";
}

async function showRun(runId, stepId) {
  const sameRun = live.run && (live.run.id === runId);
  if (sameRun) {
    live.step = stepId;
    await renderStep();
    return;
  }
  stopLive();
  const run = await api(`/api/runs/${encodeURIComponent(runId)}`);
  live.step = stepId;
  renderRun(run);
  await renderStep();
  follow(run);
}

function renderRun(run) {
  live.run = run;
  document.getElementById("where").textContent = `run ${run.id}`;
  const svg = drawDag(run.steps, (step) => { location.hash = `#/runs/${encodeURIComponent(run.id)}/steps/${encodeURIComponent(step)}`; });
  live.svg = svg;
  main.replaceChildren(
    runHead(run),
    actionsView(run),
    h("section", { class: "columns" },
      h("div", { class: "graph" }, h("h2", {}, "Plan"), svg),
      h("div", { id: "step", class: "step-panel" }, h("p", { class: "dim" }, "Pick a step to see its attempts, calls and effects."))),
    h("section", { class: "details" }, ...runDetails(run)),
  );
}

// The run's goal, status and why, tokens and cost: drawn again on every refresh (a retried run loses its failure).
function runHead(run) {
  return h("section", { class: "run-head" },
    h("h1", {}, run.goal),
    h("p", {}, h("span", { class: `badge status-${run.status}`, id: "run-status" }, run.status), " ",
      h("code", {}, run.id), run.reason ? h("span", { class: "reason", id: "run-reason" }, ` — ${run.reason}`) : ""),
    run.request ? h("p", { class: "request" }, h("b", {}, "Request: "), run.request) : "",
    h("p", { class: "dim" }, `created ${fmtTime(run.created_at)} · plan v${run.plan_version} · ${run.tokens} tokens · `
      + `cost ${fmtCost(run.cost)}` + (run.parent_run ? ` · rerun of ${run.parent_run}` : "")));
}

function runDetails(run) {
  const out = [];
  if (run.assumptions.length) out.push(h("h2", {}, "Assumptions"), h("ul", {}, ...run.assumptions.map((a) => h("li", {}, a))));
  out.push(h("h2", {}, "Waterfall"), waterfall(run.waterfall, run.now));
  out.push(h("h2", {}, "Budget"), h("table", { class: "budget" }, ...Object.entries(run.budget).map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, v.used == null ? "—" : k === "cost" ? fmtCost(v.used) : k === "seconds" ? fmtDuration(v.used) : String(v.used)),
      h("td", {}, v.limit == null ? "no limit" : h("span", {}, h("progress", { max: v.limit, value: Math.min(v.used || 0, v.limit) }), ` of ${v.limit}`))))));
  out.push(h("h2", {}, "Plan versions"), ...run.versions.map((v) => h("div", { class: "version" },
    h("p", {}, h("b", {}, `v${v.number}`), ` made ${v.by ? "by " + v.by : "from a plan file or code"}`,
      v.reason ? ` (${v.reason})` : "", " · ",
      v.approved_by ? `approved by ${v.approved_by}${v.approval_note ? ": " + v.approval_note : ""}`
        : v.rejected_by ? `rejected by ${v.rejected_by}: ${v.rejected_reason}` : "not approved"),
    v.diff ? h("pre", { class: "diff" }, v.diff) : "")));
  if (run.model_calls.length) {
    out.push(h("h2", {}, "Model calls"), h("table", { class: "calls" },
      h("tr", {}, ...["step", "model", "tokens in/out", "cost", "latency", "prompt", "answer"].map((t) => h("th", {}, t))),
      ...run.model_calls.map((c) => h("tr", {}, h("td", {}, c.step || "planner"), h("td", {}, c.model),
        h("td", {}, `${c.input_tokens}/${c.output_tokens}`), h("td", {}, fmtCost(c.cost)),
        h("td", {}, fmtDuration(c.latency)), h("td", { class: "clip" }, c.prompt), h("td", { class: "clip" }, c.answer)))));
  }
  out.push(h("h2", {}, "Inputs"), valueView(run.inputs), h("h2", {}, "Output"), valueView(run.output));
  return out;
}

// --- actions: each says what it will do, and is confirmed before it is done -----------------------

function actionsView(run) {
  const box = h("section", { class: "actions", id: "actions" });
  if (run.actions_note) box.append(h("p", { class: "dim", id: "actions-note" }, run.actions_note));
  if (!run.actions.length) return box;
  box.append(h("h2", {}, "Actions"));
  const bar = h("div", { class: "action-bar" });
  const form = h("div", { class: "action-form", hidden: true });
  for (const a of run.actions) {
    const label = (LABELS[a.action] || a.action) + (a.step ? ` ${a.step}` : "");
    const button = h("button", { type: "button", "data-action": a.action, "data-step": a.step || "" }, label);
    button.addEventListener("click", () => openForm(form, run, a));
    bar.append(button);
  }
  box.append(bar, form);
  return box;
}

function openForm(form, run, a) {
  const note = ["approve", "reject", "pause", "cancel"].includes(a.action)
    ? h("input", { name: "note", placeholder: a.action === "approve" ? "note (optional)" : "reason (optional)" }) : null;
  const plan = a.action === "revise"
    ? h("textarea", { name: "plan", rows: 14, spellcheck: "false" }, JSON.stringify(run.plan, null, 2)) : null;
  const confirm = h("button", { type: "button", class: "confirm" }, `Confirm: ${LABELS[a.action] || a.action}`);
  const cancel = h("button", { type: "button" }, "Back");
  form.replaceChildren(h("p", { class: "does" }, a.does), ...(plan ? [plan] : []), ...(note ? [note] : []), confirm, cancel);
  form.hidden = false;
  cancel.addEventListener("click", () => { form.hidden = true; });
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    const body = {};
    if (a.step) body.step = a.step;
    if (note && note.value) body[["approve", "reject"].includes(a.action) ? "note" : "reason"] = note.value;
    if (plan) body.plan = plan.value;
    try {
      const done = await api(`/api/runs/${encodeURIComponent(run.id)}/${a.action}`, body);
      showError("");
      showNotice(done.message);
      form.hidden = true;
      if (done.run !== run.id) location.hash = `#/runs/${encodeURIComponent(done.run)}`;
      else scheduleRefresh(0);
    } catch (e) {
      showError(e.message);
      confirm.disabled = false;
    }
  });
}

// --- live: the run's events as they commit ---------------------------------------------------------

function follow(run) {
  const source = new EventSource(`/api/runs/${encodeURIComponent(run.id)}/stream?after=${run.last_seq}`);
  live.source = source;
  source.addEventListener("open", () => { setLive("on"); scheduleRefresh(0); });
  source.addEventListener("error", () => setLive("off"));
  const onUpdate = (msg) => {
    const u = JSON.parse(msg.data);
    if (live.source !== source) return;
    for (const [id, st] of Object.entries(u.steps)) if (live.svg) setStep(live.svg, id, st);
    const badge = document.getElementById("run-status");
    if (badge) { badge.textContent = u.run.status; badge.className = `badge status-${u.run.status}`; }
    window.charterLive.updates += 1;
    if (u.event) window.charterLive.latencies.push({ type: u.event.type, seq: u.seq, ms: Date.now() - u.event.at * 1000 });
    const relayout = u.run.plan_version !== live.run.plan_version;
    scheduleRefresh(relayout ? 0 : 150, relayout);
  };
  source.addEventListener("update", onUpdate);
  source.addEventListener("interrupted", onUpdate);
}

// The rest of the page (waterfall, actions, the open step) follows the graph a moment later, in one fetch.
function scheduleRefresh(delay, relayout = false) {
  clearTimeout(live.refresh);
  live.refresh = setTimeout(() => refresh(relayout).catch((e) => showError(e.message)), delay);
}

async function refresh(relayout) {
  if (!live.run) return;
  const run = await api(`/api/runs/${encodeURIComponent(live.run.id)}`);
  if (!live.run || live.run.id !== run.id) return;
  if (relayout || run.plan_version !== live.run.plan_version) {
    renderRun(run);
  } else {
    live.run = run;
    for (const s of run.steps) setStep(live.svg, s.id, s);
    document.querySelector("section.run-head").replaceWith(runHead(run));
    const open = document.querySelector("#actions .action-form:not([hidden])");
    if (!open) document.getElementById("actions").replaceWith(actionsView(run));  // never under a person's hands
    document.querySelector("section.details").replaceChildren(...runDetails(run));
  }
  await renderStep();
}

// --- a step ---------------------------------------------------------------------------------------

async function renderStep() {
  const panel = document.getElementById("step");
  if (!panel || !live.run) return;
  for (const g of live.svg.querySelectorAll("g.node")) g.classList.toggle("picked", g.dataset.step === live.step);
  if (!live.step) return;
  const s = await api(`/api/runs/${encodeURIComponent(live.run.id)}/steps/${encodeURIComponent(live.step)}`);
  const section = (title, ...children) => h("section", {}, h("h3", {}, title), ...children);
  const parts = [
    h("h2", {}, `Step ${s.id}`, h("span", { class: `badge status-${s.status}` }, s.status)),
    s.title ? h("p", {}, s.title) : "",
    h("p", { class: "why" }, h("b", {}, "Why: "), s.why || "(not given)"),
    h("p", { class: "dim" }, `${s.kind}${s.kind === "tool" ? " " + s.tool : ""}`
      + (s.deps.length ? ` · after ${s.deps.join(", ")}` : "") + (s.reused_from ? ` · reused from ${s.reused_from}` : "")
      + (Object.keys(s.retry).length ? ` · retry ${JSON.stringify(s.retry)}` : "")),
    section("Arguments", valueView(s.args)),
    section("Output", valueView(s.output)),
  ];
  if (s.error) parts.push(section("Error", valueView(s.error)));
  if (s.reason) parts.push(h("p", {}, h("b", {}, "Reason: "), s.reason));
  parts.push(section("Attempts", attemptsView(s.attempts)));
  for (const it of s.items) {
    parts.push(section(`Item ${it.item}: ${it.status}`, valueView(it.args), valueView(it.output),
      it.error ? valueView(it.error) : "", attemptsView(it.attempts)));
  }
  if (s.model_calls.length) parts.push(section("Model calls", ...s.model_calls.map((c) => h("div", { class: "call" },
    h("p", {}, `#${c.index} ${c.model} · attempt ${c.attempt}${c.item == null ? "" : " · item " + c.item} · `
      + `${c.input_tokens} in / ${c.output_tokens} out · ${fmtCost(c.cost)} · ${fmtDuration(c.latency)}`),
    h("details", {}, h("summary", {}, "prompt"), valueView(c.request)),
    h("details", { open: true }, h("summary", {}, "answer"), valueView(c.response))))));
  if (s.tool_calls.length) parts.push(section("Tool calls", h("table", { class: "calls" },
    h("tr", {}, ...["tool", "attempt", "arguments", "result"].map((t) => h("th", {}, t))),
    ...s.tool_calls.map((t) => h("tr", { class: t.refused ? "refused" : "" }, h("td", {}, t.tool + (t.refused ? " (refused)" : "")),
      h("td", {}, String(t.attempt)), h("td", {}, valueView(t.args)),
      h("td", {}, t.error ? h("span", { class: "err" }, t.error) : valueView(t.output)))))));
  if (s.effects.length) parts.push(section("Effects (ledger)", h("table", { class: "calls" },
    h("tr", {}, ...["at", "tool", "target", "key", "result"].map((t) => h("th", {}, t))),
    ...s.effects.map((e) => h("tr", {}, h("td", {}, fmtTime(e.at)), h("td", {}, e.tool), h("td", {}, JSON.stringify(e.target)),
      h("td", {}, h("code", {}, e.key)), h("td", {}, valueView(e.result)))))));
  panel.replaceChildren(...parts);
}

function attemptsView(attempts) {
  if (!attempts.length) return h("p", { class: "dim" }, "not started");
  return h("table", { class: "attempts" },
    h("tr", {}, ...["#", "started", "took", "outcome", "worker", "error", "next try"].map((t) => h("th", {}, t))),
    ...attempts.map((a) => h("tr", { class: `outcome-${a.outcome}` }, h("td", {}, String(a.number)),
      h("td", {}, fmtTime(a.started_at)), h("td", {}, fmtDuration(a.duration)), h("td", {}, a.outcome),
      h("td", {}, a.worker || "—"), h("td", {}, a.error ? valueView(a.error) : ""),
      h("td", {}, a.retry_at ? fmtTime(a.retry_at) : ""))));
}

// Start once every name of the module is defined.
window.addEventListener("hashchange", route);
route();
