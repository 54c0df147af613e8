/* crackle-otel report: a summary table and one plot of evidence per finding (plotly.js).
 * The same script serves the offline report (data embedded in #crackle-data) and the gateway's
 * live page (data fetched from data-source every data-refresh seconds). Plots are drawn when their
 * card scrolls into view, so a report of hundreds of findings opens at once. */
(function () {
  "use strict";

  const COLORS = {
    clustering: "#7c3aed", outlier: "#db2777", phase_transition: "#c2410c", conservation: "#0f766e",
    conservation_violation: "#dc2626", correlation: "#2563eb", lead_lag: "#0891b2", constant: "#64748b",
    incident: "#b91c1c", attribution: "#a16207",
  };
  const ROLE_COLORS = ["#c2410c", "#7c3aed", "#db2777", "#0891b2", "#a16207"];
  const REST = "rgba(100,116,139,0.35)";
  const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  const state = { data: null, sortKey: "confidence", sortDir: -1, filter: "", kind: "", cards: new Map(), observer: null };

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child.nodeType ? child : String(child));
    }
    return node;
  }
  function when(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const text = new Date(seconds * 1000).toISOString();
    return text.replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function ms(values) { return values.map((t) => (t === null ? null : t * 1000)); }
  function fmt(value) {
    if (value === null || value === undefined) return "";
    const a = Math.abs(value);
    return a !== 0 && (a >= 1e6 || a < 1e-3) ? value.toExponential(3) : String(+value.toPrecision(4));
  }
  function layout(finding, extra) {
    return Object.assign({
      margin: { l: 58, r: 20, t: 30, b: 42 }, hovermode: "closest", showlegend: true,
      legend: { orientation: "h", y: 1.12, x: 0 }, font: { size: 11 },
      plot_bgcolor: "#fff", paper_bgcolor: "#fff",
    }, extra);
  }
  function vline(t, color, dash) {
    return { type: "line", xref: "x", yref: "paper", x0: t * 1000, x1: t * 1000, y0: 0, y1: 1,
             line: { color: color, width: 2, dash: dash || "dash" } };
  }

  // ------------------------------------------------------------------ figures, one per kind of evidence
  const FIGURES = {
    series(f, ev) {
      const color = COLORS[f.kind] || "#334155";
      const data = [{ type: "scatter", mode: "markers", name: ev.metric, x: ms(ev.t), y: ev.y,
                      marker: { size: 4, color: "rgba(51,65,85,0.45)" } }];
      ev.segments.forEach((s, i) => data.push({
        type: "scatter", mode: "lines", name: i === 0 ? "segment mean" : "", showlegend: i === 0,
        x: [s.t0 * 1000, s.t1 * 1000], y: [s.mean, s.mean], line: { color: color, width: 3 },
        hovertemplate: `mean ${fmt(s.mean)} (sd ${fmt(s.sd)}, ${s.tasks} tasks)<extra></extra>`,
      }));
      const shapes = ev.changes.map((t) => vline(t, color));
      if (ev.ramp_end !== null && ev.changes.length) {
        shapes.push({ type: "rect", xref: "x", yref: "paper", x0: ev.changes[0] * 1000, x1: ev.ramp_end * 1000,
                      y0: 0, y1: 1, fillcolor: color, opacity: 0.08, line: { width: 0 } });
      }
      // Several changes close together: numbered labels (the times are in the description and on hover).
      const many = ev.changes.length > 2;
      const annotations = ev.changes.map((t, i) => ({ x: t * 1000, y: 1, yref: "paper", showarrow: false, yanchor: "bottom",
                                                      text: many ? String(i + 1) : "change " + when(t),
                                                      hovertext: "change " + when(t), font: { color: color } }));
      return { data, layout: layout(f, { xaxis: { type: "date" }, yaxis: { title: { text: ev.metric } }, shapes, annotations }) };
    },
    residual(f, ev) {
      const data = [{ type: "scatter", mode: "markers", name: "residual", x: ms(ev.t), y: ev.y,
                      marker: { size: 4, color: "rgba(15,118,110,0.6)" } }];
      const shapes = [];
      if (ev.tolerance) {
        shapes.push({ type: "rect", xref: "paper", yref: "y", x0: 0, x1: 1, y0: -ev.tolerance, y1: ev.tolerance,
                      fillcolor: "#0f766e", opacity: 0.10, line: { width: 0 } });
      }
      const annotations = [];
      if (ev.period) {
        shapes.push({ type: "rect", xref: "x", yref: "paper", x0: ev.period[0] * 1000, x1: ev.period[1] * 1000,
                      y0: 0, y1: 1, fillcolor: "#dc2626", opacity: 0.12, line: { width: 0 } });
        annotations.push({ x: ev.period[0] * 1000, y: 1, yref: "paper", xanchor: "left", yanchor: "bottom",
                           text: "violated from " + when(ev.period[0]), showarrow: false, font: { color: "#dc2626" } });
      }
      return { data, layout: layout(f, { xaxis: { type: "date" }, yaxis: { title: { text: "residual" } }, shapes, annotations }) };
    },
    pair(f, ev) {
      const data = [{ type: "scatter", mode: "markers", name: `${ev.metrics[1]} vs ${ev.metrics[0]}`,
                      x: ev.x, y: ev.y, text: ev.t.map(when), hovertemplate: "%{x}, %{y}<br>%{text}<extra></extra>",
                      marker: { size: 5, color: ev.t, colorscale: "Viridis", opacity: 0.7,
                                colorbar: { title: { text: "time" }, tickvals: [], thickness: 10 } } }];
      return { data, layout: layout(f, { showlegend: false, xaxis: { title: { text: ev.metrics[0] } },
                                          yaxis: { title: { text: ev.metrics[1] } } }) };
    },
    lead_lag(f, ev) {
      const lag = ev.lag_tasks ? `${ev.metrics[1]} follows ${ev.metrics[0]} by ${ev.lag_tasks} tasks` +
        (ev.lag_seconds ? ` (~${fmt(ev.lag_seconds)} s)` : "") : "";
      const data = [
        { type: "scatter", mode: "lines", name: ev.metrics[0] + " (leader)", x: ms(ev.t), y: ev.leader, line: { color: "#0891b2", width: 1.5 } },
        { type: "scatter", mode: "lines", name: ev.metrics[1] + " (follower)", x: ms(ev.t), y: ev.follower, line: { color: "#c2410c", width: 1.5 } },
      ];
      return { data, layout: layout(f, { xaxis: { type: "date" }, yaxis: { title: { text: "robust z" } },
                                          title: { text: lag, font: { size: 12 }, x: 0.99, xanchor: "right" } }) };
    },
    groups(f, ev) {
      const two = ev.metrics.length >= 2;
      const point = (group) => two ? { x: group.values[0], y: group.values[1] } : { x: ms(group.t), y: group.values[0] };
      const rest = ev.unlisted ? `rest (incl. ${ev.unlisted} members not listed)` : "rest";
      const data = [Object.assign({ type: "scatter", mode: "markers", name: rest, marker: { size: 4, color: REST } }, point(ev.rest))];
      Object.entries(ev.groups).forEach(([role, group], i) => data.push(Object.assign({
        type: "scatter", mode: "markers", name: `${role} (${ev.unlisted ? "the " + group.t.length + " most typical" : group.t.length})`,
        marker: { size: 6, color: ROLE_COLORS[i % ROLE_COLORS.length], opacity: 0.8 } }, point(group))));
      if (two) {
        const [a, b] = ev.metrics;
        if (ev.centers[a] && ev.centers[b]) {
          data.push({ type: "scatter", mode: "markers", name: "centers", x: [ev.centers[a].group, ev.centers[a].rest],
                      y: [ev.centers[b].group, ev.centers[b].rest], text: ["cluster center", "rest center"],
                      marker: { symbol: "x", size: 13, color: "#111827" } });
        }
        return { data, layout: layout(f, { xaxis: { title: { text: a } }, yaxis: { title: { text: b } } }) };
      }
      return { data, layout: layout(f, { xaxis: { type: "date" }, yaxis: { title: { text: ev.metrics[0] } } }) };
    },
    incident(f, ev) {
      // Left: when each group changed (latency after/before, the origin's in red); right: the call graph.
      const rows = ev.timeline;
      const data = [{
        type: "scatter", mode: "markers", name: "change", xaxis: "x", yaxis: "y",
        x: rows.map((r) => r.t * 1000), y: rows.map((r) => r.group),
        text: rows.map((r) => `${r.metric} ${fmt(r.before)} \u2192 ${fmt(r.after)} (x${fmt(r.after / r.before)})`),
        hovertemplate: "%{y}<br>%{text}<br>%{x}<extra></extra>",
        marker: { size: rows.map((r) => 8 + 3 * Math.min(6, Math.abs(Math.log2(r.after / r.before)))),
                  color: rows.map((r) => (r.origin ? "#b91c1c" : "#f59e0b")), line: { width: 1, color: "#fff" } },
      }];
      const nodes = ev.graph.nodes, edges = ev.graph.edges;
      const incoming = new Map(nodes.map((n) => [n.service, 0]));
      edges.forEach(([, b]) => incoming.set(b, (incoming.get(b) || 0) + 1));
      const depth = new Map();
      const queue = nodes.filter((n) => !incoming.get(n.service)).map((n) => n.service);
      if (!queue.length && nodes.length) queue.push(nodes[0].service);
      queue.forEach((s) => depth.set(s, 0));
      while (queue.length) {
        const s = queue.shift();
        edges.filter(([a]) => a === s).forEach(([, b]) => { if (!depth.has(b)) { depth.set(b, depth.get(s) + 1); queue.push(b); } });
      }
      nodes.forEach((n) => { if (!depth.has(n.service)) depth.set(n.service, 0); });
      const layers = new Map(), at = new Map();
      nodes.forEach((n) => { const d = depth.get(n.service); const l = layers.get(d) || []; l.push(n.service); layers.set(d, l); });
      layers.forEach((names, d) => names.forEach((name, i) => at.set(name, [d, i - (names.length - 1) / 2])));
      const ex = [], ey = [];
      edges.forEach(([a, b]) => { ex.push(at.get(a)[0], at.get(b)[0], null); ey.push(at.get(a)[1], at.get(b)[1], null); });
      data.push({ type: "scatter", mode: "lines", name: "calls", xaxis: "x2", yaxis: "y2", x: ex, y: ey,
                  hoverinfo: "skip", line: { color: "#94a3b8", width: 1.5 } });
      data.push({
        type: "scatter", mode: "markers+text", name: "services", xaxis: "x2", yaxis: "y2",
        x: nodes.map((n) => at.get(n.service)[0]), y: nodes.map((n) => at.get(n.service)[1]),
        text: nodes.map((n) => (n.service === ev.origin ? "\u25B6 " + n.service + " (origin)" : n.service)),
        textposition: "top center", cliponaxis: false,
        customdata: nodes.map((n) => (n.score === null || n.score === undefined ? "" : "origin score " + fmt(n.score))),
        hovertemplate: "%{text}<br>%{customdata}<extra></extra>",
        marker: { size: nodes.map((n) => (n.service === ev.origin ? 22 : n.changed ? 14 : 10)),
                  color: nodes.map((n) => (n.service === ev.origin ? "#b91c1c" : n.changed ? "#f59e0b" : "#cbd5e1")),
                  line: { width: 1, color: "#334155" } },
      });
      const arrows = edges.map(([a, b]) => ({ xref: "x2", yref: "y2", axref: "x2", ayref: "y2", x: at.get(b)[0], y: at.get(b)[1],
                                              ax: at.get(a)[0], ay: at.get(a)[1], showarrow: true, arrowhead: 3, arrowsize: 1.2,
                                              arrowcolor: "#94a3b8", standoff: 9, text: "" }));
      const shapes = ev.start ? [Object.assign(vline(ev.start, "#b91c1c"), { xref: "x" })] : [];
      // Changes a few ms apart still get a readable time axis: at least a minute either side.
      const times = rows.map((r) => r.t).concat(ev.start ? [ev.start] : []);
      const pad = times.length ? Math.max(60, 0.2 * (Math.max(...times) - Math.min(...times))) : 60;
      const range = times.length ? [(Math.min(...times) - pad) * 1000, (Math.max(...times) + pad) * 1000] : undefined;
      const hidden = { visible: false, zeroline: false, showgrid: false };
      return { data, layout: layout(f, {
        showlegend: false, margin: { l: 230, r: 20, t: 30, b: 42 }, annotations: arrows, shapes,
        xaxis: { domain: [0, 0.5], type: "date", range }, yaxis: { automargin: true, type: "category" },
        xaxis2: Object.assign({ domain: [0.58, 1], range: [-0.5, Math.max(...[...depth.values()], 0) + 0.5] }, hidden),
        yaxis2: Object.assign({ anchor: "x2" }, hidden),
      }) };
    },
    figures(f) {
      // No window to draw from (a finding across groups, or metrics the window no longer holds): its figures.
      const entries = Object.entries(f.statistics).filter(([, v]) => Number.isFinite(v)).slice(0, 14).reverse();
      const data = [{ type: "bar", orientation: "h", x: entries.map(([, v]) => v), y: entries.map(([k]) => k),
                      marker: { color: COLORS[f.kind] || "#64748b" } }];
      return { data, layout: layout(f, { showlegend: false, margin: { l: 210, r: 20, t: 20, b: 30 }, xaxis: { type: "linear" } }) };
    },
  };

  function figureFor(finding) {
    const ev = finding.evidence || {};
    const build = FIGURES[ev.plot] || FIGURES.figures;
    return build(finding, ev);
  }

  function draw(div, finding) {
    if (div.dataset.rendered) return;
    div.dataset.rendered = "pending";
    if (typeof Plotly === "undefined") {
      div.replaceChildren(el("div", { class: "placeholder", text: "plots need plotly.js (pip install 'crackle-otel[report]')" }));
      div.dataset.rendered = "unavailable";
      return;
    }
    const figure = figureFor(finding);
    Plotly.newPlot(div, figure.data, figure.layout, CONFIG).then(() => { div.dataset.rendered = "1"; });
  }

  // ------------------------------------------------------------------ table
  const COLUMNS = [
    { key: "kind", label: "Kind", value: (f) => f.kind_name },
    { key: "group", label: "Group", value: (f) => f.group },
    { key: "confidence", label: "Confidence", value: (f) => f.confidence },
    { key: "when", label: "When", value: (f) => f.when },
    { key: "description", label: "Description", value: (f) => f.description },
  ];

  function row(f) {
    return el("tr", { "data-id": f.id },
      el("td", { class: "kind" }, el("span", { class: "badge", style: `background:${COLORS[f.kind] || "#64748b"}`, text: f.kind_name })),
      el("td", { class: "group", text: f.group }),
      el("td", { class: "conf" }, el("span", { class: "bar" }, el("i", { style: `width:${Math.round(f.confidence * 100)}%` })), f.confidence.toFixed(2)),
      el("td", { class: "when", text: when(f.when) }),
      el("td", { class: "desc" }, el("a", { href: "#" + f.id, text: f.description })));
  }

  function matches(f) {
    if (state.kind && f.kind !== state.kind) return false;
    if (!state.filter) return true;
    const text = `${f.kind_name} ${f.group} ${f.description} ${Object.values(f.explanation).join(" ")} ${f.spans.map((s) => s.span_id + " " + s.trace_id).join(" ")}`;
    return state.filter.toLowerCase().split(/\s+/).filter(Boolean).every((word) => text.toLowerCase().includes(word));
  }

  function sorted(findings) {
    const column = COLUMNS.find((c) => c.key === state.sortKey);
    return findings.slice().sort((a, b) => {
      const x = column.value(a), y = column.value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * state.sortDir;
    });
  }

  function applyFilter() {
    let shown = 0;
    for (const f of state.data.findings) {
      const visible = matches(f);
      shown += visible;
      const tr = document.querySelector(`#findings tbody tr[data-id="${f.id}"]`);
      if (tr) tr.hidden = !visible;
      const card = state.cards.get(f.id);
      if (card) card.node.hidden = !visible;
    }
    document.getElementById("shown").textContent = `${shown} of ${state.data.findings.length} patterns`;
  }

  function renderTable() {
    const tbody = document.querySelector("#findings tbody");
    tbody.replaceChildren(...sorted(state.data.findings).map(row));
    document.querySelectorAll("#findings th").forEach((th) => {
      th.classList.toggle("sorted-asc", th.dataset.key === state.sortKey && state.sortDir > 0);
      th.classList.toggle("sorted-desc", th.dataset.key === state.sortKey && state.sortDir < 0);
    });
  }

  // ------------------------------------------------------------------ cards
  function copy(button, text) {
    const done = () => { button.classList.add("done"); button.textContent = "copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text) && done());
    } else if (fallbackCopy(text)) done();
  }
  function fallbackCopy(text) {
    const area = el("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  function spanList(f) {
    if (!f.spans.length) return null;
    const lines = f.spans.map((s) => `${s.trace_id} ${s.span_id}`).join("\n");
    const button = el("button", { class: "copy", type: "button", text: "copy ids" });
    button.addEventListener("click", (event) => { event.preventDefault(); copy(button, lines); });
    return el("details", { class: "spans" },
      el("summary", {}, `${f.spans.length} evidence span${f.spans.length === 1 ? "" : "s"} (trace id, span id)`, button),
      el("ol", {}, f.spans.map((s) => el("li", {}, el("code", { text: `${s.trace_id} ${s.span_id}` }), " ",
                                           el("span", { class: "role", text: `${s.role} ${when(s.timestamp)}` })))));
  }

  function where(f) {
    const parts = [];
    if (f.count !== null && f.count !== undefined && f.group_tasks) {
      parts.push(`${f.count_exact ? "" : "~"}${f.count.toLocaleString()} of ${f.group_tasks.toLocaleString()} spans of the group`);
    }
    parts.push(`seen in ${f.windows} window${f.windows === 1 ? "" : "s"}, ${when(f.first_seen)} to ${when(f.last_seen)}`);
    if (f.scope) parts.push("plotted: " + f.scope);
    return parts.join(" \u00b7 ");
  }

  function card(f) {
    const plot = el("div", { class: "plot", "data-plot": f.id });
    const why = Object.entries(f.explanation).map(([k, v]) => `${k}: ${v}`).join("; ");
    const node = el("article", { class: "pattern", id: f.id, "data-kind": f.kind },
      el("h2", {}, el("span", { class: "badge", style: `background:${COLORS[f.kind] || "#64748b"}`, text: f.kind_name }), " ",
         el("span", { class: "group", text: f.group }), ` \u00b7 confidence ${f.confidence.toFixed(2)}`),
      el("p", { class: "desc", text: f.description }),
      why ? el("p", { class: "why", text: "why: " + why }) : null,
      el("p", { class: "where", text: where(f) }),
      f.folded && f.folded.length ? el("details", { class: "folded" },
        el("summary", {}, `explains ${f.folded.length} pattern${f.folded.length === 1 ? "" : "s"} of its groups`),
        el("ul", {}, f.folded.map((text) => el("li", { text })))) : null,
      plot,
      spanList(f));
    return { node, plot, version: `${f.windows}|${f.last_seen}|${f.description}` };
  }

  function renderCards() {
    const container = document.getElementById("patterns");
    const wanted = sorted(state.data.findings);
    const next = new Map();
    for (const f of wanted) {
      const version = `${f.windows}|${f.last_seen}|${f.description}`;
      let entry = state.cards.get(f.id);
      if (!entry || entry.version !== version) {
        if (entry) { state.observer && state.observer.unobserve(entry.plot); if (window.Plotly) Plotly.purge(entry.plot); }
        entry = card(f);
      }
      entry.finding = f;
      next.set(f.id, entry);
    }
    for (const [id, entry] of state.cards) if (!next.has(id)) { if (window.Plotly) Plotly.purge(entry.plot); }
    state.cards = next;
    container.replaceChildren(...[...next.values()].map((e) => e.node));
    for (const entry of next.values()) {
      if (!entry.plot.dataset.rendered) {
        if (state.observer) state.observer.observe(entry.plot); else draw(entry.plot, entry.finding);
      }
    }
    if (!wanted.length) container.replaceChildren(el("p", { class: "empty", text: state.data.live ? "No pattern yet: the gateway reports them as it cools what it receives." : "No pattern was found in this input." }));
  }

  // ------------------------------------------------------------------ page
  function renderMeta() {
    const d = state.data, meta = document.getElementById("meta");
    const parts = [d.summary];
    if (d.generated) parts.push((d.live ? "updated " : "generated ") + when(d.generated));
    meta.replaceChildren(...parts.map((p, i) => el("span", { class: d.live && i === parts.length - 1 ? "live" : null, text: (i ? " \u00b7 " : "") + p })));
    const kinds = [...new Set(d.findings.map((f) => f.kind))].sort();
    const select = document.getElementById("kind");
    const current = select.value;
    select.replaceChildren(el("option", { value: "", text: "all kinds" }),
      ...kinds.map((k) => el("option", { value: k, text: d.findings.find((f) => f.kind === k).kind_name })));
    select.value = kinds.includes(current) ? current : "";
    state.kind = select.value;
  }

  function render(data) {
    state.data = data;
    renderMeta();
    renderTable();
    renderCards();
    applyFilter();
  }

  function setup() {
    if ("IntersectionObserver" in window) {
      state.observer = new IntersectionObserver((entries) => {
        for (const entry of entries) {
          if (!entry.isIntersecting) continue;
          state.observer.unobserve(entry.target);
          const found = state.cards.get(entry.target.dataset.plot);
          if (found) draw(entry.target, found.finding);
        }
      }, { rootMargin: "300px 0px" });
    }
    document.querySelectorAll("#findings th").forEach((th) => th.addEventListener("click", () => {
      state.sortDir = state.sortKey === th.dataset.key ? -state.sortDir : (th.dataset.key === "confidence" ? -1 : 1);
      state.sortKey = th.dataset.key;
      renderTable(); renderCards(); applyFilter();
    }));
    document.getElementById("filter").addEventListener("input", (e) => { state.filter = e.target.value.trim(); applyFilter(); });
    document.getElementById("kind").addEventListener("change", (e) => { state.kind = e.target.value; applyFilter(); });
    const body = document.body;
    const embedded = document.getElementById("crackle-data");
    if (embedded) render(JSON.parse(embedded.textContent));
    if (body.dataset.source) {
      const refresh = Math.max(1, Number(body.dataset.refresh || 5)) * 1000;
      const poll = () => fetch(body.dataset.source, { cache: "no-store" })
        .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then((data) => { render(data); document.getElementById("meta").classList.remove("stale"); })
        .catch(() => { const live = document.querySelector("#meta .live"); if (live) { live.classList.add("stale"); live.textContent = " \u00b7 gateway not answering; retrying"; } })
        .finally(() => setTimeout(poll, refresh));
      poll();
    }
  }

  window.crackleReport = { state, figureFor, draw };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup); else setup();
})();
