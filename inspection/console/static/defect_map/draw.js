// Drawing the two surfaces on one canvas: the same axes and orientation as the PDF report
// (inspection/defect_style.py): length along x, head at the left; width up y, drive side at the bottom.

import { BOTTOM, PERIODIC } from "./data.js";

export const SURFACES = ["top", "bottom"];
const MARGIN = { left: 62, right: 14, title: 22, axis: 36 };

// Plot rectangles of the two panels for a canvas of css size width x height.
export function layout(width, height) {
  const panelHeight = height / 2;
  const plotHeight = Math.max(40, panelHeight - MARGIN.title - MARGIN.axis);
  return SURFACES.map((surface, i) => ({
    surface, left: MARGIN.left, top: i * panelHeight + MARGIN.title,
    width: Math.max(40, width - MARGIN.left - MARGIN.right), height: plotHeight,
  }));
}

export function project(panel, meta, x, y) {
  return [panel.left + (x / meta.length_m) * panel.width, panel.top + panel.height - (y / meta.width_mm) * panel.height];
}

// Marker radius in css px from the severity's marker area (px^2, as Vega-Lite's size).
export function radius(meta, severity) {
  const area = meta.severity_areas[Math.min(Math.max(severity, 1), 3) - 1];
  return Math.sqrt(area / Math.PI);
}

function ticks(max, count) {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const values = [];
  for (let v = 0; v <= max + 1e-9; v += step) values.push(Number(v.toFixed(6)));
  return values;
}

function axes(ctx, panel, meta, count) {
  const { left, top, width, height } = panel;
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#31333f";
  ctx.strokeStyle = "#e6e6e6";
  ctx.lineWidth = 1;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const v of ticks(meta.length_m, Math.max(2, Math.floor(width / 90)))) {
    const [px] = project(panel, meta, v, 0);
    ctx.beginPath(); ctx.moveTo(px + 0.5, top); ctx.lineTo(px + 0.5, top + height); ctx.stroke();
    ctx.fillText(String(v), px, top + height + 4);
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of ticks(meta.width_mm, Math.max(2, Math.floor(height / 45)))) {
    const [, py] = project(panel, meta, 0, v);
    ctx.beginPath(); ctx.moveTo(left, py + 0.5); ctx.lineTo(left + width, py + 0.5); ctx.stroke();
    ctx.fillText(String(v), left - 5, py);
  }
  ctx.strokeStyle = "#888";
  ctx.strokeRect(left + 0.5, top + 0.5, width, height);
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  ctx.fillText(meta.x_title, left + width / 2, top + height + MARGIN.axis);
  ctx.save();
  ctx.translate(12, top + height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "middle";
  ctx.fillText(meta.y_title, 0, 0);
  ctx.restore();
  ctx.font = "bold 13px sans-serif";
  ctx.textAlign = "left";
  ctx.fillText(`${panel.surface} surface (${count} defects)`, left, top - 5);
  ctx.restore();
}

function marker(ctx, px, py, r, diamond) {
  ctx.beginPath();
  if (diamond) {
    const d = r * 1.25;
    ctx.moveTo(px, py - d); ctx.lineTo(px + d, py); ctx.lineTo(px, py + d); ctx.lineTo(px - d, py); ctx.closePath();
  } else {
    ctx.arc(px, py, r, 0, 2 * Math.PI);
  }
}

export function periodicLines(meta, surface) {
  return meta.periodic.filter((p) => p.surface === null || p.surface === surface);
}

// Everything: both panels, rejected defects first (faint and hollow) so counted ones stay on top.
export function draw(ctx, view) {
  const { meta, points, n, panels, visible, selectedIndex, focusIndex, rejected } = view;
  const counts = { top: 0, bottom: 0 };
  for (let i = 0; i < n; i++) if (visible(i)) counts[points.flags[i] & BOTTOM ? "bottom" : "top"] += 1;
  for (const panel of panels) axes(ctx, panel, meta, counts[panel.surface]);
  for (const pass of [true, false]) {
    for (let i = 0; i < n; i++) {
      if ((points.status[i] === rejected) !== pass || !visible(i)) continue;
      const panel = panels[points.flags[i] & BOTTOM ? 1 : 0];
      const [px, py] = project(panel, meta, points.x[i], points.y[i]);
      marker(ctx, px, py, radius(meta, points.severity[i]), points.flags[i] & PERIODIC);
      const colour = meta.colours[points.cls[i]];
      if (pass) {
        ctx.globalAlpha = 0.25; ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.stroke();
      } else {
        ctx.globalAlpha = 0.85; ctx.fillStyle = colour; ctx.fill();
      }
    }
  }
  ctx.globalAlpha = 1;
  for (const panel of panels) {
    ctx.save();
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "rgba(0,0,0,0.6)";
    for (const line of periodicLines(meta, panel.surface)) {
      const [, py] = project(panel, meta, 0, line.across_mm);
      ctx.beginPath(); ctx.moveTo(panel.left, py); ctx.lineTo(panel.left + panel.width, py); ctx.stroke();
    }
    ctx.restore();
  }
  ring(ctx, view, selectedIndex, "#000", []);
  ring(ctx, view, focusIndex, "#1c83e1", [3, 2]);
}

function ring(ctx, view, i, colour, dash) {
  if (i === null || i === undefined || i < 0) return;
  const { meta, points, panels } = view;
  const panel = panels[points.flags[i] & BOTTOM ? 1 : 0];
  const [px, py] = project(panel, meta, points.x[i], points.y[i]);
  ctx.save();
  ctx.setLineDash(dash);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  marker(ctx, px, py, radius(meta, points.severity[i]) + 3, points.flags[i] & PERIODIC);
  ctx.stroke();
  ctx.restore();
}
