// tapers panel: keeps the server-rendered page live (state, plan, graphs) and runs the
// buttons without leaving the page. Without JavaScript the page still reads, and its
// forms still work (the server answers them with a page of their own).
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;
const POINTS = 120;
const history = new Map(); // "key container" -> [{t, cpu, memory, memory_limit, pids, rx, tx}]
let since = 0;
let polling = 2000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(tag === "svg" || tag === "polyline" ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function size(bytes) {
  const units = [["G", 1 << 30], ["M", 1 << 20], ["K", 1 << 10]];
  for (const [unit, factor] of units) if (bytes >= factor) return (bytes / factor).toFixed(1) + unit;
  return Math.round(bytes) + "B";
}

// -- graphs ---------------------------------------------------------------------------

function line(values, max, cls) {
  const n = values.length;
  const points = values.map((v, i) => {
    const x = 120 - (n - 1 - i) * (120 / (POINTS - 1)); // the newest point at the right edge
    const y = 36 - (max > 0 ? Math.min(v / max, 1) : 0) * 34 - 1;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  return el("polyline", { points: points.join(" "), class: cls });
}

function chart(name, caption, series, max) {
  const svg = el("svg", { viewBox: "0 0 120 36", preserveAspectRatio: "none", role: "img", "aria-label": caption });
  for (const [values, cls] of series) svg.append(line(values, max, cls));
  return el("figure", { class: "chart", "data-chart": name, "data-samples": String(series[0][0].length) },
    el("figcaption", {}, caption), svg);
}

function drawGraphs(card, points) {
  const box = card.querySelector('[data-field="graphs"]');
  if (!points.length) {
    box.replaceChildren();
    card.querySelector('[data-field="use"]').textContent = "-";
    return;
  }
  const last = points[points.length - 1];
  const limit = last.memory_limit;
  const maxOf = (key) => Math.max(...points.map((p) => p[key]));
  box.replaceChildren(
    chart("cpu", `CPU ${last.cpu}%`, [[points.map((p) => p.cpu), "cpu"]], Math.max(100, maxOf("cpu"))),
    chart("memory", `memory ${size(last.memory)}${limit ? " / " + size(limit) : ""}`,
      [[points.map((p) => p.memory), "memory"]], limit || maxOf("memory") * 1.25),
    chart("pids", `${last.pids} processes`, [[points.map((p) => p.pids), "pids"]], Math.max(10, maxOf("pids") * 1.25)),
    chart("network", `net ↓${size(last.rx)}/s ↑${size(last.tx)}/s`,
      [[points.map((p) => p.rx), "rx"], [points.map((p) => p.tx), "tx"]], Math.max(1024, maxOf("rx"), maxOf("tx")) * 1.25),
  );
  card.querySelector('[data-field="use"]').textContent =
    `CPU ${last.cpu}% · memory ${size(last.memory)} · ${last.pids} processes`;
}

// -- state ----------------------------------------------------------------------------

function setList(node, lines, empty) {
  if (!lines.length) {
    node.textContent = empty;
    return;
  }
  node.replaceChildren(el("ul", {}, ...lines.map((l) => el("li", {}, l))));
}

// A machine's card: projects are told apart by their key (their folder), never by their
// name, which two folders may share (and with it their machines' container names).
function cardId(key, container) {
  return `${key} ${container}`;
}

function cardOf(key, container) {
  return document.querySelector(
    `article.machine[data-key="${CSS.escape(key)}"][data-container="${CSS.escape(container)}"]`);
}

function update(card, m) {
  const state = card.querySelector('[data-field="state"]');
  state.textContent = m.state;
  state.dataset.state = m.state;
  card.querySelector('[data-field="address"]').textContent = m.address || "-";
  card.querySelector('[data-field="box"]').textContent = m.box;
  const config = card.querySelector('[data-field="config"]');
  if (m.out_of_date.length) {
    config.replaceChildren(el("span", { class: "drift" }, "out of date: " + m.out_of_date.join(", ")));
  } else {
    config.textContent = "up to date";
  }
  setList(card.querySelector('[data-field="plan"]'), m.plan, "nothing to do");
  const ports = card.querySelector('[data-field="ports"]');
  ports.replaceChildren(...m.ports.map((p) => {
    const host = ["0.0.0.0", ""].includes(p.host_ip) ? "127.0.0.1" : p.host_ip;
    return el("a", { href: `http://${host}:${p.host}/`, target: "_blank", rel: "noopener" }, `${p.host_ip}:${p.host} → ${p.guest} `);
  }));
  if (!m.ports.length) ports.textContent = "-";
  const id = cardId(card.dataset.key, m.container);
  const points = (history.get(id) || []).concat(m.history).slice(-POINTS);
  history.set(id, m.state === "running" ? points : []);
  drawGraphs(card, history.get(id));
}

async function refresh() {
  const response = await fetch(`/api/state?since=${since}`, { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    location.reload();
    return;
  }
  const data = await response.json();
  const seen = new Set();
  for (const project of data.projects) {
    for (const m of project.machines) {
      const card = cardOf(project.key, m.container);
      if (!card) {
        location.reload(); // a machine came: the server renders its card
        return;
      }
      seen.add(cardId(project.key, m.container));
      update(card, m);
      for (const p of m.history) since = Math.max(since, p.t);
    }
  }
  for (const card of document.querySelectorAll("article.machine")) {
    if (!seen.has(cardId(card.dataset.key, card.dataset.container))) card.remove();
  }
  polling = Math.max(1000, data.interval * 2000);
  document.getElementById("live").hidden = false;
}

async function loop() {
  try {
    await refresh();
  } catch (err) {
    document.getElementById("live").hidden = true;
  }
  setTimeout(loop, polling);
}

// -- buttons --------------------------------------------------------------------------

async function follow(card, jobId) {
  const out = card.querySelector('[data-field="output"]');
  let from = 0;
  for (;;) {
    const job = await (await fetch(`/api/jobs/${jobId}?from=${from}`)).json();
    from = job.next;
    if (job.lines.length) out.textContent += job.lines.join("\n") + "\n";
    out.scrollTop = out.scrollHeight;
    if (job.done) {
      out.dataset.result = job.code === 0 ? "ok" : "failed";
      out.textContent += job.code === 0 ? "done\n" : `failed (exit code ${job.code})\n`;
      card.classList.remove("busy");
      await refresh();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

async function submit(event) {
  const form = event.target;
  const card = form.closest("article.machine");
  event.preventDefault();
  const body = new URLSearchParams(new FormData(form, event.submitter));
  if (body.get("action") === "destroy") {
    const question = `Destroy machine "${card.dataset.machine}" of project "${card.dataset.project}" ` +
      `(in ${card.dataset.root})? Its disk is deleted.`;
    if (!window.confirm(question)) return;
    body.set("confirm", card.dataset.machine);
  }
  const out = card.querySelector('[data-field="output"]');
  out.hidden = false;
  out.dataset.result = "running";
  out.textContent = `$ tapers ${form.getAttribute("action") === "/limits" ? "limits" : body.get("action")} ${card.dataset.machine}\n`;
  card.classList.add("busy");
  const response = await fetch(form.getAttribute("action"), {
    method: "POST",
    headers: { Accept: "application/json", "X-Tapers-CSRF": csrf },
    body,
  });
  if (response.status !== 202) {
    out.textContent += await response.text();
    out.dataset.result = "failed";
    card.classList.remove("busy");
    return;
  }
  await follow(card, (await response.json()).job);
}

for (const form of document.querySelectorAll("form.actions, form.limits")) {
  form.addEventListener("submit", submit);
}
loop();
