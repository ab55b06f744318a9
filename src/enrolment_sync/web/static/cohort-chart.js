// The cohort page's counts chart: one line per status, data from the page's JSON block (no inline script).
(function () {
  "use strict";
  var colours = { ENROLLED: "#8a94a6", IN_PROGRESS: "#2457c5", COMPLETED: "#1f8a4c", FAILED: "#b25e00", CANCELLED: "#c0262d" };
  var chart = null;
  function draw() {
    var block = document.getElementById("cohort-chart");
    if (!block || typeof Chart === "undefined") { return; }
    if (chart) { chart.destroy(); }
    var data = JSON.parse(block.textContent);
    chart = new Chart(document.getElementById("chart-cohort-counts"), {
      type: "line",
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 plugins: { title: { display: true, text: "날짜별 상태 인원" }, legend: { position: "bottom" } } },
      data: { labels: data.labels, datasets: data.series.map(function (s) {
        return { label: s.label, data: s.data, borderColor: colours[s.status], backgroundColor: colours[s.status] };
      }) }
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
