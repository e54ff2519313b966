// The device page's charts: uPlot over /api/v1/devices/{id}/series, redrawn every 10 s.
(function () {
  "use strict";
  const root = document.getElementById("charts");
  if (!root) return;
  const device = root.dataset.device;
  const series = [["fps", "fps", "frames/s"], ["p95_ms", "p95 latency", "ms"],
                  ["cpu_percent", "CPU", "%"], ["rss_mb", "RSS", "MB"],
                  ["outbox_depth", "outbox depth", "records"]];
  let windowName = root.dataset.window || "15m";
  const plots = {};
  let span = [0, 1];  // the window shown, whatever the points: [since, until] in epoch s

  function draw(data) {
    for (const [key, title, unit] of series) {
      const box = document.getElementById("chart-" + key);
      const cols = [data.t, data[key]];
      span = [data.since, data.until];
      if (plots[key]) { plots[key].setData(cols); continue; }
      box.innerHTML = "";
      plots[key] = new uPlot({
        width: Math.max(320, box.clientWidth - 10), height: 170,
        scales: {x: {time: true, range: () => span}},
        series: [{}, {label: title + " (" + unit + ")", stroke: "#2d6cdf", width: 1.5,
                      fill: "rgba(45,108,223,0.08)", spanGaps: false,
                      points: {show: data.t.length < 60}}],
        axes: [{}, {size: 55}], legend: {show: true},
      }, cols, box);
    }
    root.dataset.points = String(data.t.length);
  }

  function load() {
    fetch("/api/v1/devices/" + encodeURIComponent(device) + "/series?window=" + windowName,
          {credentials: "same-origin"})
      .then(r => r.ok ? r.json() : Promise.reject(r.status))
      .then(draw)
      .catch(status => { root.dataset.error = String(status); });
  }

  for (const b of document.querySelectorAll(".windows button")) {
    b.addEventListener("click", () => {
      windowName = b.dataset.window;
      for (const o of document.querySelectorAll(".windows button")) o.classList.remove("on");
      b.classList.add("on");
      load();
    });
  }
  load();
  setInterval(load, 10000);
})();
