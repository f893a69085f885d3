// The defect map's state and events: a render from Streamlit redraws; a click (or Enter on the
// keyboard-focused defect) sends {id, at} back, `at` making a repeated click on one defect a new value.

import { BOTTOM, PERIODIC, decode, keyboardOrder } from "./data.js";
import { SURFACES, draw, layout, periodicLines, project, radius } from "./draw.js";
import { onRender, setFrameHeight, setValue } from "./streamlit.js";

const canvas = document.getElementById("map");
const legend = document.getElementById("legend");
const tip = document.getElementById("tip");
const announce = document.getElementById("announce");
const ctx = canvas.getContext("2d");

let view = null; // meta, points, n, panels, visible, selectedIndex, focusIndex, rejected
let version = null; // of the decoded points: a click's rerun sends the same points again, no need to decode
let order = { top: [], bottom: [] };
let frameHeight = 0;

onRender((args) => {
  const meta = args.meta;
  if (meta.version !== version) {
    version = meta.version;
    view = { meta, points: decode(args.points, meta.n), n: meta.n, focusIndex: null };
    legendFor(meta);
  }
  view.meta = meta;
  view.rejected = meta.statuses.indexOf("rejected");
  const hide = Boolean(args.hide_rejected);
  view.visible = (i) => !(hide && view.points.status[i] === view.rejected);
  view.selectedIndex = indexOf(args.selected);
  order = keyboardOrder(view.points, view.n, view.visible);
  if (view.focusIndex !== null && !view.visible(view.focusIndex)) view.focusIndex = null;
  if (args.height !== frameHeight) {
    frameHeight = args.height;
    setFrameHeight(frameHeight);
  }
  resize();
});

function indexOf(id) {
  if (id === null || id === undefined) return null;
  const i = view.points.id.indexOf(id);
  return i < 0 ? null : i;
}

function resize() {
  if (!view) return;
  const width = document.body.clientWidth;
  const height = Math.max(200, frameHeight - legend.offsetHeight);
  const scale = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  view.panels = layout(width, height);
  redraw();
  canvas.dataset.drawn = String(view.n); // what tests and `bench console` wait for
}

function redraw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  draw(ctx, view);
}

window.addEventListener("resize", resize);

function legendFor(meta) {
  const entries = meta.legend_classes.map((c) => {
    const i = meta.classes.indexOf(c);
    return `<span><i style="background:${meta.colours[i]}"></i>${escapeHtml(c)}</span>`;
  });
  entries.push("<span>size: severity 1-3</span>", '<span><i class="diamond"></i>periodic</span>',
    '<span><i class="hollow"></i>rejected</span>');
  if (meta.periodic.length) entries.push("<span>- - roll mark (periodic) line</span>");
  legend.innerHTML = entries.join("");
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// The defect under the pointer: the nearest visible marker whose circle (plus 3 px) holds it.
function hit(mx, my) {
  let best = null;
  let bestDistance = Infinity;
  for (let i = 0; i < view.n; i++) {
    if (!view.visible(i)) continue;
    const panel = view.panels[view.points.flags[i] & BOTTOM ? 1 : 0];
    const [px, py] = project(panel, view.meta, view.points.x[i], view.points.y[i]);
    const distance = Math.hypot(px - mx, py - my);
    if (distance <= radius(view.meta, view.points.severity[i]) + 3 && distance <= bestDistance) {
      best = i;
      bestDistance = distance;
    }
  }
  return best;
}

function periodicHit(mx, my) {
  for (const panel of view.panels) {
    if (mx < panel.left || mx > panel.left + panel.width) continue;
    for (const line of periodicLines(view.meta, panel.surface)) {
      const [, py] = project(panel, view.meta, 0, line.across_mm);
      if (Math.abs(py - my) <= 3) return line;
    }
  }
  return null;
}

function describe(i) {
  const { meta, points } = view;
  const periodic = points.flags[i] & PERIODIC ? " · periodic" : "";
  return {
    html: `<b>#${points.id[i]} ${escapeHtml(meta.classes[points.cls[i]])}</b><br>score ${points.score[i].toFixed(2)}`
      + ` · severity ${points.severity[i]}${periodic}<br>${points.x[i].toFixed(2)} m along · `
      + `${points.y[i].toFixed(0)} mm across<br>${SURFACES[points.flags[i] & BOTTOM ? 1 : 0]} · `
      + `review: ${escapeHtml(meta.statuses[points.status[i]])}`,
    text: `Defect ${points.id[i]}, ${meta.classes[points.cls[i]]}, score ${points.score[i].toFixed(2)}, `
      + `severity ${points.severity[i]}, ${points.x[i].toFixed(2)} m along, ${points.y[i].toFixed(0)} mm across, `
      + `${meta.statuses[points.status[i]]}`,
  };
}

function mm(value) {
  return value === null ? "?" : `${Math.round(value)} mm`;
}

function showTip(html, px, py) {
  tip.innerHTML = html;
  tip.style.display = "block";
  const x = px + 14 + tip.offsetWidth > document.body.clientWidth ? px - 14 - tip.offsetWidth : px + 14;
  const y = py + 14 + tip.offsetHeight > frameHeight ? py - 14 - tip.offsetHeight : py + 14;
  tip.style.left = `${Math.max(0, x)}px`;
  tip.style.top = `${Math.max(0, y)}px`;
}

function pointer(event) {
  const rect = canvas.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top, rect];
}

canvas.addEventListener("mousemove", (event) => {
  if (!view) return;
  const [mx, my, rect] = pointer(event);
  const i = hit(mx, my);
  if (i !== null) {
    canvas.style.cursor = "pointer";
    showTip(describe(i).html, mx + rect.left, my + rect.top);
    return;
  }
  canvas.style.cursor = "crosshair";
  const line = periodicHit(mx, my);
  if (line) {
    showTip(`<b>periodic ${escapeHtml(line.cls)}</b><br>pitch ${mm(line.pitch_mm)} · roll diameter `
      + `${mm(line.roll_diameter_mm)}<br>${line.count} repeats`, mx + rect.left, my + rect.top);
  } else {
    tip.style.display = "none";
  }
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });

function select(i) {
  view.selectedIndex = i;
  redraw(); // the ring moves at once; the page's rerun then shows the crop and the form
  setValue({ id: view.points.id[i], at: Date.now() });
}

canvas.addEventListener("click", (event) => {
  if (!view) return;
  const [mx, my] = pointer(event);
  const i = hit(mx, my);
  if (i !== null) select(i);
});

// Keyboard: left / right move along the strip, up / down switch surface (to the nearest defect
// along), Home / End the ends, Enter or space select. Tab leaves the map as usual.
function focusOn(i) {
  view.focusIndex = i;
  redraw();
  const panel = view.panels[view.points.flags[i] & BOTTOM ? 1 : 0];
  const [px, py] = project(panel, view.meta, view.points.x[i], view.points.y[i]);
  const rect = canvas.getBoundingClientRect();
  const text = describe(i);
  showTip(text.html, px + rect.left, py + rect.top);
  announce.textContent = text.text;
}

function nearestAlong(list, x) {
  let best = list[0];
  for (const i of list) if (Math.abs(view.points.x[i] - x) < Math.abs(view.points.x[best] - x)) best = i;
  return best;
}

canvas.addEventListener("keydown", (event) => {
  if (!view) return;
  const current = view.focusIndex ?? view.selectedIndex;
  const surface = current === null ? (order.top.length ? "top" : "bottom")
    : (view.points.flags[current] & BOTTOM ? "bottom" : "top");
  const list = order[surface];
  const position = current === null ? -1 : list.indexOf(current);
  let next = null;
  switch (event.key) {
    case "ArrowRight": next = list[Math.min(position + 1, list.length - 1)]; break;
    case "ArrowLeft": next = list[Math.max(position - 1, 0)]; break;
    case "Home": next = list[0]; break;
    case "End": next = list[list.length - 1]; break;
    case "ArrowUp":
    case "ArrowDown": {
      const other = order[surface === "top" ? "bottom" : "top"];
      if (other.length) next = current === null ? other[0] : nearestAlong(other, view.points.x[current]);
      break;
    }
    case "Enter":
    case " ":
      if (current !== null) select(current);
      event.preventDefault();
      return;
    case "Escape":
      view.focusIndex = null; tip.style.display = "none"; redraw();
      return;
    default:
      return;
  }
  event.preventDefault();
  if (next !== undefined && next !== null) focusOn(next);
});
canvas.addEventListener("blur", () => {
  if (view) { view.focusIndex = null; tip.style.display = "none"; redraw(); }
});
