// Small SVG line charts, drawn by hand: no library, nothing fetched.
// chart(container, {title, unit, series: [{name, points: [[x, y], ...], cls}], limit})
const NS = "http://www.w3.org/2000/svg";
const W = 360;
const H = 150;
const PAD = { l: 46, r: 10, t: 8, b: 22 };

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  if (a === 0) return "0";
  return v.toPrecision(2);
}

function duration(s) {
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

export function chart(container, opts) {
  const box = document.createElement("div");
  box.className = "chart";
  box.dataset.testid = `chart-${opts.id}`;
  const head = document.createElement("div");
  head.className = "chart-title";
  const last = opts.series[0]?.points.at(-1);
  head.textContent = `${opts.title}${last ? ` — ${fmt(last[1])}${opts.unit || ""}` : ""}`;
  box.append(head);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title });
  const all = opts.series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter((y) => y !== null && Number.isFinite(y));
  if (opts.limit) ys.push(opts.limit);
  const x0 = xs.length ? Math.min(...xs) : 0;
  const x1 = xs.length ? Math.max(...xs, x0 + 1) : 1;
  const top = Math.max(0, ...(ys.length ? ys : [1]));
  const y1 = (top > 0 ? top : 1) * 1.1;
  const sx = (x) => PAD.l + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
  const sy = (y) => H - PAD.b - (y / y1) * (H - PAD.t - PAD.b);
  for (const f of [0, 0.5, 1]) {
    const y = sy(y1 * f);
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "grid" }));
    const t = svg("text", { x: PAD.l - 4, y: y + 4, class: "tick", "text-anchor": "end" });
    t.textContent = fmt(y1 * f);
    root.append(t);
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    const t = svg("text", { x: sx(x), y: H - 6, class: "tick", "text-anchor": anchor });
    t.textContent = duration(x);
    root.append(t);
  }
  if (opts.limit) {
    const y = sy(opts.limit);
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "limit" }));
  }
  for (const s of opts.series) {
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    root.append(svg("path", { d, class: `line ${s.cls || ""}` }));
  }
  if (!ys.length || !all.length) {
    const t = svg("text", { x: W / 2, y: H / 2, class: "tick", "text-anchor": "middle" });
    t.textContent = "no data yet";
    root.append(t);
  }
  box.append(root);
  if (opts.series.length > 1 || opts.limit) {
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of opts.series) {
      const item = document.createElement("span");
      item.className = `key ${s.cls || ""}`;
      item.textContent = s.name;
      legend.append(item);
    }
    if (opts.limit) {
      const item = document.createElement("span");
      item.className = "key limit";
      item.textContent = opts.limitName || "limit";
      legend.append(item);
    }
    box.append(legend);
  }
  container.append(box);
}

// Rates per second of a cumulative counter column, between samples at least minDt
// apart (the run's last sample may come a moment after the one before it).
export function rates(points, col, minDt = 0.5) {
  const out = [];
  let prev = 0;
  for (let i = 1; i < points.length; i++) {
    const dt = points[i][0] - points[prev][0];
    const a = points[prev][col];
    const b = points[i][col];
    if (dt < minDt || a === null || b === null) continue;
    out.push([points[i][0], (b - a) / dt]);
    prev = i;
  }
  return out;
}

export function values(points, col) {
  return points.map((p) => [p[0], p[col]]);
}
