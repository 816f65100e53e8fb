// The synth-engine viewer: polls /api/run once a second, pages rows through /api/rows.
// Every text from an output is inserted as text (textContent), never as HTML.
import { chart, fmt, rates, values } from "./charts.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const KINDS = ["kept", "rejected", "failed"];

const state = {
  run: null,
  kind: "kept",
  filters: {},
  start: 0,
  history: [], // starts of earlier pages, for Prev
  page: null,
  facetsFor: null,
  open: null, // {kind, position}
  seriesKey: "",
};

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "testid") el.dataset.testid = v;
    else if (k === "style") el.style.cssText = v; // CSSOM, allowed by the page's CSP
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function getJSON(url) {
  const resp = await fetch(url, { cache: "no-store" });
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(`${body.error || resp.status}${body.hint ? ` (${body.hint})` : ""}`);
  return body;
}

function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.textContent =
    err instanceof TypeError
      ? "Lost contact with the viewer: did the run (run --view) or synth-engine view stop? The page retries every second."
      : String(err.message || err);
}

const int = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const usd = (v) => (v === null || v === undefined ? "–" : `$${v < 1 ? v.toFixed(4) : v.toFixed(2)}`);

// ------------------------------------------------------------------ run view
function counts(run) {
  const st = run.status;
  const disk = Object.fromEntries(KINDS.map((k) => [k, run.rows[k].total]));
  if (st && run.state === "live" && st.rows) {
    // The live run's counts include rows still buffered in memory.
    return Object.fromEntries(KINDS.map((k) => [k, Math.max(disk[k], st.rows[k] || 0)]));
  }
  return disk;
}

function renderHeader(run) {
  const m = run.manifest;
  $("run-title").textContent = `${run.name} — ${m ? m.method : "no manifest yet"}`;
  $("run-title").title = run.output;
  const badge = $("state");
  badge.textContent = run.state === "live" ? "● LIVE" : run.state;
  badge.className = `badge state-${run.state}`;
  $("sim-banner").hidden = !run.simulated;
  $("state-detail").textContent = run.state_detail;
  document.title = `${run.name} · synth-engine viewer`;
}

function renderCards(run) {
  const c = counts(run);
  for (const k of KINDS) {
    $(`count-${k}`).textContent = int(c[k]);
    const btn = document.querySelector(`#kinds button[data-kind="${k}"] span`);
    btn.textContent = int(c[k]);
  }
  const st = run.status;
  const items = st ? st.items : run.report ? run.report.items : null;
  const doneTotal = run.manifest ? run.manifest.totals.items : null;
  let done = doneTotal;
  let total = null;
  if (items) {
    done = Math.max(doneTotal || 0, (items.done || 0) + (items.skipped || 0));
    total = items.total;
  }
  $("items").textContent = total ? `${int(done)} / ${int(total)}` : int(done);
  $("items-bar").style.width = total ? `${Math.min(100, (100 * done) / total)}%` : "0";
  const cost = st ? st.cost_usd : run.report ? run.report.cost_usd : null;
  $("cost").textContent = usd(cost);
  $("cost").title = cost === null ? "no price configured for an endpoint in use" : "";
}

function renderFunnel(run) {
  const stages = (run.status && run.status.stages) || (run.report && run.report.stages) || {};
  const table = $("funnel");
  const max = Math.max(1, ...Object.values(stages).map((s) => s.calls || 0));
  const rows = Object.entries(stages).map(([name, s]) =>
    h(
      "tr",
      { testid: `stage-${name}` },
      h("th", {}, name),
      h("td", { class: "barcell" }, h("div", { class: "hbar" }, h("div", { class: "ok", style: `width:${(100 * (s.ok || 0)) / max}%` }), h("div", { class: "bad", style: `width:${(100 * (s.failed || 0)) / max}%` }))),
      h("td", { class: "num" }, int(s.calls)),
      h("td", { class: "num" }, int(s.ok)),
      h("td", { class: "num bad-text" }, s.failed ? int(s.failed) : ""),
      h("td", { class: "num warn-text" }, s.parse_errors ? int(s.parse_errors) : ""),
    ),
  );
  const c = counts(run);
  table.replaceChildren(
    h("tr", {}, h("th", {}, "stage"), h("th", {}, ""), h("th", { class: "num" }, "calls"), h("th", { class: "num" }, "ok"), h("th", { class: "num" }, "failed"), h("th", { class: "num" }, "unparsed")),
    ...rows,
    h("tr", { class: "total" }, h("th", {}, "rows"), h("td", { colspan: 5 }, `${int(c.kept)} kept · ${int(c.rejected)} rejected · ${int(c.failed)} failed`)),
  );
  if (!rows.length) table.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "no calls recorded (yet)")));
}

function renderEndpoints(run) {
  const table = $("endpoints");
  const live = run.status && run.status.endpoints;
  const eps = live || (run.report && run.report.endpoints) || {};
  const head = h("tr", {}, h("th", {}, "endpoint"), h("th", {}, "in flight"), h("th", { class: "num" }, "requests"), h("th", { class: "num" }, "429s"), h("th", { class: "num" }, live ? "req/min" : "req/s"), h("th", { class: "num" }, live ? "tok/min" : "p50 ms"));
  const rows = Object.entries(eps).map(([name, e]) => {
    const limit = e.concurrency_limit || e.max_in_flight || 1;
    const inFlight = live ? e.in_flight : e.mean_in_flight;
    return h(
      "tr",
      { testid: `endpoint-${name}` },
      h("th", {}, name),
      h("td", { class: "barcell", title: `limit ${fmt(limit)}` }, h("div", { class: "hbar" }, h("div", { class: "ok", style: `width:${Math.min(100, (100 * (inFlight || 0)) / limit)}%` })), h("span", { class: "small" }, live ? `${int(e.in_flight)} / ${Number.isInteger(limit) ? int(limit) : fmt(limit)}` : `mean ${fmt(inFlight)} / max ${int(e.max_in_flight)}`)),
      h("td", { class: "num" }, int(e.requests)),
      h("td", { class: `num ${e.http_429 ? "warn-text" : ""}` }, int(e.http_429)),
      h("td", { class: "num" }, live ? fmt(e.rpm) : fmt(e.requests_per_s)),
      h("td", { class: "num" }, live ? fmt(e.tpm) : fmt(e.latency_ms ? e.latency_ms.p50 : null)),
    );
  });
  table.replaceChildren(head, ...rows);
  if (!rows.length) table.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "no endpoint figures (yet)")));
}

function renderCharts(run) {
  const st = run.status;
  const box = $("charts");
  const pts = st && st.series ? st.series.points : [];
  const key = `${pts.length}:${pts.length ? pts.at(-1)[0] : 0}`;
  if (key === state.seriesKey) return;
  state.seriesKey = key;
  const cols = st && st.series ? st.series.columns : [];
  const col = (name) => cols.indexOf(name);
  box.replaceChildren();
  if (!pts.length) {
    $("charts-note").textContent = "No time series: this output has no status.json (written by runs since the viewer exists).";
    return;
  }
  chart(box, { id: "requests", title: "requests/s", series: [{ name: "requests/s", points: rates(pts, col("requests")) }] });
  chart(box, { id: "tokens", title: "tokens/s", series: [{ name: "tokens/s", points: rates(pts, col("tokens")), cls: "c2" }] });
  chart(box, { id: "rows", title: "rows/s", series: [{ name: "kept", points: rates(pts, col("kept")), cls: "kept" }, { name: "rejected", points: rates(pts, col("rejected")), cls: "rejected" }, { name: "failed", points: rates(pts, col("failed")), cls: "failed" }] });
  chart(box, { id: "429s", title: "429s (total)", series: [{ name: "429s", points: values(pts, col("http_429")), cls: "warn" }] });
  const cost = values(pts, col("cost_usd"));
  const priced = cost.some((p) => p[1] !== null);
  if (priced) chart(box, { id: "cost", title: "cost (USD, total)", series: [{ name: "cost", points: cost, cls: "c3" }] });
  $("charts-note").textContent =
    `This invocation's figures, sampled every ${st.interval_s || 1} s (older samples thinned); status updated ${fmt(st.age_s)} s ago.` +
    (priced ? "" : " No cost: an endpoint in use has no [endpoints.NAME.price].");
}

async function poll() {
  try {
    const run = await getJSON("/api/run");
    const grew = state.run && KINDS.some((k) => run.rows[k].total !== state.run.rows[k].total);
    state.run = run;
    showError(null);
    renderHeader(run);
    renderCards(run);
    renderFunnel(run);
    renderEndpoints(run);
    renderCharts(run);
    // A growing last page (no filter) follows the run.
    const p = state.page;
    if (grew && p && !p.filtered && p.rows.length < PAGE && view() === "rows") loadRows(false);
  } catch (err) {
    showError(err);
  } finally {
    setTimeout(poll, 1000);
  }
}

// ------------------------------------------------------------------ rows view
function view() {
  return location.hash.startsWith("#rows") ? "rows" : "run";
}

function route() {
  const v = view();
  $("view-run").hidden = v !== "run";
  $("view-rows").hidden = v !== "rows";
  $("tab-run").classList.toggle("active", v === "run");
  $("tab-rows").classList.toggle("active", v === "rows");
  if (v === "rows") {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const kind = params.get("kind");
    if (kind && KINDS.includes(kind) && kind !== state.kind) {
      state.kind = kind;
      state.filters = {};
    }
    if (!state.page || state.page.kind !== state.kind) selectKind(state.kind);
  }
}

function selectKind(kind) {
  state.kind = kind;
  state.start = 0;
  state.history = [];
  for (const b of document.querySelectorAll("#kinds button")) b.classList.toggle("active", b.dataset.kind === kind);
  history.replaceState(null, "", `#rows?kind=${kind}`);
  loadFacets();
  loadRows(false);
}

async function loadFacets() {
  const kind = state.kind;
  try {
    const f = await getJSON(`/api/facets?kind=${kind}`);
    if (kind !== state.kind) return;
    const form = $("filters");
    const fill = (name, entries, label) => {
      const sel = form.elements[name];
      const keep = state.filters[name] || "";
      sel.replaceChildren(h("option", { value: "" }, name === "score" ? "–" : "any"), ...entries.map(([v, n]) => h("option", { value: v }, label(v, n))));
      sel.value = keep;
    };
    fill("stage", f.stages, (v, n) => `${v} (${int(n)})`);
    fill("reason", f.reasons, (v, n) => `${v} (${int(n)})`);
    fill("score", f.scores.map((s) => [s, 0]), (v) => v);
    $("facets-note").textContent = f.sampled < f.total ? `Reasons and stages listed from the first ${int(f.sampled)} of ${int(f.total)} rows; text search covers all.` : "";
  } catch (err) {
    showError(err);
  }
}

function readFilters() {
  const form = $("filters");
  const out = {};
  for (const name of ["stage", "reason", "score", "min", "max", "q"]) {
    const v = form.elements[name].value.trim();
    if (v) out[name] = v;
  }
  return out;
}

async function loadRows(resetStart = true) {
  if (resetStart) {
    state.start = 0;
    state.history = [];
  }
  const params = new URLSearchParams({ kind: state.kind, start: state.start, limit: PAGE, ...state.filters });
  const kind = state.kind;
  try {
    const page = await getJSON(`/api/rows?${params}`);
    if (kind !== state.kind) return;
    state.page = page;
    renderRows(page);
    showError(null);
  } catch (err) {
    showError(err);
  }
}

function scoreText(scores) {
  return Object.entries(scores || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ");
}

function renderRows(page) {
  const body = $("rows-body");
  const rows = page.rows.map((r) =>
    h(
      "tr",
      {
        class: `row ${state.open && state.open.position === r.position && state.open.kind === page.kind ? "open" : ""}`,
        testid: "row",
        "data-position": r.position,
        onclick: () => openRow(page.kind, r.position),
      },
      h("td", { class: "num muted" }, int(r.position + 1)),
      h(
        "td",
        {},
        h("div", { class: "row-title" }, r.title || h("span", { class: "muted" }, "(no text)")),
        r.body ? h("div", { class: "row-body muted" }, r.body) : null,
        h("div", { class: "badges" }, h("code", {}, r.id), r.simulated ? h("span", { class: "badge sim", testid: "sim-badge" }, "SIMULATED") : null, r.committed ? null : h("span", { class: "badge pending" }, "uncommitted")),
      ),
      h("td", { class: "reason" }, r.reason || "", r.stage ? h("div", { class: "muted small" }, `stage: ${r.stage}`) : null),
      h("td", { class: "small" }, scoreText(r.scores)),
    ),
  );
  body.replaceChildren(...rows);
  if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, page.filtered ? (page.next === null ? "no matching rows" : "no match yet: press Next to search further") : "no rows (yet)")));
  const end = page.next === null ? page.total : page.next;
  let info;
  if (page.filtered) {
    info = `${int(page.rows.length)} matches in rows ${int(page.start + 1)}–${int(end)} of ${int(page.total)}`;
    if (page.next !== null) info += " (Next searches on)";
  } else {
    info = page.rows.length ? `rows ${int(page.start + 1)}–${int(page.start + page.rows.length)} of ${int(page.total)}` : `0 of ${int(page.total)}`;
  }
  $("page-info").textContent = info;
  $("prev").disabled = state.history.length === 0;
  $("next").disabled = page.next === null;
}

function fieldBlock(label, value, testid) {
  return h("div", { class: "field", testid }, h("div", { class: "label" }, label), h("div", { class: "text" }, String(value)));
}

function scoresTable(scores) {
  const entries = Object.entries(scores || {});
  if (!entries.length) return null;
  return h("table", { class: "kv" }, ...entries.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: typeof v === "number" && k === "gap" ? (v > 0 ? "good-text" : "bad-text") : "" }, typeof v === "object" ? JSON.stringify(v) : String(v)))));
}

const TEXTS = ["system", "instruction", "question", "input", "header", "context", "response", "answer", "output", "reasoning", "text"];
const WHY = ["reason", "filter", "stage", "error_kind", "error", "threshold", "score"];
const SHOWN = new Set([...TEXTS, ...WHY, "id", "scores", "history", "rationales", "checks", "samples", "simulated", "response_source", "iteration"]);

// The scores that decided a row: its own, else those of its last recorded round.
function finalScores(row) {
  if (row.scores && typeof row.scores === "object") return row.scores;
  const rounds = Array.isArray(row.history) ? row.history : [];
  const last = rounds.length ? rounds[rounds.length - 1] : null;
  return last && last.scores && typeof last.scores === "object" ? last.scores : null;
}

// Each judge's check (LAB: name, score, passed, rationale), or a name -> rationale map.
function checksBlock(row) {
  let entries = [];
  if (Array.isArray(row.checks)) {
    entries = row.checks.map((c) => [`${c.check ?? "check"}: ${c.score ?? ""}${c.passed === false ? " (failed)" : c.passed === true ? " (passed)" : ""}`, c.rationale || "(no rationale)"]);
  } else if (row.rationales && typeof row.rationales === "object") {
    entries = Object.entries(row.rationales).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v, null, 1)]);
  }
  if (!entries.length) return null;
  return h("div", { class: "section", testid: "rationales" }, h("h3", {}, "Judges' checks and rationales"), ...entries.map(([k, v]) => fieldBlock(k, v)));
}

function roundsBlock(row) {
  const rounds = Array.isArray(row.history) ? [...row.history] : [];
  const finalShown = rounds.some((r) => r.iteration === row.iteration);
  if (row.iteration !== undefined && row.scores && !finalShown) {
    rounds.push({ iteration: row.iteration, instruction: row.instruction, scores: row.scores, final: true, response: row.response, response_source: row.response_source });
  }
  if (!rounds.length) return null;
  return h(
    "div",
    { class: "section", testid: "rounds" },
    h("h3", {}, `Rounds (${rounds.length})`),
    ...rounds.map((r) =>
      h(
        "div",
        { class: "round", testid: "round" },
        h("div", { class: "round-head" }, `round ${r.iteration ?? "?"}${r.final ? " — final" : ""}`, h("span", { class: "small muted" }, ` ${scoreText(r.scores)}`)),
        r.instruction ? fieldBlock("instruction", r.instruction) : null,
        r.action ? fieldBlock("action applied", r.action) : null,
        r.responses && typeof r.responses === "object" ? Object.entries(r.responses).map(([who, text]) => fieldBlock(`response (${who})`, text)) : null,
        r.strong_response ? fieldBlock("response (strong)", r.strong_response) : null,
        r.target_response ? fieldBlock("response (target)", r.target_response) : null,
        !r.responses && !r.strong_response && r.response ? fieldBlock(`response (${r.response_source || "kept"})`, r.response) : null,
        r.judge_strong_first ? fieldBlock("judge, strong answer first", JSON.stringify(r.judge_strong_first)) : null,
        r.judge_target_first ? fieldBlock("judge, target answer first", JSON.stringify(r.judge_target_first)) : null,
        r.judge && typeof r.judge === "object" ? fieldBlock("judge", JSON.stringify(r.judge, null, 1)) : null,
      ),
    ),
  );
}

function renderDetail(data) {
  const row = data.row || {};
  const pane = $("detail");
  const why = WHY.filter((k) => row[k] !== undefined && row[k] !== null && typeof row[k] !== "object");
  const texts = TEXTS.filter((k) => typeof row[k] === "string" && row[k]);
  const rest = Object.entries(row).filter(([k]) => !SHOWN.has(k));
  const parts = [
    h(
      "div",
      { class: "detail-head" },
      h("span", { class: `badge kind-${data.kind}` }, data.kind),
      h("code", { testid: "detail-id" }, String(row.id ?? "")),
      data.simulated ? h("span", { class: "badge sim", testid: "detail-sim" }, "SIMULATED") : null,
      data.committed ? null : h("span", { class: "badge pending" }, "uncommitted: still being written"),
      h("button", { type: "button", class: "close", onclick: () => closeRow() }, "×"),
    ),
    h("div", { class: "small muted" }, `row ${int(data.position + 1)} of ${data.kind} · ${data.file} line ${int(data.line)}`),
    why.length ? h("div", { class: "section why", testid: "detail-why" }, h("h3", {}, data.kind === "kept" ? "Kept" : data.kind === "failed" ? "Why it failed" : "Why it was rejected"), h("table", { class: "kv" }, ...why.map((k) => h("tr", {}, h("th", {}, k), h("td", { testid: `why-${k}` }, String(row[k])))))) : null,
    finalScores(row) ? h("div", { class: "section", testid: "detail-scores" }, h("h3", {}, "Scores"), scoresTable(finalScores(row))) : null,
    checksBlock(row),
    roundsBlock(row),
    texts.length ? h("div", { class: "section", testid: "detail-texts" }, h("h3", {}, "Texts"), ...texts.map((k) => fieldBlock(k, row[k], `text-${k}`))) : null,
    Array.isArray(row.samples) ? h("div", { class: "section" }, h("h3", {}, `Samples (${row.samples.length})`), ...row.samples.map((s, i) => fieldBlock(`#${i + 1}`, typeof s === "string" ? s : JSON.stringify(s)))) : null,
    rest.length ? h("div", { class: "section", testid: "provenance" }, h("h3", {}, "Provenance"), h("table", { class: "kv" }, ...rest.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "object" && v !== null ? h("pre", {}, JSON.stringify(v, null, 1)) : String(v)))))) : null,
    h("details", { class: "section", testid: "raw" }, h("summary", {}, "Whole row (JSON)"), h("pre", { class: "json" }, JSON.stringify(row, null, 2))),
  ];
  pane.replaceChildren(...parts.filter(Boolean));
  pane.scrollTop = 0;
}

async function openRow(kind, position) {
  state.open = { kind, position };
  for (const tr of document.querySelectorAll("#rows-body tr.row")) tr.classList.toggle("open", Number(tr.dataset.position) === position);
  try {
    renderDetail(await getJSON(`/api/row?kind=${kind}&pos=${position}`));
  } catch (err) {
    showError(err);
  }
}

function closeRow() {
  state.open = null;
  for (const tr of document.querySelectorAll("#rows-body tr.row.open")) tr.classList.remove("open");
  $("detail").replaceChildren(h("p", { class: "muted" }, "Open a row to see all of it."));
}

// ------------------------------------------------------------------ wiring
function init() {
  for (const b of document.querySelectorAll("#kinds button")) {
    b.addEventListener("click", () => {
      state.filters = {};
      $("filters").reset();
      closeRow();
      selectKind(b.dataset.kind);
    });
  }
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.filters = readFilters();
    loadRows(true);
  });
  for (const name of ["stage", "reason"]) {
    $("filters").elements[name].addEventListener("change", () => {
      state.filters = readFilters();
      loadRows(true);
    });
  }
  $("filter-reset").addEventListener("click", () => {
    $("filters").reset();
    state.filters = {};
    loadRows(true);
  });
  $("next").addEventListener("click", () => {
    if (!state.page || state.page.next === null) return;
    state.history.push(state.start);
    state.start = state.page.next;
    loadRows(false);
  });
  $("prev").addEventListener("click", () => {
    if (!state.history.length) return;
    state.start = state.history.pop();
    loadRows(false);
  });
  window.addEventListener("hashchange", route);
  route();
  poll();
}

init();
