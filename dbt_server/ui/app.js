// The dbt-remote web UI (docs/ui.md): renders the page of the current path from the API.
//
//   /                 jobs list (?status=…&project=…&environment=…&target=…&page_token=…)
//   /ui/jobs/{id}     one job: fields, live logs (SSE), results, artifacts, links, cancel
//   /ui/schedules     schedules
//
// Everything from the API goes into the page as text (textContent, attributes), never as
// HTML. With authentication on, an API call answers 401: the page then shows only a token
// form, which posts the token to /ui/login (the server answers with an HttpOnly cookie); the
// token is never put in a URL or in storage.

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const LEVELS = ["debug", "info", "warn", "error"];
const REFRESH_MS = 3000;
const main = document.getElementById("main");

/** The page's timers and streams, stopped when another page is rendered. */
const live = { timers: [], sources: [] };

function stopLive() {
  live.timers.forEach(clearInterval);
  live.sources.forEach((s) => s.close());
  live.timers = [];
  live.sources = [];
}

/** An API answer of 401: the page needs a token. */
class AuthNeeded extends Error {}

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces the page's content. */
function show(...nodes) {
  main.replaceChildren(...nodes);
}

/** A JSON API call; 401 throws AuthNeeded, another error an Error with the server's message. */
async function api(path, options = {}) {
  const { headers, ...rest } = options;
  const response = await fetch(path, {
    credentials: "same-origin",
    ...rest,
    headers: { accept: "application/json", ...(headers || {}) },
  });
  if (response.status === 401) throw new AuthNeeded();
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) {
      // Not JSON: keep the status line.
    }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

/** A URL path segment from API data. */
const seg = (value) => encodeURIComponent(String(value));
/** An artifact's URL: its name may hold slashes. */
const artifactUrl = (id, name) =>
  `/api/v1/jobs/${seg(id)}/artifacts/${String(name).split("/").map(seg).join("/")}`;
const jobUrl = (id) => `/ui/jobs/${seg(id)}`;
const dash = "–";

// ---- time, in the viewer's time zone ----

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

/** A <time> of an API timestamp, shown in the viewer's zone, UTC in its title. */
function when(iso, format = dateTime) {
  if (!iso) return dash;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return el("time", { datetime: iso, title: date.toISOString() }, format.format(date));
}

/** "1m 05s" between two timestamps (to now when the end is missing). */
function duration(startIso, endIso) {
  if (!startIso) return dash;
  const end = endIso ? new Date(endIso) : new Date();
  const seconds = Math.max(0, Math.round((end - new Date(startIso)) / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

const badge = (status) => el("span", { class: `badge ${status}`, "data-status": status }, status);
const command = (job) => (job.args || []).join(" ");
const isLive = (job) => job.status === "queued" || job.status === "running";
/** A job field that may be absent (project, target): a dash. */
const orDash = (value) => (value === null || value === undefined || value === "" ? dash : value);

// ---- the token form ----

function showLogin(retry) {
  stopLive();
  document.body.classList.add("login");
  const input = el("input", {
    type: "password",
    name: "token",
    id: "token",
    autocomplete: "current-password",
    required: true,
  });
  const message = el("p", { class: "error-box", id: "login-error", hidden: true });
  const form = el(
    "form",
    { class: "login", id: "login" },
    el("label", { for: "token" }, "Token"),
    el("p", { class: "muted" }, "This server needs a token: the one the CLI sends as DBT_REMOTE_TOKEN."),
    input,
    message,
    el("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    try {
      const response = await fetch("/ui/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ token: input.value }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new Error((body && body.error && body.error.message) || `sign-in failed (${response.status})`);
      }
      input.value = "";
      document.body.classList.remove("login");
      document.getElementById("logout").hidden = false;
      retry();
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
    }
  });
  show(form);
  input.focus();
}

/** Runs a page; a 401 anywhere in it shows the token form, another error a message. */
async function run(page) {
  try {
    await page();
  } catch (error) {
    if (error instanceof AuthNeeded) showLogin(() => run(page));
    else show(el("p", { class: "error-box", id: "page-error" }, error.message));
  }
}

// ---- jobs list ----

/** The job fields the list filters by, as the API's query names them, and their labels. */
const FILTERS = [
  ["project", "Project"],
  ["environment", "Environment"],
  ["target", "Target"],
];

async function jobsPage() {
  const params = new URLSearchParams(location.search);
  const status = params.get("status") || "";
  const token = params.get("page_token") || "";
  const limit = params.get("limit") || "";
  const filters = Object.fromEntries(FILTERS.map(([name]) => [name, params.get(name) || ""]));
  const query = new URLSearchParams({ limit: limit || "25" });
  if (status) query.set("status", status);
  for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
  if (token) query.set("page_token", token);
  const list = await api(`/api/v1/jobs?${query}`);

  /** The list's URL with `changes` (a new filter starts at the first page), for links. */
  const listUrl = (changes = {}) => {
    const values = { status, ...filters, limit, ...changes };
    const next = new URLSearchParams();
    for (const name of ["status", ...FILTERS.map(([n]) => n), "limit", "page_token"]) {
      if (values[name]) next.set(name, values[name]);
    }
    return `/${next.toString() ? `?${next}` : ""}`;
  };
  const filter = el(
    "select",
    { id: "status-filter", "aria-label": "Status" },
    el("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)),
  );
  filter.addEventListener("change", () => navigate(listUrl({ status: filter.value })));
  // Each filter is a text field (applied on Enter or leaving it) suggesting the values of
  // the jobs shown.
  const fieldFilters = FILTERS.map(([name, label]) => {
    const seen = new Set(list.jobs.map((j) => j[name]).filter(Boolean));
    const input = el("input", {
      type: "search",
      id: `${name}-filter`,
      name,
      value: filters[name],
      list: `${name}-values`,
      placeholder: "all",
      size: 14,
      autocomplete: "off",
    });
    input.addEventListener("change", () => navigate(listUrl({ [name]: input.value.trim() })));
    return [
      el("label", { for: `${name}-filter` }, label),
      input,
      el("datalist", { id: `${name}-values` }, [...seen].sort().map((v) => el("option", { value: v }))),
    ];
  });
  const filtered = Object.values(filters).some(Boolean);
  const body = el("tbody", { id: "jobs-body" }, list.jobs.map(jobRow));
  const table = el(
    "table",
    { id: "jobs" },
    el(
      "thead",
      {},
      el("tr", {}, ["Status", "Command", "Project", "Environment", "Target", "Started", "Duration"].map((h) => el("th", {}, h))),
    ),
    body,
  );
  const pager = el("div", { class: "pager" });
  if (token) pager.append(link(listUrl(), "« Newest", { id: "first-page" }));
  if (list.next_page_token) pager.append(link(listUrl({ page_token: list.next_page_token }), "Older »", { id: "next-page" }));
  const clear = listUrl(Object.fromEntries(FILTERS.map(([name]) => [name, ""])));
  show(
    el("h1", {}, "Jobs"),
    el(
      "div",
      { class: "toolbar", id: "filters" },
      el("label", { for: "status-filter" }, "Status"),
      filter,
      fieldFilters.flat(),
      filtered ? link(clear, "Clear filters", { id: "clear-filters" }) : null,
    ),
    list.jobs.length ? table : el("p", { class: "muted", id: "no-jobs" }, "No jobs."),
    pager,
  );
  if (list.jobs.some(isLive)) {
    live.timers.push(setInterval(() => refreshJobs(query, body), REFRESH_MS));
  }
}

function jobRow(job) {
  return el(
    "tr",
    { class: `job status-${job.status}`, "data-job-id": job.id, "data-status": job.status },
    el("td", {}, badge(job.status)),
    el("td", {}, link(jobUrl(job.id), command(job) || job.id, { class: "mono" })),
    el("td", { class: "project" }, orDash(job.project)),
    el("td", { class: "environment" }, orDash(job.environment)),
    el("td", { class: "target" }, orDash(job.target)),
    el("td", {}, when(job.started_at)),
    el("td", { class: "num" }, duration(job.started_at, job.finished_at)),
  );
}

/** Re-reads the shown page of jobs; stops once none of them is queued or running. */
async function refreshJobs(query, body) {
  try {
    const list = await api(`/api/v1/jobs?${query}`);
    body.replaceChildren(...list.jobs.map(jobRow));
    if (!list.jobs.some(isLive)) stopLive();
  } catch (error) {
    if (error instanceof AuthNeeded) showLogin(route);
  }
}

// ---- one job ----

async function jobPage(id) {
  let job = await api(`/api/v1/jobs/${seg(id)}`);
  const fields = el("dl", { class: "fields", id: "fields" });
  const heading = el("h1", {});
  const cancel = el("button", { class: "danger", id: "cancel", type: "button" }, "Cancel");
  const links = el("ul", { class: "links", id: "links" });
  const artifacts = el("div", { id: "artifacts" }, el("p", { class: "muted" }, "Loading…"));
  const results = el("div", { id: "results-section" }, el("p", { class: "muted" }, "Available when the job ends."));
  const logs = logView();

  const render = () => {
    heading.replaceChildren(el("span", { class: "mono" }, command(job)), badge(job.status));
    fields.replaceChildren(...jobFields(job));
    cancel.hidden = !isLive(job);
    cancel.disabled = job.cancel_requested;
    cancel.textContent = job.cancel_requested ? "Cancel requested" : "Cancel";
  };
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      job = await api(`/api/v1/jobs/${seg(id)}/cancel`, { method: "POST" });
      render();
    } catch (error) {
      if (error instanceof AuthNeeded) return showLogin(route);
      cancel.disabled = false;
      alertBox(fields, error.message);
    }
  });
  const loadOutputs = async () => {
    try {
      const names = await showArtifacts(job, artifacts, links);
      if (names.has("run_results.json")) {
        results.replaceChildren(await resultsTable(job.id));
      } else if (!isLive(job)) {
        results.replaceChildren(el("p", { class: "muted" }, "This job wrote no run_results.json."));
      }
    } catch (error) {
      if (error instanceof AuthNeeded) return showLogin(route);
      results.replaceChildren(el("p", { class: "error-box" }, error.message));
    }
  };

  render();
  show(
    el("p", {}, link("/", "« Jobs")),
    heading,
    el("div", { class: "toolbar" }, cancel),
    fields,
    el("h2", {}, "Links"),
    links,
    el("h2", {}, "Logs"),
    logs.node,
    el("h2", {}, "Results"),
    results,
    el("h2", {}, "Artifacts"),
    artifacts,
  );
  await loadOutputs();
  followLogs(id, logs, (ended) => {
    job = ended;
    render();
    loadOutputs();
  });
  if (isLive(job)) {
    // The end event updates the page; this keeps the duration and cancel state fresh.
    live.timers.push(
      setInterval(async () => {
        if (!isLive(job)) return;
        try {
          job = await api(`/api/v1/jobs/${seg(id)}`);
          render();
        } catch (_) {
          // The stream reports what matters; a missed refresh is harmless.
        }
      }, REFRESH_MS),
    );
  }
}

function jobFields(job) {
  const rows = [
    ["Job", el("code", {}, job.id)],
    ["Status", badge(job.status)],
    ["Command", el("code", {}, command(job))],
    ["Project", el("span", { id: "field-project" }, orDash(job.project))],
    ["Environment", el("span", { id: "field-environment" }, orDash(job.environment))],
    ["Target", el("span", { id: "field-target" }, orDash(job.target))],
    ["Created", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Duration", duration(job.started_at, job.finished_at)],
    ["Exit code", job.exit_code ?? dash],
    ["Files", job.file_count ?? dash],
  ];
  if (job.failure_reason) rows.push(["Failure", el("span", { class: "error-text" }, job.failure_reason)]);
  if (job.cancel_requested) rows.push(["Cancel", "requested"]);
  if (job.mode) rows.push(["Mode", job.mode]);
  if (job.elementary !== undefined) rows.push(["Elementary", job.elementary ? "yes" : "no"]);
  return rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]);
}

/** Lists the job's artifacts and fills its links; returns the artifact names. */
async function showArtifacts(job, box, links) {
  const list = await api(`/api/v1/jobs/${seg(job.id)}/artifacts`);
  const names = new Set(list.artifacts.map((a) => a.name));
  box.replaceChildren(
    list.artifacts.length
      ? el(
          "table",
          { id: "artifact-list" },
          el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Size"))),
          el(
            "tbody",
            {},
            list.artifacts.map((a) =>
              el(
                "tr",
                {},
                el("td", {}, el("a", { href: artifactUrl(job.id, a.name), download: a.name.split("/").pop() }, a.name)),
                el("td", { class: "num" }, bytes(a.size)),
              ),
            ),
          ),
        )
      : el("p", { class: "muted" }, isLive(job) ? "Stored when the job ends." : "No artifacts."),
  );
  const items = [];
  if (names.has("elementary_report.html")) {
    items.push(link(artifactUrl(job.id, "elementary_report.html"), "Elementary report", { id: "elementary-link", target: "_blank" }));
  }
  if (names.has("index.html")) {
    items.push(link(`/api/v1/jobs/${seg(job.id)}/docs/`, "dbt docs of this job", { id: "docs-link", target: "_blank" }));
  }
  if (job.project && job.target) {
    items.push(
      link(`/api/v1/docs/${seg(job.project)}/${seg(job.target)}/`, `Latest docs of ${job.project} (${job.target})`, {
        id: "latest-docs-link",
        target: "_blank",
      }),
    );
  }
  links.replaceChildren(
    ...(items.length ? items.map((a) => el("li", {}, a)) : [el("li", { class: "muted" }, "No report or docs for this job.")]),
  );
  return names;
}

/** The per-node table of run_results.json. */
async function resultsTable(id) {
  const runResults = await api(artifactUrl(id, "run_results.json"));
  const results = Array.isArray(runResults.results) ? runResults.results : [];
  if (!results.length) return el("p", { class: "muted" }, "No nodes ran.");
  return el(
    "table",
    { id: "results" },
    el("thead", {}, el("tr", {}, ["Node", "Status", "Time (s)", "Message"].map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      results.map((r) =>
        el(
          "tr",
          { class: `result result-${r.status}`, "data-node": r.unique_id, "data-status": r.status },
          el("td", { class: "mono node" }, r.unique_id),
          el("td", { class: "status" }, badge(String(r.status))),
          el("td", { class: "num" }, typeof r.execution_time === "number" ? r.execution_time.toFixed(2) : dash),
          el("td", { class: "message" }, r.message ?? ""),
        ),
      ),
    ),
  );
}

// ---- live logs ----

/** The log panel: a level filter, a follow switch, the lines. */
function logView() {
  const list = el("ol", { class: "logs", id: "logs", tabindex: "0" });
  const level = el(
    "select",
    { id: "level-filter", "aria-label": "Lowest level" },
    LEVELS.map((l) => el("option", { value: l, selected: l === "info" }, `${l} and above`)),
  );
  const state = el("span", { class: "muted", id: "log-state" }, "connecting…");
  const follow = el("button", { type: "button", id: "follow", hidden: true }, "Follow the tail");
  const view = { list, level, state, following: true, node: null };
  const visible = (li) => LEVELS.indexOf(li.dataset.level) >= LEVELS.indexOf(level.value);
  view.visible = visible;
  view.toBottom = () => {
    list.scrollTop = list.scrollHeight;
  };
  level.addEventListener("change", () => {
    for (const li of list.children) li.hidden = !visible(li);
    if (view.following) view.toBottom();
  });
  list.addEventListener("scroll", () => {
    // The user scrolled up: stop following until they come back to the end.
    view.following = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    follow.hidden = view.following;
  });
  follow.addEventListener("click", () => {
    view.following = true;
    follow.hidden = true;
    view.toBottom();
  });
  view.node = el(
    "div",
    {},
    el("div", { class: "toolbar" }, el("label", { for: "level-filter" }, "Level"), level, follow, el("span", { class: "spacer" }), state),
    list,
  );
  return view;
}

function logLine(record, view) {
  const level = LEVELS.includes(record.level) ? record.level : "info";
  const li = el(
    "li",
    { class: `log level-${level}`, "data-seq": record.seq, "data-level": level },
    el("span", { class: "time" }, record.time ? when(record.time, timeOnly) : ""),
    el("span", { class: "level" }, level),
    record.message ?? "",
  );
  li.hidden = !view.visible(li);
  return li;
}

/** Follows the job's log over SSE until its end event; `onEnd` gets the final job. */
function followLogs(id, view, onEnd) {
  const source = new EventSource(`/api/v1/jobs/${seg(id)}/logs/stream`);
  live.sources.push(source);
  let last = 0;
  source.addEventListener("open", () => {
    view.state.textContent = "live";
  });
  source.addEventListener("log", (event) => {
    const record = JSON.parse(event.data);
    if (record.seq <= last) return; // a resumed stream repeats nothing, but be sure
    last = record.seq;
    view.list.append(logLine(record, view));
    view.state.textContent = `live · ${last} lines`;
    if (view.following) view.toBottom();
  });
  source.addEventListener("end", (event) => {
    source.close();
    view.state.textContent = `ended · ${last} lines`;
    onEnd(JSON.parse(event.data));
  });
  source.addEventListener("error", async (event) => {
    if (event.data) {
      // The server's own error event: reading the log failed; the stream is over.
      source.close();
      view.state.textContent = "the log could not be read";
      return;
    }
    if (source.readyState === EventSource.CLOSED) {
      // Refused (e.g. 401): find out why with a plain call.
      view.state.textContent = "disconnected";
      run(() => api(`/api/v1/jobs/${seg(id)}`));
    } else {
      view.state.textContent = "reconnecting…";
    }
  });
}

// ---- schedules ----

async function schedulesPage() {
  const list = await api("/api/v1/schedules");
  const rows = list.schedules.map((s) =>
    el(
      "tr",
      { class: "schedule", "data-name": s.name },
      el("td", {}, s.name),
      el("td", { title: s.description || "" }, el("code", {}, s.cron), " ", el("span", { class: "muted" }, s.description || "")),
      el("td", {}, el("code", {}, s.command)),
      el("td", {}, when(s.next_run)),
      el("td", {}, when(s.last_run)),
      el("td", {}, s.last_job ? link(jobUrl(s.last_job), "last job", { class: "last-job" }) : dash),
    ),
  );
  show(
    el("h1", {}, "Schedules"),
    rows.length
      ? el(
          "table",
          { id: "schedules" },
          el("thead", {}, el("tr", {}, ["Name", "Cron (UTC)", "Command", "Next run", "Last run", "Last job"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows),
        )
      : el("p", { class: "muted", id: "no-schedules" }, "No schedules."),
  );
}

// ---- helpers and routing ----

function link(href, text, attrs = {}) {
  const a = el("a", { href, ...attrs }, text);
  if (!attrs.target && !attrs.download && href.startsWith("/") && !href.startsWith("/api/")) {
    a.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      navigate(href);
    });
  }
  return a;
}

function bytes(n) {
  if (typeof n !== "number") return dash;
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function alertBox(after, message) {
  after.after(el("p", { class: "error-box" }, message));
}

function navigate(href) {
  history.pushState(null, "", href);
  route();
}

function route() {
  stopLive();
  const path = location.pathname;
  for (const a of document.querySelectorAll("#nav a")) {
    const current = a.dataset.nav === (path.startsWith("/ui/schedules") ? "schedules" : "jobs");
    a.classList.toggle("current", current);
  }
  const job = path.match(/^\/ui\/jobs\/([^/]+)$/);
  if (path === "/") return run(jobsPage);
  if (job) return run(() => jobPage(decodeURIComponent(job[1])));
  if (path === "/ui/schedules") return run(schedulesPage);
  show(el("p", { class: "error-box" }, "No such page."));
}

document.getElementById("timezone").textContent = `Times in ${Intl.DateTimeFormat().resolvedOptions().timeZone}`;
document.getElementById("logout").addEventListener("click", async (event) => {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin" });
  event.target.hidden = true;
  route();
});
window.addEventListener("popstate", route);
route();
