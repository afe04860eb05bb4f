// Small building blocks of the page: elements, numbers and times for people, values, the waterfall.

// An element with attributes and children (text children become text nodes, never HTML).
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "hidden") node.hidden = Boolean(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === "") continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function fmtAge(seconds) {
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

export function fmtTime(at) {
  return at == null ? "—" : new Date(at * 1000).toLocaleString();
}

export function fmtDuration(seconds) {
  if (seconds == null) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}

export function fmtCost(cost) {
  if (cost === null || cost === undefined) return "—";
  return `$${Number(cost).toFixed(cost < 0.01 && cost > 0 ? 5 : 2)}`;
}

// A value as the API gives it: as JSON; when it was cut, its start and a button that fetches it whole; when
// `charter prune` dropped it, what it was.
export function valueView(value) {
  if (value && typeof value === "object" && value.$truncated) {
    const pre = h("pre", { class: "value" }, value.preview + "…");
    const button = h("button", { type: "button", class: "whole" }, `open whole (${value.size} characters)`);
    button.addEventListener("click", async () => {
      button.disabled = true;
      const res = await fetch(value.href, { credentials: "same-origin" });
      const data = await res.json();
      pre.textContent = res.ok ? JSON.stringify(data.value ?? data, null, 2) : data.error;
      button.remove();
    });
    return h("div", {}, pre, button);
  }
  if (isPruned(value)) {  // dropped by `charter prune`: only its size is left
    return h("p", { class: "dim pruned" }, `pruned by charter prune (${Number(value.size || 0).toLocaleString("en-US")} bytes)`);
  }
  if (value === null || value === undefined) return h("p", { class: "dim" }, "—");
  return h("pre", { class: "value" }, typeof value === "string" ? value : JSON.stringify(value, unpruned, 2));
}

// A part of a value that `charter prune` dropped (`{"$pruned": hash, "size": n}`), as words in the JSON shown.
function unpruned(key, v) {
  return isPruned(v) ? `(pruned by charter prune: ${v.size} bytes)` : v;
}

function isPruned(v) {
  return Boolean(v) && typeof v === "object" && "$pruned" in v && "size" in v && Object.keys(v).length === 2;
}

// When each attempt ran, for how long, and where: one bar per attempt on a shared time axis.
export function waterfall(rows, now) {
  if (!rows.length) return h("p", { class: "dim" }, "nothing has run yet");
  const start = Math.min(...rows.map((r) => r.start));
  const end = Math.max(...rows.map((r) => r.end ?? now), start + 0.001);
  const span = end - start;
  const table = h("table", { class: "waterfall" },
    h("tr", {}, ...["step", "attempt", "worker", "when", ""].map((t) => h("th", {}, t))));
  for (const r of rows) {
    const left = ((r.start - start) / span) * 100;
    const width = Math.max(0.5, (((r.end ?? now) - r.start) / span) * 100);
    const bar = h("div", { class: `bar outcome-${r.outcome}`, title: `${r.outcome}, ${fmtDuration((r.end ?? now) - r.start)}` });
    bar.style.marginLeft = `${left}%`;  // CSSOM, which the page's content security policy allows
    bar.style.width = `${width}%`;
    table.append(h("tr", {}, h("td", {}, r.step + (r.item == null ? "" : `[${r.item}]`)), h("td", {}, String(r.attempt)),
      h("td", {}, r.worker || "—"), h("td", {}, `+${fmtDuration(r.start - start)} · ${fmtDuration(r.end == null ? null : r.end - r.start)}`),
      h("td", { class: "track" }, bar)));
  }
  return table;
}
