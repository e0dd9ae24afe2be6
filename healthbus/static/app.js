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
const session = { required: false, authorized: true }; // from /api/session
const incidents = { list: [], locked: false, changed: true };
// The per-service page (#/service/<name>): what the API said of that service.
const page = { name: null, history: null, sla: null, transitions: [], next: null, locked: false, changed: true, cardSvc: null };
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
  loadHistorySoon(); // what happened while this stream was down, if it was
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

const atMs = (t) => t.at_ms ?? Date.parse(t.at);

// Merge into a newest-first list without repeats (a resume may redeliver); true if it changed.
function mergeTransitions(list, more, max) {
  const seen = new Set(list.map((x) => x.id));
  const fresh = more.filter((t) => !seen.has(t.id));
  if (!fresh.length) return false;
  list.push(...fresh);
  list.sort((a, b) => atMs(b) - atMs(a));
  if (max) list.length = Math.min(list.length, max);
  return true;
}

function applyTransition(t) {
  if (mergeTransitions(state.transitions, [t], MAX_TRANSITIONS)) state.transitionsChanged = true;
  if (t.service === page.name) {
    if (mergeTransitions(page.transitions, [t])) page.changed = true;
    reloadPageSoon(); // its uptime and SLA changed too
  }
  if (t.incident) loadIncidentsSoon();
  seeBus(serverNow());
  render();
}

// ---- the API (history needs the token when one is set) ---------------------------------
async function api(path) {
  try {
    const res = await fetch(path, { headers: { Accept: "application/json" } });
    if (res.status === 401) {
      session.authorized = false;
      renderAuth();
      return { locked: true };
    }
    return res.ok ? { body: await res.json() } : { failed: res.status };
  } catch {
    return { failed: "network" };
  }
}

async function loadSession() {
  const res = await api("/api/session");
  if (res.body) Object.assign(session, { required: res.body.token_required, authorized: res.body.authorized });
  renderAuth();
}

async function loadTransitions() {
  const res = await api(`/api/transitions?limit=${MAX_TRANSITIONS}`);
  if (res.body && mergeTransitions(state.transitions, res.body.transitions, MAX_TRANSITIONS)) {
    state.transitionsChanged = true;
    render();
  }
}

async function loadIncidents() {
  const res = await api("/api/incidents?limit=20");
  incidents.locked = Boolean(res.locked);
  if (res.body) incidents.list = res.body.incidents;
  incidents.changed = true;
  render();
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}
const loadIncidentsSoon = debounce(loadIncidents, 500);
const reloadPageSoon = debounce(() => {
  if (page.name) loadServicePage(page.name);
}, 500);
const loadHistorySoon = debounce(() => {
  loadTransitions();
  loadIncidents();
  if (page.name) loadServicePage(page.name);
}, 300);

let pageLoads = 0; // only the latest load of the page's history is shown
async function loadServicePage(name) {
  const load = ++pageLoads;
  const q = encodeURIComponent(name);
  const [history, sla, transitions] = await Promise.all([
    api(`/api/services/${q}/history?days=90`),
    api(`/api/services/${q}/sla?days=30`),
    api(`/api/transitions?service=${q}&limit=50`),
  ]);
  if (page.name !== name || load !== pageLoads) return; // went elsewhere, or a newer load
  page.locked = Boolean(history.locked || transitions.locked);
  page.history = history.body ?? null;
  page.sla = sla.body ?? null;
  if (transitions.body) {
    mergeTransitions(page.transitions, transitions.body.transitions);
    page.next ??= transitions.body.next; // keep the cursor of older pages already loaded
  }
  page.changed = true;
  render();
}

async function loadOlder() {
  if (!page.name || !page.next) return;
  const name = page.name;
  const res = await api(`/api/transitions?service=${encodeURIComponent(name)}&limit=50&before=${encodeURIComponent(page.next)}`);
  if (page.name !== name || !res.body) return;
  mergeTransitions(page.transitions, res.body.transitions);
  page.next = res.body.next;
  page.changed = true;
  render();
}

// ---- signing in (the cookie then authorizes the stream too) ------------------------------
async function signIn(token) {
  const res = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  }).catch(() => null);
  if (res?.ok) location.reload(); // everything starts over with the details
  else setText($("login-error"), res?.status === 401 ? "Wrong token." : "Could not sign in; try again.");
}

async function signOut() {
  await fetch("/api/session", { method: "DELETE" }).catch(() => null);
  location.reload();
}

function renderAuth() {
  const locked = session.required && !session.authorized;
  $("signin").hidden = !locked || !$("login").hidden;
  $("signout").hidden = !(session.required && session.authorized);
}

// ---- routing: #/service/<name> is a service's page, anything else the overview -----------
function route() {
  const m = /^#\/service\/(.+)$/.exec(location.hash);
  let name = null;
  if (m) {
    try {
      name = decodeURIComponent(m[1]);
    } catch {
      name = null;
    }
  }
  if (name === page.name) return;
  Object.assign(page, { name, history: null, sla: null, transitions: [], next: null, locked: false, changed: true, cardSvc: null });
  $("service-page").hidden = name === null;
  $("home").hidden = name !== null;
  if (name !== null) {
    document.title = `${name} · healthbus`;
    loadServicePage(name);
  }
  window.scrollTo(0, 0);
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
function serviceLink(name, className) {
  const a = el("a", className, name);
  a.href = `#/service/${encodeURIComponent(name)}`;
  return a;
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
  head.append(badge(svc.status), serviceLink(svc.name, "svc-name"));
  if (svc.flapping) head.append(el("span", "tag", "flapping"));
  if (svc.affected_by?.length) head.append(el("span", "tag", `affected by ${svc.affected_by.join(", ")}`));
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

function transitionItem(t) {
  const li = el("li");
  li.dataset.to = t.to;
  const when = el("time", "when", clock(atMs(t)));
  when.dateTime = t.at;
  const change = el("span", "change");
  change.append(badge(t.from), el("span", "arrow", " → "), badge(t.to));
  const line = el("div", "t-head");
  line.append(when, serviceLink(t.service, "t-svc"), change);
  li.append(line, el("p", "reason", t.reason));
  const flags = [t.root_cause && `caused by ${t.root_cause}`, t.flapping && "flapping",
    t.silenced && "silenced", t.suppressed && "suppressed"].filter(Boolean);
  if (flags.length) li.append(el("p", "muted", flags.join(" · ")));
  return li;
}

const LOCKED = "Sign in to see the history.";

function renderTimeline() {
  if (!state.transitionsChanged) return;
  state.transitionsChanged = false;
  const items = state.transitions.map(transitionItem);
  $("transitions").replaceChildren(...items);
  $("no-transitions").hidden = items.length > 0;
  setText($("no-transitions"), session.required && !session.authorized ? "None since this page opened; sign in for the history." : "None in the retained history.");
}

function incidentItem(i) {
  const li = el("li", "incident");
  li.dataset.to = i.status === "open" ? i.worst : "healthy";
  li.dataset.state = i.status;
  const head = el("div", "t-head");
  head.append(badge(i.worst), serviceLink(i.service, "t-svc"), el("span", "inc-state", i.status === "open" ? "ongoing" : "resolved"));
  li.append(head);
  const facts = el("p", "muted");
  if (i.opened_ms != null) {
    const when = el("time", "when", clock(i.opened_ms));
    when.dateTime = i.opened;
    facts.append("opened ", when);
  } else facts.append("opened before the retained history");
  if (i.status === "open" && i.opened_ms != null) facts.append(" · ", ticking(i.opened_ms, "", "for ", ""));
  else if (i.duration_s != null) facts.append(` · lasted ${duration(i.duration_s * 1000)}`);
  const n = i.transitions.length;
  facts.append(` · ${n} transition${n === 1 ? "" : "s"}`);
  if (i.root_cause) facts.append(` · caused by ${i.root_cause}`);
  li.append(facts);
  return li;
}

function renderIncidents() {
  if (!incidents.changed) return;
  incidents.changed = false;
  const items = incidents.list.map(incidentItem);
  $("incidents").replaceChildren(...items);
  $("no-incidents").hidden = items.length > 0;
  setText($("no-incidents"), incidents.locked ? LOCKED : "None in the retained history.");
}

// ---- the per-service page ----------------------------------------------------------------
function dayState(d) {
  if (!d.known_s) return "none";
  if (d.error_s > 0) return "error";
  if (d.degraded_s > 0) return "degraded";
  return "healthy";
}
const pct = (v) => (v == null ? "–" : `${+v.toFixed(v >= 99.9 && v < 100 ? 3 : 2)} %`);

function uptimeBars(days) {
  return days.map((d) => {
    const bar = el("span", "day");
    bar.dataset.state = dayState(d);
    bar.title = d.known_s
      ? `${d.date}: ${pct(d.uptime_pct)} uptime, ${pct(d.availability_pct)} available, ${d.incidents} incident${d.incidents === 1 ? "" : "s"}`
      : `${d.date}: no data`;
    return bar;
  });
}

function durationBars(days) {
  const NS = "http://www.w3.org/2000/svg";
  const values = days.map((d) => d.p95_duration_ms);
  const hi = Math.max(...values.filter((v) => v != null));
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "p95");
  svg.setAttribute("viewBox", `0 0 ${values.length * 4} 40`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `daily p95 duration, up to ${duration(hi)}`);
  values.forEach((v, i) => {
    if (v == null) return;
    const h = Math.max(1, (v / hi) * 38);
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("x", String(i * 4 + 0.5));
    r.setAttribute("y", String(40 - h));
    r.setAttribute("width", "3");
    r.setAttribute("height", String(h));
    const title = document.createElementNS(NS, "title");
    title.textContent = `${days[i].date}: p95 ${duration(v)}`;
    r.append(title);
    svg.append(r);
  });
  return svg;
}

function renderServicePage() {
  if (page.name === null) return;
  const svc = state.services.get(page.name);
  if (svc !== page.cardSvc) {
    page.cardSvc = svc;
    $("svc-card").replaceChildren(...(svc ? [card(svc)] : []));
    $("svc-missing").hidden = Boolean(svc) || !state.live;
    page.changed = true;
  }
  if (!page.changed) return;
  page.changed = false;
  setText($("svc-title"), page.name);
  $("svc-locked").hidden = !page.locked;
  const days = page.history?.days ?? [];
  const bars = $("uptime");
  bars.replaceChildren(...uptimeBars(days));
  const known = days.filter((d) => d.known_s);
  bars.setAttribute("aria-label", known.length ? `${known.length} of the last 90 days have data` : "no data yet");
  const sla = page.sla;
  setText($("sla"), sla && sla.known_s
    ? `Last ${sla.days} days: ${pct(sla.uptime_pct)} uptime · ${pct(sla.availability_pct)} available · ${sla.incidents} incident${sla.incidents === 1 ? "" : "s"}`
    : page.locked ? "" : "No uptime known yet.");
  setText($("history-note"), page.history?.note ? `Source: ${page.history.note}.` : "");

  const withP95 = days.some((d) => d.p95_duration_ms != null);
  const h = durations.get(page.name);
  const charts = [];
  if (withP95) charts.push(durationBars(days));
  if (h && h.values.length > 1) charts.push(sparkline(h.values));
  $("durations").replaceChildren(...charts);
  setText($("durations-note"), [
    withP95 ? "Daily p95 durations." : "No daily durations yet: they come with the aggregator's SLA rollups.",
    h && h.values.length > 1 ? "The line: the runs seen since this page opened." : "",
  ].join(" ").trim());

  const items = page.transitions.map(transitionItem);
  $("svc-transitions").replaceChildren(...items);
  $("svc-no-transitions").hidden = items.length > 0;
  setText($("svc-no-transitions"), page.locked ? LOCKED : "None in the retained history.");
  $("svc-more").hidden = !page.next;
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
    renderIncidents();
    renderServicePage();
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
$("signin").addEventListener("click", () => {
  $("login").hidden = false;
  renderAuth();
  $("token").focus();
});
$("signout").addEventListener("click", signOut);
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("token").value);
});
$("svc-more").addEventListener("click", loadOlder);
window.addEventListener("hashchange", route);
connect();
fetchHealth();
loadSession();
loadTransitions();
loadIncidents();
route();
render();
