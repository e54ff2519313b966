// The Releases page's compression reports: for each, two uPlot panels as report.png draws
// them, model size against quality (left) and against p50 latency (right), one labelled point
// per measured model, the chosen one ringed in red. The figures come from the JSON that the
// page carries inside each .report-chart (the release's stored summary).
(function () {
  "use strict";
  const COLOURS = ["#2d6cdf", "#1f8a4c", "#c77d12", "#7a4cc2", "#0f8c8c", "#b0407a",
                   "#5f6b7a", "#8a6d1f"];
  const CHOSEN = "#c23a32";

  function panel(box, models, key, title, unit, width) {
    const shown = models.filter(m => typeof m[key] === "number");
    const xs = shown.map(m => m.kib);
    const series = [{label: "size (KiB)"}];
    const cols = [xs];
    shown.forEach((m, i) => {
      const colour = COLOURS[i % COLOURS.length];
      series.push({
        label: m.method + (m.chosen ? " (chosen)" : ""),
        stroke: m.chosen ? CHOSEN : colour,
        paths: () => null,  // points only: a scatter over the sorted sizes
        points: {show: true, size: m.chosen ? 14 : 10, width: m.chosen ? 3 : 1,
                 stroke: m.chosen ? CHOSEN : "#1d2330", fill: colour},
      });
      cols.push(xs.map((_, k) => (k === i ? m[key] * m.scale[key] : null)));
    });
    const ys = shown.map(m => m[key] * m.scale[key]);
    const top = Math.max(1, ...xs);
    const plot = new uPlot({
      title: title, width: width, height: 260,
      scales: {
        x: {time: false, range: () => [0, top * 1.35]},  // room for the labels on the right
        y: {range: () => {
          // at least a point of quality, or a tenth of the slowest latency, around the figures
          const lo = Math.min(...ys), hi = Math.max(...ys);
          const pad = Math.max((hi - lo) * 0.25, key === "quality" ? 1 : hi * 0.1 || 0.01);
          return [Math.max(0, lo - pad), hi + pad];
        }},
      },
      axes: [{label: "model size (KiB)"}, {label: unit, size: 60}],
      series: series,
      legend: {live: false},
      cursor: {drag: {x: false, y: false}},
      hooks: {draw: [u => {
        const ctx = u.ctx, dpr = window.devicePixelRatio || 1;
        ctx.save();
        ctx.font = (11 * dpr) + "px system-ui, sans-serif";
        ctx.fillStyle = "#1d2330";
        shown.forEach((m, i) => {
          const x = u.valToPos(xs[i], "x", true), y = u.valToPos(ys[i], "y", true);
          ctx.fillText(m.method, x + 9 * dpr, y - (6 + 12 * (i % 3)) * dpr);
        });
        ctx.restore();
      }]},
    }, cols, box);
    return plot;
  }

  for (const box of document.querySelectorAll(".report-chart")) {
    const source = box.querySelector("script[type='application/json']");
    let report;
    try { report = JSON.parse(source.textContent); } catch (e) { box.dataset.error = "json"; continue; }
    const label = report.quality === "accuracy" ? "accuracy (%)" : "agreement with original (%)";
    const models = report.candidates
      .filter(c => typeof c.bytes === "number")
      .map(c => ({...c, kib: c.bytes / 1024, scale: {quality: 100, latency_p50_ms: 1}}))
      .sort((a, b) => a.kib - b.kib);  // uPlot wants its x values in order
    if (!models.length) { box.dataset.drawn = "0"; continue; }
    const width = Math.max(320, Math.min(520, (box.clientWidth || 900) / 2 - 12));
    panel(box, models, "quality", "size against " + report.quality, label, width);
    panel(box, models, "latency_p50_ms", "size against latency", "LiteRT p50 (ms)", width);
    box.dataset.drawn = String(box.querySelectorAll("canvas").length);
  }
})();
