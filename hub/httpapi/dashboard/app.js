// The m2mhub dashboard: polls the admin API every two seconds with the
// credential kept in sessionStorage and redraws. The charts read hubd's own
// history (GET /v1/history: a sample every 30 s kept for hours, in hubd),
// so they show the last hours however long the page has been open. Charts
// are drawn with uPlot, vendored beside this file; no framework, no build
// step, nothing loaded from elsewhere.
"use strict";

const KEY = "m2mhub.token";
const POLL_MS = 2000;
const MAX_PROVIDER_CHARTS = 12;
const MIN_WINDOW_S = 15 * 60;

const $ = (id) => document.getElementById(id);
const state = { timer: null, auditNext: 1, audit: [], height: 0, devices: new Map(), charts: new Map() };

// A credential in the URL fragment (#token=…) moves to sessionStorage and
// leaves the address bar, so it is not bookmarked or shared by accident.
function takeFragmentToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (cls || "");
}

class Unauthorized extends Error {}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) }, cache: "no-store" });
  if (r.status === 401 || r.status === 403) throw new Unauthorized(path);
  if (r.status === 404) return null; // the hub does not serve this part
  if (!r.ok && path !== "/healthz") throw new Error(path + ": " + r.status);
  return r.json();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows) {
  const tb = $(id).querySelector("tbody");
  tb.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

// Amounts and counts with thousands separators, so 4,321,987 msat reads
// at a glance.
const NUM = new Intl.NumberFormat("en-US");
const n = (v) => cell(NUM.format(v === undefined || v === null ? 0 : v), "n");
const BTC = new Intl.NumberFormat("en-US", { maximumFractionDigits: 8 });
const msat = (v) => NUM.format(v || 0) + " msat";
const sat = (v) => NUM.format(v || 0) + " sat";
const btc = (s) => BTC.format((s || 0) / 1e8) + " BTC";
const ms = (sec) => (sec ? (sec * 1000).toFixed(sec < 0.01 ? 2 : 1) + " ms" : "–");
const sum = (xs, f) => xs.reduce((a, x) => a + (f(x) || 0), 0);
// name is a device's kind and owner, or its id when it has neither.
function name(id) {
  const d = state.devices.get(id);
  const label = d ? [d.kind, d.owner].filter(Boolean).join(" · ") : "";
  return label ? label + " (" + id.slice(0, 12) + ")" : id;
}
function ago(t) {
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// who names a device by its kind and owner beside its id.
function who(id) {
  const d = state.devices.get(id);
  const name = d ? [d.kind, d.owner].filter(Boolean).join(" · ") : "";
  const td = cell(id);
  if (name) {
    const small = document.createElement("span");
    small.className = "name";
    small.textContent = " " + name;
    td.append(small);
  }
  return td;
}

// expiry shows the expiry height and the blocks left to it.
function expiry(h) {
  if (!state.height || !h) return n(h);
  const td = n(h);
  const left = h - state.height;
  td.textContent += left > 0 ? ` (${NUM.format(left)} left)` : " (expired)";
  if (left <= 144) td.className += " soon";
  return td;
}
const when = (t) => (t ? new Date(t).toISOString().replace(".000Z", "Z") : "");

function showLogin(why) {
  clearTimeout(state.timer);
  $("main").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  setStatus(why, why === "unauthorized" ? "unauthorized" : "");
}

async function refresh() {
  try {
    const [health, channels, providers, holds, epochs, expiring, exposure, devices, info, hist] = await Promise.all([
      api("/healthz"), api("/v1/channels"), api("/v1/providers"), api("/v1/holds"),
      api("/v1/epochs?limit=10"), api("/v1/channels/expiring?within=0"), api("/v1/exposure"), api("/v1/devices"),
      api("/v1/info"), api("/v1/history"),
    ]);
    if (expiring) state.height = expiring.height;
    state.devices = new Map((devices || []).map((d) => [d.id, d]));
    drawHealth(health || {});
    drawChannels(channels || [], exposure);
    drawHolds(holds || []);
    drawEpochs(epochs || []);
    const incomes = await drawIncome(providers || []);
    drawAlerts(hist);
    drawOverview(info || {}, hist, incomes, exposure, epochs || []);
    $("main").hidden = false;
    $("login").hidden = true;
    $("logout").hidden = false;
    drawHistory(hist);
    await drawAudit();
    setStatus("live", "live");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString() + (state.height ? " · height " + NUM.format(state.height) : "");
  } catch (e) {
    if (e instanceof Unauthorized) {
      sessionStorage.removeItem(KEY);
      showLogin("unauthorized");
      return;
    }
    setStatus("error: " + e.message, "error");
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

function drawHealth(h) {
  $("health").replaceChildren(...Object.keys(h).sort().map((name) => {
    const li = document.createElement("li");
    li.textContent = name + ": " + h[name];
    if (h[name] !== "ok") li.className = "down";
    return li;
  }));
}

// drawAlerts lists the alert conditions hubd sees holding: pending until
// they have held for their rule's duration, then firing.
function drawAlerts(hist) {
  const ul = $("alerts");
  if (!hist) {
    ul.replaceChildren(Object.assign(document.createElement("li"), { textContent: "this hub keeps no history", className: "none" }));
    return;
  }
  if (hist.alerts.length === 0) {
    ul.replaceChildren(Object.assign(document.createElement("li"), { textContent: "none firing", className: "none" }));
    return;
  }
  ul.replaceChildren(...hist.alerts.map((a) => {
    const li = document.createElement("li");
    li.className = a.state + " " + a.severity;
    li.textContent = `${a.state} ${a.name} (${a.severity}): ${a.summary}, for ${ago(a.since)}`;
    return li;
  }));
}

// card adds one figure to the overview; id lets tests read it.
function card(id, label, value, note) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.id = "ov-" + id;
  dd.textContent = value;
  if (note) {
    const small = document.createElement("small");
    small.textContent = note;
    dd.append(document.createElement("br"), small);
  }
  const div = document.createElement("div");
  div.append(dt, dd);
  return div;
}

function drawOverview(info, hist, incomes, x, epochs) {
  const ss = hist ? hist.samples : [];
  const last = ss.length ? ss[ss.length - 1] : null;
  const win = ss.length ? ago(new Date(new Date(ss[0].time).getTime() - ss[0].interval_seconds * 1000)) : "";
  const cards = [];
  const wallet = last && last.wallet_sat !== undefined ? last.wallet_sat : null;
  cards.push(card("wallet", "hub wallet", wallet === null ? "–" : sat(wallet), wallet === null ? "not sampled" : btc(wallet)));
  cards.push(card("revenue", "hub revenue (fees)", msat(sum(incomes, (i) => i.fees_msat)),
    hist ? msat(sum(ss, (s) => s.fees_msat)) + " in the last " + win : ""));
  cards.push(card("paid", "paid through channels", hist ? msat(sum(ss, (s) => s.paid_msat)) : "–",
    hist ? "in the last " + win + " (metered and direct)" : ""));
  cards.push(card("payments", "payments", hist ? NUM.format(sum(ss, (s) => s.payments)) : "–",
    last ? (last.payments / (last.interval_seconds || 1)).toFixed(2) + " /s in the last interval" : ""));
  // Latency of the latest interval that had payments: an idle one has none.
  const busy = ss.filter((s) => s.payments > 0).pop();
  cards.push(card("latency", "payment latency p99", busy ? ms(busy.latency_p99_seconds) : "–",
    busy ? "p50 " + ms(busy.latency_p50_seconds) + " · at " + new Date(busy.time).toLocaleTimeString() : "no payment in the window"));
  cards.push(card("sessions", "live sessions", NUM.format(info.sessions || 0)));
  if (x) cards.push(card("exposure", "credit exposure", msat((x.owed_msat || 0) + (x.credit_msat || 0)), "owed " + msat(x.owed_msat) + " · credit " + msat(x.credit_msat)));
  cards.push(card("schedule", "next settlement", ...schedule(info, epochs)));
  $("overview").replaceChildren(...cards);
}

// schedule says when the open epoch is cut: at its start plus the period,
// or at its start height plus the blocks, whichever comes first.
function schedule(info, epochs) {
  const open = epochs.find((e) => !e.end);
  const rule = [];
  if (info.settle_period_seconds) rule.push("every " + (info.settle_period_seconds >= 3600 ? (info.settle_period_seconds / 3600) + " h" : Math.round(info.settle_period_seconds / 60) + " min"));
  if (info.settle_blocks) rule.push("every " + NUM.format(info.settle_blocks) + " blocks");
  const ruleText = rule.length ? rule.join(" or ") : "on demand only (hubctl settle run)";
  if (!open) return ["–", ruleText];
  const parts = [];
  if (info.settle_period_seconds) {
    const at = new Date(new Date(open.start).getTime() + info.settle_period_seconds * 1000);
    parts.push(when(at.toISOString()));
  }
  if (info.settle_blocks && state.height) {
    const h = open.start_height + info.settle_blocks;
    parts.push("height " + NUM.format(h) + " (" + NUM.format(Math.max(h - state.height, 0)) + " blocks left)");
  }
  $("schedule").textContent = "· epoch " + open.number + " open since " + when(open.start) + " · " + ruleText;
  return [parts.length ? parts.join(" or ") : "on demand", "epoch " + open.number + " · " + ruleText];
}

// chart draws (or redraws with new data) one uPlot chart in el, sized to
// its box, with a time axis; each chart has its own y scale.
function chart(id, el, series, data) {
  let c = state.charts.get(id);
  const width = Math.max(el.clientWidth, 200);
  if (c && c.series.length === series.length + 1) {
    c.setData(data);
    if (c.width !== width) c.setSize({ width, height: c.height });
    return;
  }
  if (c) c.destroy();
  c = new uPlot({
    width, height: el.classList.contains("mini") ? 110 : 170,
    legend: { show: series.length > 1 },
    cursor: { drag: { x: false, y: false } },
    // At least the last 15 minutes, so a young hub's few samples do not
    // stretch across years.
    scales: { x: { time: true, range: (u, lo, hi) => [Math.min(lo, hi - MIN_WINDOW_S), hi] } },
    axes: [{}, { size: 70, values: (u, vs) => vs.map((v) => NUM.format(v)) }],
    series: [{}, ...series.map((s, i) => ({ label: s, stroke: COLORS[i % COLORS.length], width: 1.5, points: { show: data[0].length < 3 } }))],
  }, data, el);
  state.charts.set(id, c);
}

// drawHistory draws hubd's samples: rates and levels on time axes, and
// each provider's metered income on its own chart and scale, so one large
// provider does not flatten the rest.
function drawHistory(hist) {
  if (!hist || hist.samples.length === 0) {
    $("window").textContent = hist ? "(no sample yet: hubd samples every " + hist.interval_seconds + " s)" : "(this hub keeps no history)";
    return;
  }
  const ss = hist.samples;
  $("window").textContent = `(${NUM.format(ss.length)} sample${ss.length === 1 ? "" : "s"} of ${hist.interval_seconds} s kept by hubd, up to ${NUM.format(hist.capacity)})`;
  const xs = ss.map((s) => new Date(s.time).getTime() / 1000);
  chart("rate", $("chart-rate"), ["payments/s"], [xs, ss.map((s) => s.payments / (s.interval_seconds || 1))]);
  chart("latency", $("chart-latency"), ["p50 ms", "p99 ms"], [xs, ss.map((s) => s.latency_p50_seconds * 1000), ss.map((s) => s.latency_p99_seconds * 1000)]);
  chart("sessions", $("chart-sessions"), ["sessions"], [xs, ss.map((s) => s.sessions)]);
  chart("income", $("chart-income"), ["metered income", "hub fees"], [xs, ss.map((s) => sum(Object.values(s.income_msat), (v) => v)), ss.map((s) => s.fees_msat)]);

  const ids = [...new Set(ss.flatMap((s) => Object.keys(s.income_msat)))].sort().slice(0, MAX_PROVIDER_CHARTS);
  const box = $("providers");
  for (const id of ids) {
    let fig = document.getElementById("prov-" + id);
    if (!fig) {
      fig = document.createElement("figure");
      fig.id = "prov-" + id;
      const cap = document.createElement("figcaption");
      const div = document.createElement("div");
      div.className = "mini";
      fig.append(cap, div);
      box.append(fig);
    }
    let acc = 0;
    const ys = ss.map((s) => (acc += s.income_msat[id] || 0));
    fig.querySelector("figcaption").textContent = name(id) + ": " + msat(acc);
    chart("prov-" + id, fig.querySelector("div"), [id], [xs, ys]);
  }
}

function drawChannels(cs, x) {
  fill("channels", cs.map((c) => [
    cell(c.outpoint || "(pending)", "wrap"), who(c.device_id), cell(c.status), n(c.capacity_sat), n(c.seq),
    n(c.paid_msat), n(c.owed_msat), n(c.balance_msat), expiry(c.expiry_height),
  ]));
  $("exposure").textContent = x ? `${NUM.format(x.channels)} open · owed ${msat(x.owed_msat)} · credit ${msat(x.credit_msat)} · reserved ${msat(x.reserved_msat)}` : "";
}

function drawHolds(hs) {
  fill("holds", hs.map((h) => [
    cell(h.id, "wrap"), who(h.device_id), who(h.provider), cell(h.status), n(h.max_msat), n(h.captured_msat), cell(when(h.expires)),
  ]));
}

function drawEpochs(es) {
  fill("epochs", es.map((e) => {
    let conf = "";
    if (e.confirm_height && state.height >= e.confirm_height) conf = state.height - e.confirm_height + 1;
    return [n(e.number), cell(e.run_state || "open"), cell((e.txids || []).join(" "), "wrap"), n(conf), cell(when(e.start)), cell(when(e.end))];
  }));
}

// drawIncome fills the income table (each provider's totals since the hub
// began) and returns the incomes read.
async function drawIncome(providers) {
  const rows = [];
  const incomes = [];
  for (const p of providers) {
    const id = p.device.id;
    const in_ = await api("/v1/income?provider=" + encodeURIComponent(id));
    if (!in_) continue;
    incomes.push(in_);
    rows.push([who(id), n(in_.events), n(in_.earned_msat), n(in_.fees_msat), n(in_.owed_msat), n(in_.held_msat), n(in_.withheld_msat), n(in_.unpaid_msat)]);
  }
  fill("income", rows);
  return incomes;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

// drawAudit reads the log forward from the last seen entry and keeps the
// newest 25.
async function drawAudit() {
  for (;;) {
    const page = await api(`/v1/audit?from=${state.auditNext}&limit=1000`);
    if (!page || page.length === 0) break;
    state.audit.push(...page);
    state.auditNext = page[page.length - 1].seq + 1;
    if (state.audit.length > 25) state.audit = state.audit.slice(-25);
    if (page.length < 1000) break;
  }
  fill("audit", state.audit.slice().reverse().map((e) => [n(e.seq), cell(when(e.time)), cell(e.kind), cell(e.subject, "wrap"), cell(e.actor)]));
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (!t) return;
  sessionStorage.setItem(KEY, t);
  $("token").value = "";
  setStatus("loading");
  refresh();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showLogin("signed out");
});

takeFragmentToken();
if (sessionStorage.getItem(KEY)) refresh();
else showLogin("unauthorized");
