// The m2mhub dashboard: polls the admin API every two seconds with the
// credential kept in sessionStorage and redraws. No framework, no build
// step, nothing loaded from elsewhere.
"use strict";

const KEY = "m2mhub.token";
const POLL_MS = 2000;
const HISTORY = 120; // income samples kept per provider for the chart

const $ = (id) => document.getElementById(id);
const state = { timer: null, auditNext: 1, audit: [], income: new Map(), height: 0, devices: new Map() };

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
    const [health, channels, providers, holds, epochs, expiring, exposure, devices] = await Promise.all([
      api("/healthz"), api("/v1/channels"), api("/v1/providers"), api("/v1/holds"),
      api("/v1/epochs?limit=10"), api("/v1/channels/expiring?within=0"), api("/v1/exposure"), api("/v1/devices"),
    ]);
    if (expiring) state.height = expiring.height;
    state.devices = new Map((devices || []).map((d) => [d.id, d]));
    drawHealth(health || {});
    drawChannels(channels || [], exposure);
    drawHolds(holds || []);
    drawEpochs(epochs || []);
    await drawIncome(providers || []);
    await drawAudit();
    $("main").hidden = false;
    $("login").hidden = true;
    $("logout").hidden = false;
    setStatus("live", "live");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString() + (state.height ? " · height " + state.height : "");
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

function drawChannels(cs, x) {
  fill("channels", cs.map((c) => [
    cell(c.outpoint || "(pending)", "wrap"), who(c.device_id), cell(c.status), n(c.capacity_sat), n(c.seq),
    n(c.paid_msat), n(c.owed_msat), n(c.balance_msat), expiry(c.expiry_height),
  ]));
  $("exposure").textContent = x ? `${NUM.format(x.channels)} open · owed ${NUM.format(x.owed_msat)} msat · credit ${NUM.format(x.credit_msat)} msat · reserved ${NUM.format(x.reserved_msat)} msat` : "";
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

async function drawIncome(providers) {
  const now = Date.now();
  const rows = [];
  for (const p of providers) {
    const id = p.device.id;
    const in_ = await api("/v1/income?provider=" + encodeURIComponent(id));
    if (!in_) continue;
    const hist = state.income.get(id) || [];
    hist.push([now, in_.earned_msat]);
    if (hist.length > HISTORY) hist.shift();
    state.income.set(id, hist);
    rows.push([who(id), n(in_.events), n(in_.earned_msat), n(in_.fees_msat), n(in_.owed_msat), n(in_.held_msat), n(in_.withheld_msat), n(in_.unpaid_msat)]);
  }
  fill("income", rows);
  drawChart();
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

// drawChart plots each provider's earned msat over the samples taken since
// the page opened, on a shared scale.
function drawChart() {
  const cv = $("income-chart");
  const g = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 70, B = 20, T = 10, R = 150;
  g.clearRect(0, 0, W, H);
  let t0 = Infinity, t1 = -Infinity, vmax = 1;
  for (const h of state.income.values()) for (const [t, v] of h) {
    t0 = Math.min(t0, t); t1 = Math.max(t1, t); vmax = Math.max(vmax, v);
  }
  if (t0 === Infinity) return;
  if (t1 === t0) t1 = t0 + 1;
  g.strokeStyle = "#ccd"; g.fillStyle = "#556"; g.font = "11px system-ui";
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  g.fillText(String(vmax), 4, T + 8); g.fillText("0", L - 12, H - B);
  g.fillText("earned msat", 4, H - 4);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => H - B - (H - B - T) * v / vmax;
  let i = 0;
  for (const [id, h] of state.income) {
    const c = COLORS[i % COLORS.length];
    g.strokeStyle = c; g.fillStyle = c; g.lineWidth = 2;
    g.beginPath();
    h.forEach(([t, v], k) => (k ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    if (h.length === 1) g.arc(x(h[0][0]), y(h[0][1]), 3, 0, 2 * Math.PI);
    g.stroke();
    g.fillText(id.slice(0, 20), W - R + 8, T + 12 + 14 * i);
    i++;
  }
  g.lineWidth = 1;
}

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
