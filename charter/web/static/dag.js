// The plan as a graph: laid out by dagre (vendored, see scripts/vendor-web-assets), drawn as SVG.
// Only the drawing is ours: positions and edge routes are dagre's.
import dagre from "./vendor/dagre.esm.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 170;
const NODE_H = 46;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function short(text, n) {
  return text.length <= n ? text : text.slice(0, n - 1) + "…";
}

function kindLabel(step) {
  if (step.kind === "tool") return step.tool;
  return step.kind + (step.for_each ? " · for each" : "");
}

// Draw `steps` ([{id, deps, kind, tool, status, ...}]) into a new <svg>; `onPick(stepId)` on a click.
export function drawDag(steps, onPick) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 46, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const s of steps) g.setNode(s.id, { width: NODE_W, height: NODE_H });
  for (const s of steps) for (const d of s.deps) if (g.hasNode(d)) g.setEdge(d, s.id);
  dagre.layout(g);
  const { width, height } = g.graph();
  const svg = el("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(el("title", {}, "The plan's steps and what each waits for"));
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
                                orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    const d = pts.map((p, i) => `${i ? "L" : "M"} ${p.x} ${p.y}`).join(" ");
    svg.append(el("path", { d, class: "edge", "marker-end": "url(#arrow)", "data-from": e.v, "data-to": e.w }));
  }
  for (const s of steps) {
    const n = g.node(s.id);
    const group = el("g", { class: `node status-${s.status}`, "data-step": s.id, tabindex: 0,
                            transform: `translate(${n.x - NODE_W / 2}, ${n.y - NODE_H / 2})` });
    group.append(el("title", {}, `${s.id}: ${s.status}`));
    group.append(el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    group.append(el("text", { x: 10, y: 18, class: "node-id" }, short(s.id, 22)));
    group.append(el("text", { x: 10, y: 35, class: "node-sub" }, short(kindLabel(s), 18)));
    group.append(el("text", { x: NODE_W - 8, y: 35, class: "node-status", "text-anchor": "end" }, statusText(s)));
    group.addEventListener("click", () => onPick(s.id));
    group.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onPick(s.id); });
    svg.append(group);
  }
  return svg;
}

function statusText(s) {
  const items = s.items_total ? ` ${s.items_done}/${s.items_total}` : "";
  return s.status + items;
}

// Show a step's new state on its node (a live update): no relayout, only its class and label.
export function setStep(svg, stepId, state) {
  const group = svg.querySelector(`g.node[data-step="${CSS.escape(stepId)}"]`);
  if (!group) return false;
  group.setAttribute("class", `node status-${state.status}`);
  group.querySelector(".node-status").textContent = statusText(state);
  group.querySelector("title").textContent = `${stepId}: ${state.status}`;
  return true;
}
