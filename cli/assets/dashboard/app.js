// Loom's dashboard: plain JavaScript, no framework and no build step.
//
// It polls the JSON API of docs/api.md every 2 seconds and updates the page
// in place: rows are keyed (by worker, run or dead letter) and reused, so a
// button does not disappear under the pointer between two refreshes. Every
// text from the API goes in through textContent or an attribute, never as
// HTML. Pages are hash routes: #/ (workers), #/worker/<name>, #/dlq,
// #/dlq/<worker>, #/workflows, #/workflows/<name> and #/workflow-run/<id>.

"use strict";

const REFRESH_MS = 2000;
const HIDDEN_REFRESH_MS = 15000;

const state = {
  route: { page: "workers" },
  generation: 0,
  timer: null,
  overview: null,
  selectedRun: null,
  pauseWorker: null,
};

// ------------------------------------------------------------------ DOM

function $(id) {
  return document.getElementById(id);
}

// An element with attributes and children (strings become text nodes).
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function setText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function setAttr(node, name, value) {
  if (value === null || value === undefined || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
    return;
  }
  const text = value === true ? "" : String(value);
  if (node.getAttribute(name) !== text) node.setAttribute(name, text);
}

// Keeps `tbody`'s rows in the order of `items`, one per key, building a
// row the first time a key shows up and updating it afterwards.
function syncRows(tbody, items, key, build, update) {
  const existing = new Map();
  for (const tr of Array.from(tbody.rows)) existing.set(tr.dataset.key, tr);
  items.forEach((item, index) => {
    const id = key(item);
    let tr = existing.get(id);
    if (tr) existing.delete(id);
    else {
      tr = build(item);
      tr.dataset.key = id;
    }
    update(tr, item);
    if (tbody.rows[index] !== tr) tbody.insertBefore(tr, tbody.rows[index] || null);
  });
  for (const tr of existing.values()) tr.remove();
}

// A cell labelled for the phone layout (where the label comes first), its
// parts in one wrapper so that they stay together beside the label.
function cell(label, className, ...children) {
  const td = el("td", { "data-label": label, class: className });
  if (children.length) td.append(el("div", { class: "in" }, ...children));
  return td;
}

// What a list was last rendered from, so it is rebuilt only on a change.
const renderedFrom = new WeakMap();

function unchanged(node, text) {
  if (renderedFrom.get(node) === text) return true;
  renderedFrom.set(node, text);
  return false;
}

// ------------------------------------------------------------------ formats

function relative(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 5) return "now";
  let text;
  if (abs < 60) text = `${abs}s`;
  else if (abs < 90 * 60) text = `${Math.round(abs / 60)}m`;
  else if (abs < 36 * 3600) text = `${Math.round(abs / 3600)}h`;
  else text = `${Math.round(abs / 86400)}d`;
  return seconds > 0 ? `in ${text}` : `${text} ago`;
}

function localTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  const options = sameDay
    ? { hour: "2-digit", minute: "2-digit" }
    : { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  return date.toLocaleString(undefined, options);
}

function fullTime(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" }) : "";
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${String(Math.round(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

function percent(rate) {
  return rate === null || rate === undefined ? "" : `${Math.round(rate * 100)}%`;
}

function words(snake) {
  return (snake || "").replaceAll("_", " ");
}

// Run ids are UUIDv7: their start is a timestamp, shared by runs of the
// same hour, so the random end tells them apart.
function shortId(id) {
  return id ? `…${id.slice(-8)}` : "";
}

function pauseText(pause) {
  if (!pause) return "";
  const until = pause.until ? `until ${localTime(pause.until)}` : "until resumed";
  return pause.note ? `${until}: ${pause.note}` : until;
}

// ------------------------------------------------------------------ API

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function post(path, body) {
  return api(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });
}

function workerPath(name) {
  return `/api/workers/${encodeURIComponent(name)}`;
}

// ------------------------------------------------------------------ routes

function parseRoute() {
  const hash = location.hash.replace(/^#/, "");
  let parts;
  try {
    parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  } catch (_) {
    parts = [];
  }
  if (parts[0] === "worker" && parts[1]) return { page: "worker", worker: parts[1] };
  if (parts[0] === "dlq") return { page: "dlq", worker: parts[1] || null };
  if (parts[0] === "workflows") return { page: "workflows", workflow: parts[1] || null };
  if (parts[0] === "workflow-run" && parts[1]) return { page: "workflow-run", run: parts[1] };
  return { page: "workers" };
}

function workerHref(name) {
  return `#/worker/${encodeURIComponent(name)}`;
}

function workflowRunHref(id) {
  return `#/workflow-run/${encodeURIComponent(id)}`;
}

function showRoute() {
  const previous = state.route;
  state.route = parseRoute();
  if (previous.page !== state.route.page || previous.worker !== state.route.worker) {
    state.selectedRun = null;
  }
  if (previous.run !== state.route.run) $("workflow-answer-text").value = "";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.page !== state.route.page;
  }
  setAttr($("nav-workers"), "aria-current", state.route.page === "workers" ? "page" : null);
  setAttr($("nav-dlq"), "aria-current", state.route.page === "dlq" ? "page" : null);
  const onWorkflows = state.route.page === "workflows" || state.route.page === "workflow-run";
  setAttr($("nav-workflows"), "aria-current", onWorkflows ? "page" : null);
  if (state.route.page === "worker") {
    setText($("worker-name"), state.route.worker);
    for (const id of ["worker-trigger", "worker-pause", "worker-resume"]) {
      $(id).dataset.worker = state.route.worker;
    }
    $("trigger-params").value = "";
  }
  refresh();
}

// ------------------------------------------------------------------ refresh

async function refresh() {
  clearTimeout(state.timer);
  const generation = ++state.generation;
  const route = state.route;
  const requests = [api("/api/workers")];
  if (route.page === "worker") {
    requests.push(
      api(`/api/runs?worker=${encodeURIComponent(route.worker)}&limit=50`).catch((error) => ({ error })),
    );
  } else if (route.page === "dlq") {
    const query = route.worker ? `?worker=${encodeURIComponent(route.worker)}` : "";
    requests.push(api(`/api/dlq${query}`));
  } else if (route.page === "workflows") {
    const query = route.workflow ? `?workflow=${encodeURIComponent(route.workflow)}` : "";
    requests.push(api(`/api/workflows${query}`));
  } else if (route.page === "workflow-run") {
    requests.push(
      api(`/api/workflow-runs/${encodeURIComponent(route.run)}`).catch((error) => {
        if (error.status === 404 || error.status === 400) return { missing: error };
        throw error;
      }),
    );
  }
  try {
    const [overview, page] = await Promise.all(requests);
    if (generation !== state.generation) return;
    state.overview = overview;
    renderHeader(overview);
    if (route.page === "workers") renderWorkers(overview);
    else if (route.page === "worker") renderWorker(overview, route.worker, page);
    else if (route.page === "dlq") renderDeadLetters(page.dead_letters, route.worker);
    else if (route.page === "workflows") renderWorkflows(page, route.workflow);
    else if (route.page === "workflow-run") renderWorkflowRun(page);
    const connection = $("connection");
    connection.dataset.state = "ok";
    setText(connection, `updated ${new Date().toLocaleTimeString()}`);
    document.body.dataset.loaded = "true";
  } catch (error) {
    if (generation !== state.generation) return;
    const connection = $("connection");
    connection.dataset.state = "error";
    setText(connection, `cannot refresh: ${error.message}`);
  } finally {
    if (generation === state.generation) {
      state.timer = setTimeout(refresh, document.hidden ? HIDDEN_REFRESH_MS : REFRESH_MS);
    }
  }
}

// ------------------------------------------------------------------ header

function renderHeader(overview) {
  const leader = $("leader");
  const value = leader.querySelector(".value");
  if (overview.leader) {
    leader.dataset.leader = overview.leader.id;
    setText(value, `${overview.leader.id} (since ${relative(overview.leader.since).replace(" ago", "")})`);
    setAttr(leader, "title", `leader since ${fullTime(overview.leader.since)}`);
  } else {
    leader.dataset.leader = "none";
    setText(value, "none: no scheduler holds the lease");
    setAttr(leader, "title", null);
  }

  const agents = $("agents");
  const items = overview.agents.length ? overview.agents : [null];
  const existing = new Map(Array.from(agents.children).map((li) => [li.dataset.agent, li]));
  items.forEach((agent, index) => {
    const id = agent ? agent.id : "";
    let li = existing.get(id);
    if (li) existing.delete(id);
    else li = el("li", { "data-agent": id });
    if (agent) {
      setText(li, `${agent.id} · ${agent.running}/${agent.concurrency}`);
      setAttr(li, "data-busy", agent.running > 0 ? "true" : "false");
      const labels = agent.labels.length ? agent.labels.join(", ") : "none";
      setAttr(
        li,
        "title",
        `${agent.running} of ${agent.concurrency} slots running; labels: ${labels}; serves: ${agent.workers.join(", ")}; seen ${relative(agent.seen_at)}`,
      );
    } else {
      setText(li, "none alive");
    }
    if (agents.children[index] !== li) agents.insertBefore(li, agents.children[index] || null);
  });
  for (const li of existing.values()) li.remove();

  const dead = overview.workers.reduce((sum, worker) => sum + worker.dead_letters, 0);
  const count = $("dlq-count");
  count.hidden = dead === 0;
  setText(count, dead);
  const failing = overview.workers.filter((worker) => worker.status === "failing").length;
  const title = failing ? `Loom · ${failing} failing` : "Loom";
  if (document.title !== title) document.title = title;
}

// ------------------------------------------------------------------ workers

const STATUS_ORDER = ["failing", "running", "paused", "ok", "never_run", "disabled"];

function renderWorkers(overview) {
  const tbody = $("workers").tBodies[0];
  syncRows(tbody, overview.workers, (worker) => worker.name, buildWorkerRow, updateWorkerRow);
  $("workers-empty").hidden = overview.workers.length > 0;

  const counts = new Map();
  for (const worker of overview.workers) counts.set(worker.status, (counts.get(worker.status) || 0) + 1);
  const summary = $("summary");
  summary.replaceChildren(
    ...STATUS_ORDER.filter((status) => counts.has(status)).map((status) =>
      el("li", { "data-status": status }, `${counts.get(status)} ${words(status)}`),
    ),
  );
}

function actionButtons(name) {
  return el(
    "div",
    { class: "actions" },
    el("button", { type: "button", "data-action": "trigger", "data-worker": name, text: "Trigger" }),
    el("button", { type: "button", "data-action": "pause", "data-worker": name, text: "Pause" }),
    el("button", { type: "button", "data-action": "resume", "data-worker": name, text: "Resume" }),
  );
}

function buildWorkerRow(worker) {
  const name = worker.name;
  return el(
    "tr",
    { "data-worker": name },
    cell(
      "Worker",
      "name",
      el("a", { class: "worker-link", href: workerHref(name), text: name }),
      el("span", { class: "sub description" }),
    ),
    cell("Status", "status", el("span", { class: "badge", "data-status": "" })),
    cell("Schedule", "schedule", el("span", { class: "schedule-words" }), el("span", { class: "sub schedule-expr mono" })),
    cell("Next run", "next", el("time", { class: "next-local" }), el("span", { class: "sub next-relative" })),
    cell("Last run", "last", el("span", { class: "badge last-verdict" }), el("span", { class: "sub last-when" })),
    cell("24 h success", "rate num", el("span", { class: "rate-value" }), el("span", { class: "sub rate-runs" })),
    cell("p95", "p95 num"),
    cell("Paused", "paused"),
    cell("Dead letters", "dead num", el("a", { class: "dead-link", href: `#/dlq/${encodeURIComponent(name)}` })),
    cell("", "actions-cell", actionButtons(name)),
  );
}

function part(tr, selector) {
  return tr.querySelector(selector);
}

function updateWorkerRow(tr, worker) {
  tr.dataset.status = worker.status;
  setText(part(tr, ".description"), worker.description);
  const badge = part(tr, ".status .badge");
  badge.dataset.status = worker.status;
  setText(badge, words(worker.status));
  setAttr(badge, "title", worker.consecutive_failures ? `${worker.consecutive_failures} runs in a row without a valid verdict` : null);

  setText(part(tr, ".schedule-words"), worker.schedule_description || "manual only");
  setText(part(tr, ".schedule-expr"), worker.schedule || "");

  const next = part(tr, ".next-local");
  setText(next, worker.next_run ? localTime(worker.next_run) : "—");
  setAttr(next, "datetime", worker.next_run);
  setAttr(next, "title", worker.next_run ? fullTime(worker.next_run) : null);
  setText(part(tr, ".next-relative"), relative(worker.next_run));

  const verdict = part(tr, ".last-verdict");
  const last = worker.last_run;
  verdict.hidden = !last;
  if (last) {
    verdict.dataset.verdict = last.verdict;
    setText(verdict, words(last.verdict));
    setAttr(verdict, "title", last.reason || null);
  }
  setText(part(tr, ".last-when"), last ? relative(last.finished_at || last.scheduled_at) : "never");

  setText(part(tr, ".rate-value"), worker.success_rate_24h === null ? "—" : percent(worker.success_rate_24h));
  setText(part(tr, ".rate-runs"), `${worker.runs_24h} run${worker.runs_24h === 1 ? "" : "s"}`);
  setText(part(tr, ".p95"), worker.p95_duration_ms === null ? "—" : duration(worker.p95_duration_ms));
  setText(part(tr, ".paused"), worker.paused ? pauseText(worker.paused) : "—");
  const dead = part(tr, ".dead-link");
  setText(dead, worker.dead_letters);
  dead.dataset.count = worker.dead_letters;

  updateActionButtons(tr, worker);
}

function updateActionButtons(scope, worker) {
  for (const button of scope.querySelectorAll("button[data-action]")) {
    const pending = button.dataset.pending === "true";
    const action = button.dataset.action;
    if (action === "trigger") {
      button.disabled = pending || !worker.enabled;
      setAttr(button, "title", worker.enabled ? `run ${worker.name} now` : "disabled in the registry (enabled = false)");
    } else if (action === "pause") {
      button.hidden = !!worker.paused;
      button.disabled = pending;
    } else if (action === "resume") {
      button.hidden = !worker.paused;
      button.disabled = pending;
    }
  }
}

// ------------------------------------------------------------------ one worker

function renderWorker(overview, name, answer) {
  const worker = overview.workers.find((candidate) => candidate.name === name);
  const unknown = !worker;
  $("worker-unknown").hidden = !unknown;
  $("worker-actions").hidden = unknown;
  const badge = $("worker-status");
  badge.hidden = unknown;
  if (unknown) {
    setText($("worker-description"), "");
    $("worker-facts").replaceChildren();
    renderedFrom.delete($("worker-facts"));
    return;
  }
  badge.dataset.status = worker.status;
  setText(badge, words(worker.status));
  setText($("worker-description"), worker.description);
  renderFacts(worker);
  updateActionButtons($("worker-actions"), worker);

  if (answer && answer.error) {
    const connection = $("connection");
    connection.dataset.state = "error";
    setText(connection, `cannot load runs: ${answer.error.message}`);
    return;
  }
  renderRuns(answer.runs);
  renderOutput(answer.runs);
  renderSkipped(answer.skipped);
}

function renderFacts(worker) {
  const facts = [
    ["Schedule", worker.schedule_description || "manual only"],
    ["Expression", worker.schedule ? `${worker.schedule} (${worker.timezone})` : "—"],
    ["Next run", worker.next_run ? `${localTime(worker.next_run)} (${relative(worker.next_run)})` : "—"],
    ["Enabled", worker.enabled ? "yes" : "no"],
    ["Labels", worker.labels.length ? worker.labels.join(", ") : "none"],
    ["Paused", worker.paused ? pauseText(worker.paused) : "no"],
    ["Last success", worker.last_success_at ? `${localTime(worker.last_success_at)} (${relative(worker.last_success_at)})` : "never"],
    ["Failures in a row", String(worker.consecutive_failures)],
    ["24 h", `${worker.runs_24h} runs, ${worker.success_rate_24h === null ? "no verdicts" : `${percent(worker.success_rate_24h)} valid`}, p95 ${worker.p95_duration_ms === null ? "—" : duration(worker.p95_duration_ms)}`],
    ["Open runs", String(worker.open_runs)],
    ["Dead letters", String(worker.dead_letters)],
  ];
  const dl = $("worker-facts");
  if (unchanged(dl, JSON.stringify(facts))) return;
  dl.replaceChildren(...facts.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: value })]));
}

function lastAttempt(run) {
  return run.attempts.length ? run.attempts[run.attempts.length - 1] : null;
}

function buildRunRow(run) {
  return el(
    "tr",
    { "data-run": run.run_id },
    cell("Run", "run", el("button", { type: "button", class: "link mono select-run", "data-select-run": run.run_id, title: run.run_id, text: shortId(run.run_id) })),
    cell("Trigger", "trigger"),
    cell("Scheduled", "scheduled", el("time", { class: "scheduled-local" }), el("span", { class: "sub scheduled-relative" })),
    cell("Status", "run-status", el("span", { class: "badge" }), el("span", { class: "sub running-on" })),
    cell("Attempts", "attempts num"),
    cell("Agent", "agent"),
    cell("Duration", "duration num"),
    cell("Verdict", "verdict", el("span", { class: "badge" }), el("span", { class: "sub reason" })),
  );
}

function updateRunRow(tr, run) {
  const attempt = lastAttempt(run);
  tr.dataset.status = run.status;
  setAttr(tr, "data-verdict", run.verdict);
  setAttr(tr, "data-selected", state.selectedRun === run.run_id ? "true" : null);
  setText(part(tr, ".trigger"), words(run.trigger));
  const scheduled = part(tr, ".scheduled-local");
  setText(scheduled, localTime(run.scheduled_at));
  setAttr(scheduled, "datetime", run.scheduled_at);
  setAttr(scheduled, "title", fullTime(run.scheduled_at));
  setText(part(tr, ".scheduled-relative"), relative(run.scheduled_at));
  const status = part(tr, ".run-status .badge");
  status.dataset.runStatus = run.status;
  setText(status, run.status);
  setText(part(tr, ".running-on"), run.running_on ? `on ${run.running_on}` : "");
  const attempts = part(tr, ".attempts");
  setText(attempts, run.attempts.length);
  setAttr(
    attempts,
    "title",
    run.attempts
      .map((a) => `#${a.attempt} ${a.agent_id}: ${words(a.outcome)}${a.exit_code === null ? "" : ` (exit ${a.exit_code})`}, ${duration(a.duration_ms)}`)
      .join("\n") || null,
  );
  setText(part(tr, ".agent"), run.running_on || (attempt ? attempt.agent_id : "—"));
  setText(part(tr, ".duration"), attempt ? duration(attempt.duration_ms) : "—");
  const verdict = part(tr, ".verdict .badge");
  verdict.hidden = !run.verdict;
  if (run.verdict) {
    verdict.dataset.verdict = run.verdict;
    setText(verdict, words(run.verdict));
  }
  setText(part(tr, ".reason"), run.reason || "");
}

function renderRuns(runs) {
  syncRows($("runs").tBodies[0], runs, (run) => run.run_id, buildRunRow, updateRunRow);
  $("runs-empty").hidden = runs.length > 0;
}

function renderOutput(runs) {
  const selected = runs.find((run) => run.run_id === state.selectedRun) || runs[0];
  const label = $("output-run");
  if (!selected) {
    setText(label, "No run yet.");
    setText($("stdout"), "");
    setText($("stderr"), "");
    return;
  }
  const which = selected === runs[0] ? "the newest run" : "run";
  const attempts = selected.attempts.length;
  setText(
    label,
    `${which} ${selected.run_id}, ${selected.status}${attempts ? `, attempt ${attempts}` : ""}${selected.verdict ? `: ${words(selected.verdict)}` : ""}`,
  );
  label.dataset.run = selected.run_id;
  const empty = selected.status === "done" ? "(empty)" : "(no output yet)";
  setText($("stdout"), selected.stdout_tail || empty);
  setText($("stderr"), selected.stderr_tail || empty);
}

function renderSkipped(skipped) {
  const list = $("skipped");
  const newest = skipped.slice().reverse();
  $("skipped-empty").hidden = skipped.length > 0;
  if (unchanged(list, JSON.stringify(newest))) return;
  list.replaceChildren(
    ...newest.map((fire) =>
      el(
        "li",
        { "data-reason": fire.reason },
        el("time", { datetime: fire.scheduled_at, title: fullTime(fire.scheduled_at), text: localTime(fire.scheduled_at) }),
        ` ${words(fire.reason)}: ${fire.detail}${fire.count > 1 ? ` (${fire.count} fires, to ${localTime(fire.last)})` : ""}`,
      ),
    ),
  );
}

// ------------------------------------------------------------------ workflows

function buildWorkflowRow(workflow) {
  const name = workflow.name;
  return el(
    "tr",
    { "data-workflow": name },
    cell(
      "Workflow",
      "name",
      el("a", { class: "workflow-link", href: `#/workflows/${encodeURIComponent(name)}`, text: name }),
      el("span", { class: "sub description" }),
    ),
    cell("Schedule", "schedule", el("span", { class: "schedule-words" }), el("span", { class: "sub schedule-expr mono" })),
    cell("Next run", "next", el("time", { class: "next-local" }), el("span", { class: "sub next-relative" })),
    cell("Tasks", "tasks"),
    cell("Strategist", "strategist"),
    cell("", "actions-cell", el("button", { type: "button", "data-start-workflow": name, text: "Start" })),
  );
}

function updateWorkflowRow(tr, workflow) {
  setText(part(tr, ".description"), workflow.description);
  setText(part(tr, ".schedule-words"), workflow.schedule_description || "manual only");
  setText(part(tr, ".schedule-expr"), workflow.schedule || "");
  const next = part(tr, ".next-local");
  setText(next, workflow.next_run ? localTime(workflow.next_run) : "—");
  setAttr(next, "datetime", workflow.next_run);
  setText(part(tr, ".next-relative"), relative(workflow.next_run));
  const levels = workflow.levels.length;
  setText(part(tr, ".tasks"), `${workflow.tasks.length} in ${levels} level${levels === 1 ? "" : "s"}`);
  setAttr(part(tr, ".tasks"), "title", workflow.levels.map((ids, level) => `L${level}: ${ids.join(", ")}`).join("\n"));
  setText(
    part(tr, ".strategist"),
    workflow.strategist ? `${workflow.strategist}, up to ${workflow.max_rounds} rounds` : "none (one round)",
  );
  const button = part(tr, "button[data-start-workflow]");
  button.disabled = button.dataset.pending === "true";
}

function buildWorkflowRunRow(run) {
  return el(
    "tr",
    { "data-workflow-run": run.run_id },
    cell("Run", "run", el("a", { class: "mono", href: workflowRunHref(run.run_id), title: run.run_id, text: shortId(run.run_id) })),
    cell("Workflow", "workflow", el("a", { href: `#/workflows/${encodeURIComponent(run.workflow)}`, text: run.workflow })),
    cell("Status", "status", el("span", { class: "badge" })),
    cell("Rounds", "rounds num"),
    cell("Tasks valid", "tasks-valid num"),
    cell("Started", "started", el("time", { class: "started-local" }), el("span", { class: "sub started-relative" })),
    cell("Duration", "duration num"),
    cell("Outcome", "outcome"),
  );
}

function updateWorkflowRunRow(tr, run) {
  tr.dataset.status = run.status;
  const badge = part(tr, ".status .badge");
  badge.dataset.workflowStatus = run.status;
  setText(badge, words(run.status));
  setText(part(tr, ".rounds"), run.rounds);
  setText(part(tr, ".tasks-valid"), `${run.tasks_valid}/${run.tasks_total}`);
  const started = part(tr, ".started-local");
  setText(started, localTime(run.started_at));
  setAttr(started, "datetime", run.started_at);
  setAttr(started, "title", fullTime(run.started_at));
  setText(part(tr, ".started-relative"), relative(run.started_at));
  setText(part(tr, ".duration"), duration(run.duration_ms));
  setText(part(tr, ".outcome"), run.question ? `asks: ${run.question}` : run.outcome || "");
}

function renderWorkflows(answer, filter) {
  syncRows($("workflows").tBodies[0], answer.workflows, (w) => w.name, buildWorkflowRow, updateWorkflowRow);
  $("workflows-empty").hidden = answer.workflows.length > 0;
  syncRows($("workflow-runs").tBodies[0], answer.runs, (run) => run.run_id, buildWorkflowRunRow, updateWorkflowRunRow);
  $("workflow-runs-empty").hidden = answer.runs.length > 0;
  setText($("workflows-filter"), filter ? `${filter} only (all: #/workflows)` : "");
}

function decisionText(decision) {
  if (!decision) return "";
  if (decision.kind === "spawn_next") return `spawn next: ${decision.tasks} task${decision.tasks === 1 ? "" : "s"}`;
  if (decision.kind === "clarification_needed") return `asks: ${decision.question}`;
  if (decision.kind === "unusable") return `unusable: ${decision.reason}`;
  return words(decision.kind);
}

// One row per task of every round, level by level, then the round's
// strategist (as task "@strategist").
function taskRows(run) {
  const rows = [];
  for (const round of run.rounds) {
    round.levels.forEach((ids, level) => {
      for (const id of ids) {
        const task = round.tasks.find((candidate) => candidate.task.id === id);
        if (!task) continue;
        rows.push({
          key: `${round.number}/${id}`,
          round: round.number,
          level: `L${level}`,
          id,
          worker: task.task.worker,
          state: task.state,
          attempts: task.attempts,
        });
      }
    });
    if (round.strategist) {
      const strategist = round.strategist;
      rows.push({
        key: `${round.number}/@strategist`,
        round: round.number,
        level: "strategist",
        id: "@strategist",
        worker: run.strategist || "",
        state: strategist.decision ? "valid" : "running",
        decision: strategist.decision,
        attempts: strategist.attempts,
      });
    }
  }
  return rows;
}

function buildTaskRow(row) {
  return el(
    "tr",
    { "data-task": row.key },
    cell("Round", "round num", String(row.round)),
    cell("Level", "level", row.level),
    cell("Task", "task mono", row.id),
    cell("Worker", "worker", el("a", { href: workerHref(row.worker), text: row.worker })),
    cell("State", "state", el("span", { class: "badge" })),
    cell("Attempts", "attempts num"),
    cell("Duration", "duration num"),
    cell("Status line", "status-line", el("span", { class: "line mono" }), el("span", { class: "sub reason" })),
  );
}

function updateTaskRow(tr, row) {
  const last = row.attempts.length ? row.attempts[row.attempts.length - 1] : null;
  const badge = part(tr, ".state .badge");
  const shown = row.decision ? decisionText(row.decision) : words(row.state);
  badge.dataset.taskState = row.state;
  setText(badge, shown);
  const attempts = part(tr, ".attempts");
  setText(attempts, row.attempts.length);
  setAttr(
    attempts,
    "title",
    row.attempts.map((a, i) => `#${i + 1} run ${a.run_id}: ${a.verdict ? words(a.verdict) : "no verdict yet"}`).join("\n") || null,
  );
  setText(part(tr, ".duration"), last && last.finished_at ? duration(last.duration_ms) : "—");
  setText(part(tr, ".line"), last ? last.status_line || "" : "");
  setText(part(tr, ".reason"), last && last.verdict !== "valid" ? last.reason || "" : "");
}

function renderWorkflowRun(answer) {
  const missing = !!answer.missing;
  $("workflow-run-unknown").hidden = !missing;
  const badge = $("workflow-run-status");
  badge.hidden = missing;
  if (missing) {
    setText($("workflow-run-title"), `Workflow run ${state.route.run}`);
    $("workflow-question").hidden = true;
    $("workflow-run-facts").replaceChildren();
    renderedFrom.delete($("workflow-run-facts"));
    $("workflow-report").tBodies[0].replaceChildren();
    $("workflow-tasks").tBodies[0].replaceChildren();
    return;
  }
  const { run, report } = answer;
  setText($("workflow-run-title"), `${run.workflow} · run ${shortId(run.run_id)}`);
  badge.dataset.workflowStatus = run.status;
  setText(badge, words(run.status));

  const waiting = run.status === "waiting_for_answer";
  $("workflow-question").hidden = !waiting;
  setText($("workflow-question-text"), run.question || "");

  const params = Object.entries(run.params).map(([k, v]) => `${k}=${v}`).join(" ");
  const cost = Object.entries(report.cost).map(([unit, n]) => `${n} ${unit}`).join(", ");
  const facts = [
    ["Run", run.run_id],
    ["Trigger", words(run.trigger)],
    ["Params", params || "none"],
    ["Started", `${localTime(run.started_at)} (${relative(run.started_at)})`],
    ["Finished", run.finished_at ? `${localTime(run.finished_at)} (${relative(run.finished_at)})` : "—"],
    ["Duration", duration(report.duration_ms)],
    ["Runs", `${report.runs} (tasks and strategist, every attempt)`],
    ["CPU", duration(report.cpu_ms)],
    ["Cost", cost || "none reported"],
    ["Rounds", `${run.rounds.length} of at most ${run.max_rounds}`],
    ["Answers", run.answers.length ? run.answers.join(" · ") : "none"],
    ["Outcome", run.outcome || (waiting ? "waiting for an answer" : "running")],
  ];
  const dl = $("workflow-run-facts");
  if (!unchanged(dl, JSON.stringify(facts))) {
    dl.replaceChildren(...facts.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: value })]));
  }

  syncRows(
    $("workflow-report").tBodies[0],
    report.rounds,
    (round) => String(round.round),
    (round) =>
      el(
        "tr",
        { "data-round": round.round },
        cell("Round", "round num", String(round.round)),
        cell("Valid / total", "valid num"),
        cell("Blocked", "blocked num"),
        cell("Skipped", "skipped num"),
        cell("Duration", "duration num"),
        cell("Strategist", "decision"),
      ),
    (tr, round) => {
      setText(part(tr, ".valid"), `${round.tasks_valid}/${round.tasks_total}`);
      setText(part(tr, ".blocked"), round.tasks_blocked);
      setText(part(tr, ".skipped"), round.tasks_skipped);
      setText(part(tr, ".duration"), duration(round.duration_ms));
      setText(part(tr, ".decision"), round.decision ? decisionText(round.decision) : run.strategist ? "—" : "no strategist");
    },
  );
  syncRows($("workflow-tasks").tBodies[0], taskRows(run), (row) => row.key, buildTaskRow, updateTaskRow);
}

// ------------------------------------------------------------------ dead letters

function buildLetterRow(letter) {
  return el(
    "tr",
    { "data-letter": letter.run_id },
    cell("Dead at", "dead-at", el("time", { class: "dead-local" }), el("span", { class: "sub dead-relative" })),
    cell("Worker", "worker", el("a", { href: workerHref(letter.worker), text: letter.worker })),
    cell("Reason", "reason", el("span", { class: "badge", "data-verdict": letter.reason, text: words(letter.reason) })),
    cell("Description", "description"),
    cell("Attempts", "attempts num"),
    cell("Run", "run", el("span", { class: "mono", title: letter.run_id, text: shortId(letter.run_id) })),
    cell("Replayed", "replayed"),
    cell("", "actions-cell", el("button", { type: "button", "data-replay": letter.run_id, text: "Replay" })),
  );
}

function updateLetterRow(tr, letter) {
  tr.dataset.replayed = letter.replayed_by ? "true" : "false";
  const when = part(tr, ".dead-local");
  setText(when, localTime(letter.dead_at));
  setAttr(when, "datetime", letter.dead_at);
  setAttr(when, "title", fullTime(letter.dead_at));
  setText(part(tr, ".dead-relative"), relative(letter.dead_at));
  setText(part(tr, ".description"), letter.description);
  setText(part(tr, ".attempts"), letter.attempts.length);
  const replayed = part(tr, ".replayed");
  setText(replayed, letter.replayed_by ? `as ${shortId(letter.replayed_by)}` : "—");
  setAttr(replayed, "title", letter.replayed_by || null);
  const button = part(tr, "button[data-replay]");
  const pending = button.dataset.pending === "true";
  button.disabled = pending || !!letter.replayed_by || !letter.command;
  setText(button, letter.replayed_by ? "Replayed" : "Replay");
  setAttr(
    button,
    "title",
    letter.replayed_by
      ? `replayed already, as run ${letter.replayed_by}`
      : letter.command
        ? `run ${letter.worker} again with the same parameters`
        : "the message was malformed: there is no command to replay",
  );
}

function renderDeadLetters(letters, worker) {
  syncRows($("dead-letters").tBodies[0], letters, (letter) => letter.run_id, buildLetterRow, updateLetterRow);
  $("dlq-empty").hidden = letters.length > 0;
  setText($("dlq-filter"), worker ? `of ${worker} (all: #/dlq)` : "");
}

// ------------------------------------------------------------------ actions

let toastTimer = null;

function toast(message, kind = "ok") {
  const node = $("toast");
  node.dataset.kind = kind;
  setText(node, message);
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, kind === "error" ? 10000 : 5000);
}

// Runs `request` with `button` disabled; reports the answer, then refreshes.
async function act(button, request, success) {
  button.dataset.pending = "true";
  button.disabled = true;
  try {
    const answer = await request();
    toast(success(answer));
  } catch (error) {
    toast(error.message, "error");
  } finally {
    delete button.dataset.pending;
    refresh();
  }
}

function parseParams(text) {
  const params = {};
  for (const pair of text.split(/\s+/).filter(Boolean)) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new Error(`param ${JSON.stringify(pair)} is not name=value`);
    params[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return params;
}

function onAction(button) {
  const name = button.dataset.worker;
  const action = button.dataset.action;
  if (!name) return;
  if (action === "trigger") {
    let body;
    if (button.id === "worker-trigger") {
      try {
        const params = parseParams($("trigger-params").value);
        if (Object.keys(params).length) body = { params };
      } catch (error) {
        toast(error.message, "error");
        return;
      }
    }
    act(button, () => post(`${workerPath(name)}/trigger`, body), (answer) => `triggered ${name}: run ${answer.run_id}`);
  } else if (action === "pause") {
    state.pauseWorker = { name, button };
    setText($("pause-worker"), name);
    $("pause-until").value = "";
    $("pause-note").value = "";
    $("pause-dialog").returnValue = "";
    $("pause-dialog").showModal();
  } else if (action === "resume") {
    act(button, () => post(`${workerPath(name)}/resume`), (answer) =>
      answer.resumed ? `resumed ${name}` : `${name} was not paused`,
    );
  }
}

function onPauseClosed() {
  const dialog = $("pause-dialog");
  const target = state.pauseWorker;
  state.pauseWorker = null;
  if (!target || dialog.returnValue !== "pause") return;
  const until = $("pause-until").value || null;
  const note = $("pause-note").value.trim();
  act(target.button, () => post(`${workerPath(target.name)}/pause`, { until, note }), (pause) =>
    `paused ${target.name} ${pause.until ? `until ${localTime(pause.until)}` : "until resumed"}`,
  );
}

function onReplay(button) {
  const runId = button.dataset.replay;
  act(button, () => post(`/api/dlq/${encodeURIComponent(runId)}/replay`), (answer) => `replayed as run ${answer.run_id}`);
}

function onStartWorkflow(button) {
  const name = button.dataset.startWorkflow;
  act(button, () => post(`/api/workflows/${encodeURIComponent(name)}/start`), (answer) => {
    location.hash = workflowRunHref(answer.run_id);
    return `started ${name}: workflow run ${answer.run_id}`;
  });
}

function onAnswer(event) {
  event.preventDefault();
  const runId = state.route.run;
  const input = $("workflow-answer-text");
  const text = input.value.trim();
  if (!runId || !text) return;
  act($("workflow-answer"), () => post(`/api/workflow-runs/${encodeURIComponent(runId)}/answer`, { text }), () => {
    input.value = "";
    return `answered; workflow run ${shortId(runId)} resumes`;
  });
}

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target) return;
  const action = target.closest("button[data-action]");
  if (action && !action.disabled) {
    onAction(action);
    return;
  }
  const replay = target.closest("button[data-replay]");
  if (replay && !replay.disabled) {
    onReplay(replay);
    return;
  }
  const start = target.closest("button[data-start-workflow]");
  if (start && !start.disabled) {
    onStartWorkflow(start);
    return;
  }
  const select = target.closest("button[data-select-run]");
  if (select) {
    state.selectedRun = select.dataset.selectRun;
    refresh();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  $("pause-dialog").addEventListener("close", onPauseClosed);
  $("workflow-question").addEventListener("submit", onAnswer);
  window.addEventListener("hashchange", showRoute);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  showRoute();
});
