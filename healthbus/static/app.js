// healthbus dashboard: one EventSource, the state in memory, the DOM built with textContent only.
// Nothing a service sends is ever parsed as HTML.
"use strict";

const RANK = { error: 0, degraded: 1, unknown: 2, healthy: 3 }; // display order: worst first
const STATUSES = Object.keys(RANK);
const LABEL = { error: "Error", degraded: "Degraded", unknown: "Unknown", healthy: "Healthy" };
const GROUPS = [["perpetual", "Perpetual"], ["consumer", "Consumers"], ["probe", "Probes"]];
const STALE_MS = 10_000; // the bus is stale when _meta.updated_at is older (as /ready judges)
const MAX_ROWS = 200; // per group; filter to see the rest
const MAX_TRANSITIONS = 50;
const SPARK_POINTS = 30;
const PULSE_MS = 4000; // below STALE_MS, so a quiet but healthy bus never looks stale

const state = {
  services: new Map(), // name -> ServiceView
  status: "unknown",
  meta: null,
  counts: null, // by status, of all services (the listed ones may be fewer)
  truncated: false, // a large fleet: not every service is listed
  total: 0, // services in all, listed or not
  transitions: [], // newest first
  transitionsChanged: true,
  live: false, // a snapshot arrived on the open stream
  offset: null, // server clock minus this browser's clock, ms
  busSeenMs: null, // server time at which the aggregator was last known alive
};
const durations = new Map(); // name -> {at: last_heartbeat_ms, values: [ms…]}, this page's life
const cards = new Map(); // name -> {svc, node}: rebuilt only when the service changed
const instancesOpen = new Map(); // name -> open, where the user chose other than the default
const filter = { text: "", statuses: new Set() }; // no status chosen: all
const $ = (id) => document.getElementById(id);

// ---- time --------------------------------------------------------------------------------
// Every estimate is a lower bound of the server's "now": the newest of them is the best.
function seeServerTime(ms) {
  if (!Number.isFinite(ms)) return;
  const offset = ms - Date.now();
  if (state.offset === null || offset > state.offset) state.offset = offset;
}
const serverNow = () => Date.now() + (state.offset ?? 0);
const seeBus = (ms) => { if (ms > (state.busSeenMs ?? 0)) state.busSeenMs = ms; };

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} d`;
}
function duration(ms) {
  if (ms < 10) return `${+ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return ms < 60_000 ? `${+(ms / 1000).toFixed(1)} s` : ago(ms);
}
function clock(ms) {
  const d = new Date(ms);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

// ---- state changes -----------------------------------------------------------------------
function noteDuration(svc) {
  if (svc.last_duration_ms == null || svc.last_heartbeat_ms == null) return;
  const h = durations.get(svc.name) ?? { at: null, values: [] };
  if (h.at === svc.last_heartbeat_ms) return;
  h.at = svc.last_heartbeat_ms;
  h.values.push(svc.last_duration_ms);
  if (h.values.length > SPARK_POINTS) h.values.shift();
  durations.set(svc.name, h);
}

function setServices(list) {
  state.services = new Map(list.map((s) => [s.name, s]));
  cards.clear();
  list.forEach(noteDuration);
}

function setMeta(meta) {
  state.meta = meta ?? null;
  if (meta) {
    seeServerTime(meta.updated_at_ms);
    seeBus(meta.updated_at_ms);
  }
}

function applySnapshot(d) {
  setServices(d.services ?? []);
  setMeta(d.meta);
  state.status = d.status ?? "unknown";
  state.counts = d.counts ?? null;
  state.total = d.total ?? state.services.size;
  state.truncated = Boolean(d.truncated);
  state.live = true;
  render();
}

function applyUpdate(d) {
  state.status = d.status ?? state.status;
  for (const svc of d.services ?? []) {
    state.services.set(svc.name, svc);
    noteDuration(svc);
  }
  for (const name of d.removed ?? []) {
    state.services.delete(name);
    durations.delete(name);
    cards.delete(name);
    instancesOpen.delete(name);
  }
  for (const [name, ms] of Object.entries(d.fresh ?? {})) {
    // In place: the card keeps its node (and the keyboard focus), only its age moves.
    const svc = state.services.get(name);
    if (svc) svc.last_heartbeat_ms = ms;
    const age = cards.get(name)?.node.querySelector("time.hb");
    if (age) age.dataset.ms = ms;
    seeServerTime(ms);
  }
  seeBus(serverNow()); // the aggregator just committed
  render();
}

function applyTransition(t) {
  if (state.transitions.some((x) => x.id === t.id)) return; // redelivered after a resume
  state.transitions.push(t);
  state.transitions.sort((a, b) => (b.at_ms ?? Date.parse(b.at)) - (a.at_ms ?? Date.parse(a.at)));
  state.transitions.length = Math.min(state.transitions.length, MAX_TRANSITIONS);
  state.transitionsChanged = true;
  seeBus(serverNow());
  render();
}

// /api/health: the fallback when the stream is unavailable, and the bus's pulse while it is quiet
// (the stream carries `meta` only in its snapshot). Its `bus` has Meta's fields, by ISO time.
let fetching = false;
let lastFetch = 0;
async function fetchHealth() {
  if (fetching) return;
  fetching = true;
  lastFetch = Date.now();
  try {
    const live = state.live;
    const res = await fetch(live ? "/api/health?limit=0" : "/api/health");
    seeServerTime(Date.parse(res.headers.get("Date"))); // whole seconds: a lower bound too
    if (!res.ok) return;
    const doc = await res.json();
    const bus = doc.bus;
    setMeta(bus?.updated_at ? { ...bus, updated_at_ms: Date.parse(bus.updated_at) } : null);
    if (!live && !state.live) {
      const listed = Object.values(doc.services ?? {}).flat();
      setServices(listed);
      state.status = doc.status ?? "unknown";
      state.counts = doc.counts ?? null;
      state.total = doc.total ?? listed.length;
      state.truncated = state.total > listed.length;
    }
    render();
  } catch {
    // The stream's own error handling tells the user; the next tick tries again.
  } finally {
    fetching = false;
  }
}

// ---- the stream --------------------------------------------------------------------------
function connect() {
  if (!("EventSource" in window)) return;
  const es = new EventSource("/api/health/stream");
  const on = (type, apply) =>
    es.addEventListener(type, (e) => {
      try {
        apply(JSON.parse(e.data));
      } catch (err) {
        console.error(`healthbus: bad ${type} event`, err);
      }
    });
  on("snapshot", applySnapshot);
  on("update", applyUpdate);
  on("transition", applyTransition);
  es.addEventListener("open", () => { $("conn").hidden = true; });
  es.addEventListener("error", () => {
    state.live = false;
    $("conn").hidden = false;
    if (es.readyState === EventSource.CLOSED) { // the browser gave up: start over ourselves
      es.close();
      setTimeout(connect, 5000);
    }
  });
}

// ---- rendering ---------------------------------------------------------------------------
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  return node;
}
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text; // no needless aria-live announcements
}
function badge(status) {
  const b = el("span", "badge", LABEL[status] ?? status);
  b.dataset.status = status;
  return b;
}
function ticking(ms, className = "", prefix = "", suffix = " ago") {
  const t = el("time", `tick ${className}`);
  t.dataset.ms = ms;
  t.dataset.prefix = prefix;
  t.dataset.suffix = suffix;
  t.dateTime = new Date(ms).toISOString();
  t.title = new Date(ms).toLocaleString();
  return t;
}

function sparkline(values) {
  const NS = "http://www.w3.org/2000/svg";
  const [w, h] = [64, 18];
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const title = document.createElementNS(NS, "title");
  title.textContent = `last ${values.length} durations: ${duration(lo)} – ${duration(hi)}`;
  svg.setAttribute("aria-label", title.textContent);
  const points = values.map((v, i) => {
    const x = values.length > 1 ? (i / (values.length - 1)) * (w - 2) + 1 : w / 2;
    const y = hi > lo ? h - 2 - ((v - lo) / (hi - lo)) * (h - 4) : h / 2;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(title, line);
  return svg;
}

function card(svc) {
  const li = el("li", "svc");
  li.dataset.status = svc.status;
  li.dataset.name = svc.name;
  const head = el("div", "svc-head");
  head.append(badge(svc.status), el("span", "svc-name", svc.name));
  if (svc.flapping) head.append(el("span", "tag", "flapping"));
  const facts = el("div", "svc-facts");
  if (svc.last_heartbeat_ms != null) facts.append(ticking(svc.last_heartbeat_ms, "hb"));
  else facts.append(el("span", "muted", "never seen"));
  if (svc.last_duration_ms != null) {
    const d = el("span", "dur", `took ${duration(svc.last_duration_ms)}`);
    const h = durations.get(svc.name);
    if (h && h.values.length > 1) d.append(sparkline(h.values));
    facts.append(d);
  }
  if (svc.expected_interval_seconds != null) {
    facts.append(el("span", null, `every ${duration(svc.expected_interval_seconds * 1000)}`));
  }
  head.append(facts);
  li.append(head);

  const reason = el("p", "reason", svc.reason);
  if (svc.status !== "healthy" && svc.since) {
    reason.append(" · ", ticking(Date.parse(svc.since), "", `${LABEL[svc.status] ?? svc.status} for `, ""));
  }
  li.append(reason);
  if (svc.error) li.append(el("pre", "error", svc.error));
  if (svc.hint) li.append(el("p", "hint", `Hint: ${svc.hint}`));
  if (svc.depends_on?.length) li.append(el("p", "muted", `needs ${svc.depends_on.join(", ")}`));
  const details = Object.entries(svc.details ?? {});
  if (details.length) {
    const dl = el("dl", "kv");
    for (const [k, v] of details) {
      const pair = el("div");
      pair.append(el("dt", null, k), el("dd", null, v === null ? "null" : String(v)));
      dl.append(pair);
    }
    li.append(dl);
  }
  if (svc.instances?.length > 1) li.append(instances(svc));
  else if (svc.instances?.length) li.append(el("p", "muted", `instance ${svc.instances[0].instance}`));
  return li;
}

function instances(svc) {
  const box = el("details", "instances");
  const bad = svc.instances.filter((i) => i.status !== "healthy").length;
  const open = bad > 0; // by default, open while an instance is not healthy
  box.open = instancesOpen.get(svc.name) ?? open;
  box.addEventListener("toggle", () => {
    if (box.open === open) instancesOpen.delete(svc.name);
    else instancesOpen.set(svc.name, box.open);
  });
  const n = svc.instances.length;
  box.append(el("summary", null, `${n} instance${n === 1 ? "" : "s"}${bad ? `, ${bad} not healthy` : ""}`));
  const ul = el("ul");
  for (const inst of svc.instances) {
    const li = el("li");
    li.append(badge(inst.status), el("span", "inst-name", inst.instance), ticking(inst.last_heartbeat_ms));
    if (inst.last_duration_ms != null) li.append(el("span", "muted", duration(inst.last_duration_ms)));
    const why = inst.error ?? (inst.status !== "healthy" ? inst.reason : null);
    if (why) li.append(el("span", "inst-why", why));
    ul.append(li);
  }
  box.append(ul);
  return box;
}

function counts() {
  if (state.truncated && state.counts) return state.counts; // updates cannot keep these current
  const c = {};
  for (const svc of state.services.values()) c[svc.status] = (c[svc.status] ?? 0) + 1;
  return c;
}

function renderBanner(c) {
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  const banner = $("banner");
  banner.dataset.status = state.status;
  setText($("overall"), LABEL[state.status] ?? state.status);
  const parts = STATUSES.filter((s) => c[s]).map((s) => `${c[s]} ${s}`);
  setText($("summary"), total ? `${parts.join(" · ")} — ${total} service${total === 1 ? "" : "s"}` : "no services have reported yet");
  document.title = `${LABEL[state.status] ?? state.status} · healthbus`;
}

function renderBus() {
  const m = state.meta;
  const age = state.busSeenMs == null ? null : serverNow() - state.busSeenMs;
  const bus = $("bus");
  let text = "running";
  if (!m) text = "not running (no snapshot yet)";
  else if (age > STALE_MS) text = `stale: no word for ${ago(age)}`;
  bus.dataset.state = !m ? "down" : age > STALE_MS ? "stale" : "ok";
  setText($("bus-state"), text);
  setText($("bus-leader"), m?.leader || "–");
  setText($("bus-lag"), m ? duration(m.lag_ms ?? 0) : "–");
  setText($("bus-updated"), age == null ? "–" : `${ago(age)} ago`);
}

function renderChips(c) {
  const chips = $("chips");
  if (!chips.childElementCount) {
    for (const s of STATUSES) {
      const b = el("button", "chip");
      b.type = "button";
      b.dataset.status = s;
      b.addEventListener("click", () => {
        if (!filter.statuses.delete(s)) filter.statuses.add(s);
        render();
      });
      chips.append(b);
    }
  }
  for (const b of chips.children) {
    const s = b.dataset.status;
    b.setAttribute("aria-pressed", String(filter.statuses.has(s)));
    setText(b, `${LABEL[s]} ${c[s] ?? 0}`);
  }
}

// Built once; a list's children are replaced only when they change, so focus stays put.
const sections = GROUPS.map(([kind, title]) => {
  const section = el("section", "group");
  section.dataset.kind = kind;
  const h = el("h2", null, title);
  const count = el("span", "count");
  h.append(count);
  const ul = el("ul", "svc-list");
  const more = el("p", "muted");
  section.append(h, ul, more);
  return { kind, section, count, ul, more };
});
const note = el("p", "note");
const empty = el("p", "empty");

function groupOf(svc) {
  return GROUPS.some(([k]) => k === svc.kind) ? svc.kind : "perpetual";
}

function renderGroups() {
  if (!$("groups").childElementCount) {
    $("groups").append(note, ...sections.map((g) => g.section), empty);
  }
  const text = filter.text.toLowerCase();
  const shown = [...state.services.values()]
    .filter((s) => (!filter.statuses.size || filter.statuses.has(s.status)) && s.name.toLowerCase().includes(text))
    .sort((a, b) => (RANK[a.status] ?? 9) - (RANK[b.status] ?? 9) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const g of sections) {
    const mine = shown.filter((s) => groupOf(s) === g.kind);
    g.section.hidden = !mine.length;
    setText(g.count, String(mine.length));
    const nodes = mine.slice(0, MAX_ROWS).map((svc) => {
      let c = cards.get(svc.name);
      if (!c || c.svc !== svc) cards.set(svc.name, (c = { svc, node: card(svc) }));
      return c.node;
    });
    const kids = g.ul.children;
    if (kids.length !== nodes.length || nodes.some((n, i) => kids[i] !== n)) g.ul.replaceChildren(...nodes);
    setText(g.more, mine.length > MAX_ROWS ? `${mine.length - MAX_ROWS} more: filter to narrow.` : "");
    g.more.hidden = mine.length <= MAX_ROWS;
  }
  note.hidden = !state.truncated;
  setText(note, `A large fleet: ${state.services.size} of ${state.total} services are listed.`);
  empty.hidden = shown.length > 0;
  setText(empty, state.services.size ? "No service matches the filter." : "No services have reported yet.");
}

function renderTimeline() {
  if (!state.transitionsChanged) return;
  state.transitionsChanged = false;
  const items = state.transitions.map((t) => {
    const li = el("li");
    li.dataset.to = t.to;
    const when = el("time", "when", clock(t.at_ms ?? Date.parse(t.at)));
    when.dateTime = t.at;
    const change = el("span", "change");
    change.append(badge(t.from), el("span", "arrow", " → "), badge(t.to));
    const line = el("div", "t-head");
    line.append(when, el("span", "t-svc", t.service), change);
    li.append(line, el("p", "reason", t.reason));
    const flags = [t.root_cause && `caused by ${t.root_cause}`, t.flapping && "flapping",
      t.silenced && "silenced", t.suppressed && "suppressed"].filter(Boolean);
    if (flags.length) li.append(el("p", "muted", flags.join(" · ")));
    return li;
  });
  $("transitions").replaceChildren(...items);
  $("no-transitions").hidden = items.length > 0;
}

function tick() {
  const now = serverNow();
  for (const t of document.querySelectorAll("time.tick")) {
    setText(t, `${t.dataset.prefix}${ago(now - Number(t.dataset.ms))}${t.dataset.suffix}`);
  }
  renderBus();
}

let queued = false;
function render() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    const c = counts();
    renderBanner(c);
    renderChips(c);
    renderGroups();
    renderTimeline();
    tick();
  });
}

// ---- start -------------------------------------------------------------------------------
$("filter").addEventListener("input", (e) => {
  filter.text = e.target.value.trim();
  render();
});
setInterval(() => {
  tick();
  // The stream is down, or quiet for a while: ask for the bus's pulse (and, when down, the data).
  const quiet = !state.live || serverNow() - (state.busSeenMs ?? 0) > PULSE_MS;
  if (quiet && Date.now() - lastFetch > PULSE_MS) fetchHealth();
}, 1000);
connect();
fetchHealth();
render();
