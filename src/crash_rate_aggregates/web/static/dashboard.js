/* Draws the dashboard's charts from the JSON block of each page. No data is ever read from
   the HTML: the server writes it once, escaped, into <script type="application/json">. */
(function () {
  "use strict";

  var COLORS = ["#dc2626", "#2563eb", "#059669", "#9333ea", "#d97706", "#0891b2",
                "#db2777", "#65a30d", "#475569"];

  function readJson(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function fixed(value, digits) {
    return value === null || value === undefined ? "–" : value.toFixed(digits);
  }

  // A filter form sends only the fields that are set, so shared URLs stay short; a list
  // filter applies as soon as it changes.
  function tidyForms() {
    document.querySelectorAll("form.filters").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("input, select").forEach(function (field) {
          if (field.name && field.value === "") { field.disabled = true; }
        });
      });
      form.querySelectorAll("select[data-filter], select[name=date_kind]").forEach(
        function (select) {
          select.addEventListener("change", function () { form.requestSubmit(); });
        });
    });
  }

  function toggleCrash(chart, crash) {
    var hidden = null;
    chart.data.datasets.forEach(function (dataset, index) {
      if (dataset.crash !== crash) { return; }
      var meta = chart.getDatasetMeta(index);
      if (hidden === null) { hidden = !meta.hidden; }
      meta.hidden = hidden;
    });
    chart.update();
  }

  // The y axis reaches the highest rate and the highest interval end of days with enough
  // usage; the wide bands of low-usage days are cut there instead of flattening the lines.
  function scaleTop(series, crashes) {
    var top = 0;
    series.forEach(function (point) {
      crashes.forEach(function (crash) {
        var figure = point.rates[crash];
        if (figure.rate !== null) { top = Math.max(top, figure.rate); }
        if (figure.enough_usage && figure.upper !== null) { top = Math.max(top, figure.upper); }
      });
    });
    if (top <= 0) { return undefined; }
    var step = Math.pow(10, Math.floor(Math.log10(top * 1.05)));
    return Math.ceil(top * 1.05 / step * 2) * step / 2;
  }

  function drawOverview(data) {
    data.channels.forEach(function (channel, index) {
      var canvas = document.querySelector('canvas[data-series="' + index + '"]');
      if (!canvas) { return; }
      var labels = channel.series.map(function (point) { return point.date; });
      var datasets = [];
      data.crash_types.forEach(function (crash, i) {
        var color = COLORS[i % COLORS.length];
        var pick = function (key, trusted) {
          return channel.series.map(function (point) {
            var figure = point.rates[crash];
            return trusted && !figure.enough_usage ? null : figure[key];
          });
        };
        var low = channel.series.map(function (point) { return !point.rates[crash].enough_usage; });
        // The band: the lower bound, then the upper bound filled down to it; only on days with
        // enough usage (the others are drawn as crosses, their interval in the tooltip).
        datasets.push({label: crash + " lower", crash: crash, band: true, data: pick("lower", true),
                       borderWidth: 0, pointRadius: 0, pointHitRadius: 0, fill: false});
        datasets.push({label: crash + " upper", crash: crash, band: true, data: pick("upper", true),
                       borderWidth: 0, pointRadius: 0, pointHitRadius: 0, fill: "-1",
                       backgroundColor: color + "22"});
        datasets.push({label: data.crash_labels[crash] || crash, crash: crash, data: pick("rate"),
                       series: channel.series, borderColor: color, backgroundColor: color,
                       borderWidth: 2, tension: 0.15,
                       pointStyle: low.map(function (l) { return l ? "crossRot" : "circle"; }),
                       pointRadius: low.map(function (l) { return l ? 6 : 3; })});
      });
      new Chart(canvas, {
        type: "line",
        data: {labels: labels, datasets: datasets},
        options: {
          maintainAspectRatio: false,
          animation: false,
          interaction: {mode: "index", intersect: false},
          scales: {
            y: {beginAtZero: true, max: scaleTop(channel.series, data.crash_types),
                title: {display: true, text: "crashes per 1,000 usage hours"}},
            x: {title: {display: true, text: data.selection.date_kind + " date"}}
          },
          plugins: {
            legend: {
              labels: {filter: function (item, chartData) {
                return !chartData.datasets[item.datasetIndex].band;
              }},
              onClick: function (event, item, legend) {
                toggleCrash(legend.chart, legend.chart.data.datasets[item.datasetIndex].crash);
              }
            },
            tooltip: {
              filter: function (item) { return !item.dataset.band; },
              callbacks: {
                label: function (item) {
                  var figure = item.dataset.series[item.dataIndex].rates[item.dataset.crash];
                  return item.dataset.label + ": " + fixed(figure.rate, 2) + " [" +
                    fixed(figure.lower, 2) + ", " + fixed(figure.upper, 2) + "]" +
                    (figure.enough_usage ? "" : " (low usage)");
                }
              }
            }
          }
        }
      });
    });
  }

  function drawHealth(data) {
    var canvas = document.getElementById("health-chart");
    if (!canvas || !data.days.length) { return; }
    var labels = data.days.map(function (day) { return day.submission_date; });
    var datasets = data.counters.map(function (name, i) {
      return {label: name.replace(/_/g, " "), backgroundColor: COLORS[i % COLORS.length],
              data: data.days.map(function (day) { return day.latest.counters[name]; })};
    });
    new Chart(canvas, {
      type: "bar",
      data: {labels: labels, datasets: datasets},
      options: {maintainAspectRatio: false, animation: false,
                scales: {y: {type: "logarithmic",
                             title: {display: true, text: "lines (log scale)"}}}}
    });
  }

  tidyForms();
  var overview = readJson("overview-data");
  if (overview) { drawOverview(overview); }
  var healthData = readJson("health-data");
  if (healthData) { drawHealth(healthData); }
})();
