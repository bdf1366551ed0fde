// The requester dashboard: polls the requester API with the key from the page's URL.
"use strict";
(() => {
  const project = document.body.dataset.project;
  const key = new URLSearchParams(location.search).get("key");
  const base = `/api/v1/projects/${encodeURIComponent(project)}`;
  const $ = (id) => document.getElementById(id);
  const call = (method, path, payload) => fetch(base + path, {
    method, headers: { "X-API-Key": key, "Content-Type": "application/json" },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  }).then((r) => r.json());
  const fmt = (v) => (v === null || v === undefined ? "–" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : String(v));
  const stat = (label, value) => `<span class="stat"><b>${fmt(value)}</b>${label}</span>`;
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

  async function refresh() {
    const d = await call("GET", "/dashboard");
    const p = d.progress;
    let html = Object.entries(p.images).map(([stage, n]) => stat(`images ${esc(stage)}`, n)).join("");
    html += "<br>" + Object.entries(p.questions).map(([kind, s]) => stat(`${esc(kind)} questions done / open`, `${s.done} / ${s.open}`)).join("");
    html += "<br>" + stat("answers", p.answers);
    $("progress").innerHTML = html;
    let pace = stat("answers per minute (last 5 min)", d.pace.answers_per_minute);
    for (const [name, v] of Object.entries(d.pace)) {
      if (typeof v !== "object") continue;
      pace += `<br><b>${esc(name.replace("_", " "))}</b>: ` + stat("answers", v.answers) + stat("median s / answer", v.median_seconds_per_answer) + stat("median s / image", v.median_seconds_per_image);
    }
    $("pace").innerHTML = pace;
    const cols = ["worker", "platform", "answers", "gold_seen", "gold_accuracy", "agreement", "yes_rate", "median_seconds", "too_fast", "banned", "completion_code"];
    $("workers").innerHTML = "<tr>" + cols.map((c) => `<th>${c.replace("_", " ")}</th>`).join("") + "</tr>" +
      d.workers.map((w) => `<tr class="${w.banned ? "banned" : ""}">` + cols.map((c) => `<td>${esc(fmt(w[c]))}</td>`).join("") + "</tr>").join("");
    const stamp = Date.now();
    $("previews").innerHTML = d.previews.map((id) => `<img alt="mask ${id}" src="${base}/masks/${id}.png?key=${encodeURIComponent(key)}&t=${stamp}">`).join("");
  }

  $("answers-csv").href = `${base}/answers.csv?key=${encodeURIComponent(key)}`;
  $("export").addEventListener("click", async () => {
    $("export-result").textContent = "building…";
    const r = await call("POST", "/export", { formats: ["png", "npy", "coco"] });
    $("export-result").textContent = JSON.stringify(r, null, 2);
  });
  $("make-links").addEventListener("click", async () => {
    const mode = $("mode").value;
    const links = await call("GET", `/links?mode=${mode}`);
    const invite = await call("POST", "/invites", { label: "local", mode });
    $("links").innerHTML = `<dt>Prolific study URL (completion code ${esc(links.prolific_completion_code)})</dt><dd>${esc(links.prolific)}</dd>` +
      `<dt>MTurk ExternalQuestion URL</dt><dd>${esc(links.mturk)}</dd><dt>Local invite link</dt><dd>${esc(invite.url)}</dd>`;
  });
  $("polygon-tasks").addEventListener("click", async () => {
    const r = await call("POST", "/polygon-tasks");
    $("export-result").textContent = `${r.created} polygon tasks added`;
  });
  refresh();
  setInterval(refresh, 5000);
})();
