// The console's charts: inline SVG, drawn from columns of per-second figures.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563",
  "#ca8a04", "#db2777", "#65a30d"];

// A line chart over time. series: [{name, values}] aligned with ts (Unix seconds, each
// point covering opts.spans[i] seconds, 1 if none); the x axis is the last `spanS`
// seconds up to `nowS`. Seconds no point covers count as `gap`.
function lineChart(id, ts, series, opts) {
  const host = document.getElementById(id);
  if (!host) return;
  const w = 560, h = 150, left = 46, bottom = 18;
  const nowS = opts.nowS, spanS = opts.spanS;
  let top = opts.floorMax || 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > top) top = v;
  if (opts.line !== undefined && opts.line !== null) top = Math.max(top, opts.line);
  top = top > 0 ? top * 1.1 : 1;
  const x = (t) => left + ((t - (nowS - spanS)) / spanS) * (w - left - 4);
  const y = (v) => 4 + (1 - v / top) * (h - bottom - 8);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "chart");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("line", { x1: left, y1: y(0), x2: w - 4, y2: y(0), class: "axis" });
  add("text", { x: left - 4, y: y(top / 1.1) + 4, class: "tick", "text-anchor": "end" },
    (top / 1.1).toPrecision(3));
  add("text", { x: left - 4, y: y(0), class: "tick", "text-anchor": "end" }, "0");
  add("text", { x: left, y: h - 2, class: "tick" }, `-${Math.round(spanS / 60)} min`);
  if (spanS >= 600) { // a mark every 5 or 15 minutes
    const step = spanS > 1800 ? 900 : 300;
    for (let t = Math.ceil((nowS - spanS) / step) * step + step; t < nowS; t += step) {
      add("line", { x1: x(t), x2: x(t), y1: y(0), y2: y(0) + 3, class: "axis" });
    }
  }
  add("text", { x: w - 4, y: h - 2, class: "tick", "text-anchor": "end" }, "now");
  if (opts.line !== undefined && opts.line !== null) {
    add("line", { x1: left, x2: w - 4, y1: y(opts.line), y2: y(opts.line), class: "objective" });
  }
  series.forEach((s, i) => {
    const points = [];
    let previous = null; // the end of the last point drawn (its start + its span)
    ts.forEach((t, j) => {
      const v = s.values[j];
      if (v === null || t < nowS - spanS) return;
      // a second with no sample is a second without load: drop to the gap value
      if (opts.gap !== undefined && previous !== null && t > previous) {
        points.push(`${x(previous).toFixed(1)},${y(opts.gap).toFixed(1)}`);
        points.push(`${x(t - 1).toFixed(1)},${y(opts.gap).toFixed(1)}`);
      }
      points.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      previous = t + (opts.spans ? opts.spans[j] : 1);
    });
    if (opts.gap !== undefined && previous !== null && nowS - previous > 1) {
      points.push(`${x(previous).toFixed(1)},${y(opts.gap).toFixed(1)}`);
      points.push(`${x(nowS).toFixed(1)},${y(opts.gap).toFixed(1)}`);
    }
    add("polyline", { points: points.join(" "), stroke: COLORS[i % COLORS.length],
      class: "series", "data-series": s.name, "data-points": points.length });
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[i % COLORS.length]; // CSSOM: allowed by the page's CSP
    item.append(swatch, s.name);
    legend.append(item);
  });
  const title = document.createElement("h3");
  title.textContent = opts.title;
  host.replaceChildren(title, svg, legend);
  host.dataset.points = String(ts.length);
  host.dataset.sum = String(series.reduce((a, s) => a + s.values.reduce(
    (b, v) => b + (v || 0), 0), 0));
}

