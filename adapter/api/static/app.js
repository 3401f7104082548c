// tritonscale live page: plain JavaScript, no build step, no third-party code.
// It polls /ui/api/v1/namespaces/<ns>/series?since=<t> every POLL_MS and asks only for rows
// newer than the last it has, so each poll costs a few rows per series; polling pauses while
// the tab is hidden and backs off after errors.
"use strict";
(() => {
  const POLL_MS = 2000;
  const MAX_BACKOFF_MS = 30000;
  const FIELDS = ["arrival", "queue_depth", "point", "upper", "desired", "replicas"];
  const STATS = [
    ["arrival", "arrival rate", "req/s"],
    ["upper", "forecast (planned for)", "req/s"],
    ["point", "forecast (point)", "req/s"],
    ["desired", "desired replicas", ""],
    ["replicas", "pods scraped", ""],
    ["queue_depth", "queue depth", "req"],
  ];
  const SVG = "http://www.w3.org/2000/svg";
  const state = { namespace: null, series: new Map(), since: null, recordedAt: null,
                  window: 3600, timer: null, failures: 0 };

  function el(tag, attrs = {}, text = null) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== null) node.textContent = text;
    return node;
  }

  function svg(tag, attrs = {}, text = null) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== null) node.textContent = text;
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    if (abs >= 100) return value.toFixed(0);
    if (abs >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  function clock(unix) {
    return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
  }

  function setStatus(text, error = false) {
    const node = document.getElementById("status");
    node.textContent = text;
    node.classList.toggle("error", error);
  }

  // A bearer token typed into the page (delegated auth without an authenticating proxy) is
  // kept for this tab only and sent with the page's own requests.
  const TOKEN_KEY = "tritonscale-token";

  function askToken(message) {
    const form = document.getElementById("login");
    form.hidden = false;
    document.getElementById("login-reason").textContent = message;
  }

  async function getJSON(url) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(url, { credentials: "same-origin", headers });
    if (response.status === 401 || response.status === 403) {
      askToken(response.status === 401 ? "Not authenticated." : "Not allowed.");
    }
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
    }
    return body;
  }

  function namespaceFromPath() {
    const match = location.pathname.match(/^\/ui\/namespaces\/([^/]+)\/?$/);
    return match ? decodeURIComponent(match[1]) : null;
  }

  async function loadNamespaces() {
    const body = await getJSON("/ui/api/v1/namespaces");
    const nav = document.getElementById("namespaces");
    nav.replaceChildren();
    for (const name of body.namespaces) {
      const link = el("a", { href: `/ui/namespaces/${encodeURIComponent(name)}` }, name);
      if (name === state.namespace) link.classList.add("current");
      nav.append(link);
    }
    const notice = document.getElementById("notice");
    if (state.namespace === null) {
      notice.hidden = false;
      notice.textContent = body.namespaces.length
        ? "Choose a namespace."
        : "No namespace has series you may read yet.";
    }
  }

  function merge(body) {
    state.window = body.window_seconds;
    const incremental = state.since !== null;
    const present = new Set();
    for (const incoming of body.series) {
      present.add(incoming.key);
      let series = state.series.get(incoming.key);
      if (!series || !incremental) {
        series = incoming;
        state.series.set(incoming.key, series);
      } else {
        for (const field of ["t", ...FIELDS]) series[field] = series[field].concat(incoming[field]);
        if (incoming.t.length) series.latest = incoming.latest;
        series.horizon_seconds = incoming.horizon_seconds;
        series.aim = incoming.aim;
      }
      const cutoff = body.recorded_at - state.window;
      let first = 0;
      while (first < series.t.length && series.t[first] < cutoff) first += 1;
      if (first > 0) for (const field of ["t", ...FIELDS]) series[field] = series[field].slice(first);
    }
    for (const key of [...state.series.keys()]) if (!present.has(key)) state.series.delete(key);
    state.since = body.recorded_at;
    state.recordedAt = body.recorded_at;
    const notice = document.getElementById("notice");
    notice.hidden = body.unrecorded_series === 0;
    notice.textContent = `${body.unrecorded_series} series of this namespace are not recorded: ` +
      `the history holds at most ${body.max_series} series (ui.max_series).`;
  }

  // --- drawing ------------------------------------------------------------------------------

  function path(times, values, x, y, shift = 0) {
    let d = "";
    let pen = false;
    for (let i = 0; i < times.length; i += 1) {
      const v = values[i];
      if (v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(times[i] + shift).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    return d;
  }

  function stepPath(times, values, x, y) {
    let d = "";
    let pen = false;
    for (let i = 0; i < times.length; i += 1) {
      const v = values[i];
      if (v === null || v === undefined) { pen = false; continue; }
      const px = x(times[i]).toFixed(1);
      const py = y(v).toFixed(1);
      d += pen ? `H${px}V${py}` : `M${px},${py}`;
      pen = true;
    }
    return d;
  }

  function bandPath(times, low, high, x, y, shift) {
    let d = "";
    let start = 0;
    const flush = (end) => {
      if (end - start < 1) return;
      let top = "";
      let bottom = "";
      for (let i = start; i < end; i += 1) {
        top += `${i === start ? "M" : "L"}${x(times[i] + shift).toFixed(1)},${y(high[i]).toFixed(1)}`;
      }
      for (let i = end - 1; i >= start; i -= 1) {
        bottom += `L${x(times[i] + shift).toFixed(1)},${y(low[i]).toFixed(1)}`;
      }
      d += `${top}${bottom}Z`;
    };
    for (let i = 0; i <= times.length; i += 1) {
      const known = i < times.length && low[i] !== null && high[i] !== null;
      if (!known) { flush(i); start = i + 1; }
    }
    return d;
  }

  function niceMax(values) {
    let max = 0;
    for (const v of values) if (v !== null && v !== undefined && v > max) max = v;
    if (max <= 0) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(max));
    for (const step of [1, 2, 2.5, 5, 10]) if (max <= step * magnitude) return step * magnitude;
    return 10 * magnitude;
  }

  function chart(series, now, kind) {
    const width = 560;
    const height = kind === "rates" ? 170 : 80;
    const left = 44;
    const right = 10;
    const top = 8;
    const bottom = 18;
    const horizon = series.horizon_seconds || 0;
    const x0 = now - state.window;
    const x1 = now + horizon;
    const x = (t) => left + ((t - x0) / (x1 - x0)) * (width - left - right);
    const values = kind === "rates"
      ? [...series.arrival, ...series.upper]
      : [...series.desired, ...series.replicas];
    const yMax = kind === "rates" ? niceMax(values) : 4 * Math.ceil((niceMax(values) + 1) / 4);
    const y = (v) => top + (1 - v / yMax) * (height - top - bottom);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, "data-chart": kind,
                              role: "img", "aria-label": kind });
    for (let i = 0; i <= 4; i += 1) {
      const v = (yMax * i) / 4;
      root.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      if (kind === "rates" || Number.isInteger(v)) {
        root.append(svg("text", { x: left - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
      }
    }
    const tick = state.window >= 1800 ? 600 : state.window >= 300 ? 60 : 10;
    for (let t = Math.ceil(x0 / tick) * tick; t <= x1; t += tick) {
      const label = tick >= 60 ? clock(t).slice(0, 5) : clock(t);
      root.append(svg("text", { x: x(t), y: height - 4, "text-anchor": "middle" }, label));
    }
    root.append(svg("line", { class: "now", x1: x(now), x2: x(now), y1: top, y2: height - bottom }));
    if (kind === "rates") {
      root.append(svg("path", { class: "band", d: bandPath(series.t, series.point, series.upper, x, y, horizon) }));
      root.append(svg("path", { class: "point", d: path(series.t, series.point, x, y, horizon) }));
      root.append(svg("path", { class: "actual", d: path(series.t, series.arrival, x, y) }));
    } else {
      root.append(svg("path", { class: "replicas", d: stepPath(series.t, series.replicas, x, y) }));
      root.append(svg("path", { class: "desired", d: stepPath(series.t, series.desired, x, y) }));
    }
    return root;
  }

  function legend(items) {
    const node = el("div", { class: "legend" });
    for (const [color, text] of items) {
      const item = el("span");
      const swatch = el("i");
      swatch.style.background = color;
      item.append(swatch, document.createTextNode(text));
      node.append(item);
    }
    return node;
  }

  function title(labels) {
    return Object.entries(labels)
      .filter(([k]) => k !== "namespace")
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
  }

  // What the policy aims for at its last step: the stated attainment, the violation budget
  // its last plan spent, that plan's margin over the point forecast and its utilisation.
  function aim(values) {
    const node = el("p", { class: "aim" });
    const pct = (v, digits) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(digits)} %`);
    const parts = [
      ["slo_attainment", "aims at", (v) => `${pct(v, 1)} of requests within the SLO`],
      ["budget", "violation budget now", (v) => pct(v, 2)],
      ["margin", "margin", (v) => (v === null || v === undefined ? "–" : `${fmt(v)} req/s`)],
      ["utilisation", "planned utilisation", (v) => pct(v, 0)],
    ];
    for (const [field, name, text] of parts) {
      const value = values[field];
      const part = el("span", { class: "aim-part", "data-field": field,
                                "data-value": value === null || value === undefined ? "" : String(value) });
      part.append(el("span", { class: "name" }, name), document.createTextNode(" "),
                  el("span", { class: "value" }, text(value)));
      node.append(part);
    }
    return node;
  }

  function card(series, now) {
    const node = el("article", { class: "card", "data-key": series.key,
                                 "data-labels": JSON.stringify(series.labels) });
    node.append(el("h2", {}, title(series.labels)));
    const stats = el("div", { class: "stats" });
    for (const [field, name, unit] of STATS) {
      const value = series.latest[field];
      const stat = el("span", { class: "stat", "data-field": field,
                                "data-value": value === null ? "" : String(value) });
      stat.append(el("span", { class: "name" }, name),
                  el("span", { class: "value" }, `${fmt(value)}${unit ? ` ${unit}` : ""}`));
      stats.append(stat);
    }
    const horizon = series.horizon_seconds;
    const stat = el("span", { class: "stat", "data-field": "horizon_seconds",
                              "data-value": horizon === null ? "" : String(horizon) });
    stat.append(el("span", { class: "name" }, "horizon"),
                el("span", { class: "value" }, horizon === null ? "–" : `${fmt(horizon)} s`));
    stats.append(stat);
    node.append(stats);
    node.append(aim(series.aim || {}));
    node.append(chart(series, now, "rates"));
    node.append(legend([["var(--actual)", "arrival rate"],
                        ["var(--point)", "forecast point, at the time it forecasts"],
                        ["var(--band)", "up to the rate the plan is sized for"]]));
    node.append(chart(series, now, "replicas"));
    node.append(legend([["var(--desired)", "desired replicas"],
                        ["var(--replicas)", "pods scraped"]]));
    return node;
  }

  function render() {
    const root = document.getElementById("series");
    const cards = [...state.series.values()].map((s) => card(s, state.recordedAt));
    root.replaceChildren(...cards);
    if (!cards.length) root.append(el("p", {}, "No series recorded in this namespace yet."));
    document.body.dataset.recordedAt = String(state.recordedAt);
  }

  // --- polling ------------------------------------------------------------------------------

  async function poll() {
    state.timer = null;
    const base = `/ui/api/v1/namespaces/${encodeURIComponent(state.namespace)}/series`;
    const url = state.since === null ? base : `${base}?since=${state.since}`;
    let delay = POLL_MS;
    try {
      merge(await getJSON(url));
      render();
      state.failures = 0;
      setStatus(`updated ${clock(state.recordedAt)}`);
    } catch (error) {
      state.failures += 1;
      delay = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** state.failures);
      setStatus(`error: ${error.message}`, true);
    }
    if (!document.hidden) state.timer = setTimeout(poll, delay);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden && state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    } else if (!document.hidden && state.timer === null && state.namespace !== null) {
      poll();
    }
  });

  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  async function start() {
    state.namespace = namespaceFromPath();
    try {
      await loadNamespaces();
    } catch (error) {
      setStatus(`error: ${error.message}`, true);
    }
    if (state.namespace !== null) {
      document.title = `tritonscale: ${state.namespace}`;
      poll();
    }
  }

  start();
})();
