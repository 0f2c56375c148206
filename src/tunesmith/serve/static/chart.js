// Charts are drawn as plain SVG by hand: a line chart and a histogram are a few dozen lines
// each, update in place when a job reports new steps, and need no vendored charting library.

const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 52, right: 14, top: 30, bottom: 30 };

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(lo, hi, count) {
  if (hi === lo) return [lo];
  return Array.from({ length: count + 1 }, (_, i) => lo + ((hi - lo) * i) / count);
}

// Whole numbers on an axis that spans more than a few units; two decimals on a narrow one.
function label(value, span = 0) {
  return span > 8 || Math.abs(value) >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(2);
}

function frame(svg, width, height, [x0, x1], [y0, y1], xName, yName, whole = false) {
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0 || 1)) * (width - PAD.left - PAD.right);
  const sy = (y) => height - PAD.bottom - ((y - y0) / (y1 - y0 || 1)) * (height - PAD.top - PAD.bottom);
  for (const y of ticks(y0, y1, 4)) {
    svg.append(el("line", { x1: PAD.left, x2: width - PAD.right, y1: sy(y), y2: sy(y), class: "grid" }));
    svg.append(el("text", { x: PAD.left - 6, y: sy(y) + 4, "text-anchor": "end", class: "tick" }, label(y, whole ? Infinity : y1 - y0)));
  }
  for (const x of ticks(x0, x1, Math.min(5, Math.max(1, x1 - x0)))) {
    svg.append(el("text", { x: sx(x), y: height - PAD.bottom + 16, "text-anchor": "middle", class: "tick" },
      label(x, whole ? Infinity : x1 - x0)));
  }
  svg.append(el("text", { x: width - PAD.right, y: height - 2, "text-anchor": "end", class: "axis" }, xName));
  svg.append(el("text", { x: 4, y: 12, class: "axis" }, yName));
  return [sx, sy];
}

// series: [{name, points: [[x, y], ...], cls}]; a series with one point is drawn as a dot.
export function lineChart(series, { width = 640, height = 260, xName = "step", yName = "loss" } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" },
      "no points yet"));
    return svg;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [lo, hi] = [Math.min(...ys), Math.max(...ys)];
  const margin = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
  const [sx, sy] = frame(svg, width, height, [Math.min(0, ...xs), Math.max(1, ...xs)],
    [Math.max(0, lo - margin), hi + margin], xName, yName);
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    svg.append(el("path", { d, class: `line ${s.cls}`, "data-series": s.name, "data-points": s.points.length }));
    for (const [x, y] of s.points.length <= 40 ? s.points : []) {
      svg.append(el("circle", { cx: sx(x), cy: sy(y), r: 2.5, class: `dot ${s.cls}` }));
    }
    const legendX = PAD.left + i * 150;
    svg.append(el("rect", { x: legendX, y: 6, width: 12, height: 3, class: `key ${s.cls}` }));
    svg.append(el("text", { x: legendX + 16, y: 11, class: "legend" }, s.name));
  });
  return svg;
}

// A histogram of example lengths: edges has one more entry than counts.
export function histogram(edges, counts, { width = 640, height = 220, xName = "tokens per example" } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  if (!counts.length) return svg;
  const [sx, sy] = frame(svg, width, height, [edges[0], edges[edges.length - 1]], [0, Math.max(...counts)],
    xName, "examples", true);
  counts.forEach((count, i) => {
    const x = sx(edges[i]);
    const w = Math.max(1, sx(edges[i + 1]) - x - 1);
    const bar = el("rect", { x, y: sy(count), width: w, height: sy(0) - sy(count), class: "bar" });
    bar.append(el("title", {}, `${label(edges[i])}–${label(edges[i + 1])} tokens: ${count} examples`));
    svg.append(bar);
  });
  return svg;
}
