// The console's only script: confirmation before an action, and the run charts (data from a JSON block,
// so the page needs no inline script). Runs again after every htmx refresh.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  var charts = [];
  function draw() {
    var block = document.getElementById("run-chart");
    if (!block || typeof Chart === "undefined") { return; }
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var data = JSON.parse(block.textContent);
    function options(title) {
      return { responsive: true, maintainAspectRatio: false, animation: false,
               plugins: { title: { display: true, text: title }, legend: { position: "bottom" } } };
    }
    var colours = data.status.map(function (s) { return s === "FAILED" ? "#c0262d" : (s === "SUCCESS" ? "#2457c5" : "#8a94a6"); });
    charts.push(new Chart(document.getElementById("chart-duration"), {
      type: "bar", options: options("실행별 걸린 시간 (초, 빨강 = 실패)"),
      data: { labels: data.labels, datasets: [{ label: "걸린 시간 (초)", data: data.duration_s, backgroundColor: colours }] }
    }));
    charts.push(new Chart(document.getElementById("chart-records"), {
      type: "line", options: options("실행별 레코드와 변경"),
      data: { labels: data.labels, datasets: [
        { label: "레코드", data: data.records, borderColor: "#2457c5", backgroundColor: "#2457c5" },
        { label: "변경", data: data.changes, borderColor: "#b25e00", backgroundColor: "#b25e00" }] }
    }));
    charts.push(new Chart(document.getElementById("chart-failures"), {
      type: "bar", options: options("실패 그룹별 실행 수"),
      data: { labels: data.failure_groups.length ? data.failure_groups : ["실패 없음"],
              datasets: [{ label: "실패 그룹별 실행 수", data: data.failure_groups.length ? data.failure_counts : [0],
                           backgroundColor: "#c0262d" }] }
    }));
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
