// The dashboard's own behaviour (no build step): live alerts from the server-sent event
// stream, the patient page's charts (uPlot), and focus after htmx swaps.
(function () {
  "use strict";

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function live() {
    if (document.body.dataset.live !== "on" || !window.EventSource) return;
    const since = document.body.dataset.since;
    const feed = document.body.dataset.feed || "alerts";
    const params = new URLSearchParams();
    if (since) params.set("since", since);
    if (feed !== "alerts") params.set("feed", feed);
    const query = params.toString();
    const source = new EventSource("/ui/stream" + (query ? "?" + query : ""));
    const status = document.getElementById("live-status");
    const list = document.getElementById("live-list");
    // the session ended (signed out here or in another tab, idle, disabled): stop, say so
    source.addEventListener("end", function () {
      source.close();
      status.textContent = "Live updates stopped: you are signed out. Sign in again to see new alerts.";
      status.className = "error";
      list.replaceChildren();
    });
    if (feed === "intakes") { intakes(source, status, list); return; }
    source.addEventListener("open", function () { status.textContent = "Connected: new alerts appear here."; });
    source.addEventListener("error", function () { status.textContent = "Reconnecting…"; });
    source.addEventListener("alert", function (ev) {
      const a = JSON.parse(ev.data);
      const li = document.createElement("li");
      li.dataset.alert = a.id;
      li.appendChild(text("span", a.severity, "badge " + a.severity));
      const named = (a.details && a.details.length) ? ": " + a.details.join(", ").replace(/_/g, " ") : "";
      li.appendChild(document.createTextNode(" " + a.kind.replace(/_/g, " ") + named + " (" + a.status + ") · "));
      const link = text("a", a.patient_id);
      link.href = "/ui/patients/" + encodeURIComponent(a.patient_id);
      li.appendChild(link);
      const old = list.querySelector('[data-alert="' + CSS.escape(a.id) + '"]');
      if (old) old.replaceWith(li); else list.prepend(li);
      status.textContent = "Connected: new alerts appear here.";
      const row = document.querySelector('tr[data-patient="' + CSS.escape(a.patient_id) + '"]');
      if (row) row.classList.add("updated");
    });
  }

  // The intake queue: a contacted intake leaves the waiting list; a new one is announced
  // (the page's order comes from the server: reload to see it in place).
  function intakes(source, status, list) {
    const connected = "Connected: intake changes appear here.";
    source.addEventListener("open", function () { status.textContent = connected; });
    source.addEventListener("error", function () { status.textContent = "Reconnecting…"; });
    source.addEventListener("intake", function (ev) {
      const i = JSON.parse(ev.data);
      const row = document.querySelector('tr[data-intake="' + CSS.escape(i.id) + '"]');
      let said = null;
      if (i.status === "contacted" && row) {
        row.remove();
        said = "contacted: " + i.patient_id + " (intake " + i.intake_id + ")";
      } else if (i.status === "waiting" && !row) {
        said = "new intake waiting: " + i.patient_id + " (" + i.route.replace(/_/g, " ") + "), reload to see it in order";
      }
      status.textContent = connected;
      if (!said) return;
      const li = text("li", said);
      li.dataset.intake = i.id;
      const old = list.querySelector('[data-intake="' + CSS.escape(i.id) + '"]');
      if (old) old.replaceWith(li); else list.prepend(li);
    });
  }

  // A time axis over one instant alone (one reading): a day either side. uPlot widens a
  // single instant by 86400 / its ms option, 1,000 days in seconds mode ("Mar 2027 ... Jul
  // 2029" on a patient page with one pain report).
  function span(u, min, max) {
    const xs = u.data[0];
    if (!xs.length || xs[0] !== xs[xs.length - 1]) return [min, max];
    return [xs[0] - 86400, xs[0] + 86400];
  }

  function charts() {
    const holder = document.getElementById("chart-data");
    if (!holder || !window.uPlot) return;
    const data = JSON.parse(holder.textContent);
    const adh = document.getElementById("adherence-chart");
    if (adh && data.adherence.x.length) {
      const gap = data.adherence.gap;
      // x: 00:00 UTC of each patient-local date, so the dates are read in UTC: in the
      // browser's own zone a US clinician saw every day labelled one day early
      window.rtmAdherenceChart = new uPlot({ width: adh.clientWidth || 480, height: 220,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
        scales: { x: { time: true, range: span }, y: { range: [0, 100] } },
        hooks: { drawClear: [function (u) {
          if (!gap) return;  // shade the days without data (the text above names them)
          const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
          const x0 = Math.max(left, u.valToPos(gap[0], "x", true));
          const x1 = Math.min(right, u.valToPos(gap[1], "x", true));
          u.ctx.save();
          u.ctx.fillStyle = "rgba(120,120,120,.18)";
          u.ctx.fillRect(x0, u.bbox.top, Math.max(x1 - x0, 2), u.bbox.height);
          u.ctx.restore();
        }] },
        series: [{}, { label: "7-day adherence %", stroke: "#0b3d91", width: 2 },
                 { label: "sessions done", stroke: "#5c4a00", paths: uPlot.paths.bars({ size: [0.6, 40] }), fill: "rgba(92,74,0,.25)", scale: "n" }],
        axes: [{}, { label: "%" }, { side: 1, scale: "n", label: "sessions" }],
      }, [data.adherence.x, data.adherence.pct, data.adherence.done], adh);
    }
    const pain = document.getElementById("pain-chart");
    if (pain && data.pain.x.length) {
      // the reports' instants in the clinic's zone, as the table beside it reads them
      const zone = data.pain.zone || "Etc/UTC";
      window.rtmPainChart = new uPlot({ width: pain.clientWidth || 480, height: 220,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), zone); },
        scales: { x: { time: true, range: span }, y: { range: [0, 10] } },
        series: [{}, { label: "pain", stroke: "#8b0000", width: 2, points: { show: true, size: 6 } },
                 { label: "baseline", stroke: "#4a4a4a", dash: [6, 4], width: 2 }],
      }, [data.pain.x, data.pain.score, data.pain.baseline], pain);
    }
    prom();
  }

  // The primary outcome measure: its scores, the baseline, and the band from the baseline
  // to the score that reaches the MCID (shaded; the table below the chart says the same).
  function prom() {
    const holder = document.getElementById("prom-data");
    const el = document.getElementById("prom-chart");
    if (!holder || !el || !window.uPlot) return;
    const d = JSON.parse(holder.textContent);
    if (!d || !d.x.length) return;
    const flat = function (v) { return d.x.map(function () { return v; }); };
    const lo = Math.min.apply(null, d.score.concat(d.target === null ? [] : [d.target, d.baseline]));
    const hi = Math.max.apply(null, d.score.concat(d.target === null ? [] : [d.target, d.baseline]));
    const pad = Math.max(1, (hi - lo) * 0.1);
    window.rtmPromChart = new uPlot({ width: el.clientWidth || 480, height: 220,
      scales: { x: { time: true, range: span }, y: { range: [lo - pad, hi + pad] } },
      hooks: { drawClear: [function (u) {
        if (d.baseline === null || d.target === null) return;
        const y0 = u.valToPos(d.baseline, "y", true), y1 = u.valToPos(d.target, "y", true);
        u.ctx.save();
        u.ctx.fillStyle = "rgba(11,61,145,.14)";
        u.ctx.fillRect(u.bbox.left, Math.min(y0, y1), u.bbox.width, Math.abs(y1 - y0));
        u.ctx.restore();
      }] },
      series: [{}, { label: d.label, stroke: "#0b3d91", width: 2, points: { show: true, size: 7 } },
               { label: "baseline", stroke: "#4a4a4a", dash: [6, 4], width: 2 },
               { label: "MCID threshold", stroke: "#1b5e20", dash: [2, 3], width: 2 }],
    }, [d.x, d.score, flat(d.baseline), flat(d.target)], el);
  }

  // A draft pathway version loaded from a file goes into the form's text box.
  function draftFile() {
    const input = document.getElementById("draft-file");
    if (!input) return;
    input.addEventListener("change", function () {
      const file = input.files && input.files[0];
      if (!file) return;
      file.text().then(function (t) { document.getElementById(input.dataset.into).value = t; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    charts();
    draftFile();
    // the printable summary's Print button: the browser's print (a PDF, or paper)
    const print = document.getElementById("print");
    if (print) print.addEventListener("click", function () { window.print(); });
    // After an acknowledgement swaps the alert panel, keep keyboard focus in it.
    document.body.addEventListener("htmx:afterSwap", function (ev) {
      const panel = document.getElementById("alert-panel");
      if (panel && ev.detail.target && ev.detail.target.id === "alert-panel") panel.focus();
    });
  });
})();
