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
    // The figures are computed in the background: say how old they are, and what computing them took.
    $("as-of").textContent = `figures as of ${Math.round(d.stale_seconds)} s ago`;
    $("as-of").title = `computed in ${fmt(d.compute_seconds)} s`;
    let pace = stat("answers per minute (last 5 min)", d.pace.answers_per_minute);
    for (const [name, v] of Object.entries(d.pace)) {
      if (typeof v !== "object") continue;
      pace += `<br><b>${esc(name.replace("_", " "))}</b>: ` + stat("answers", v.answers) + stat("median s / answer", v.median_seconds_per_answer) + stat("median s / image", v.median_seconds_per_image);
    }
    $("pace").innerHTML = pace;
    $("workers").innerHTML = "<tr>" + WORKER_COLUMNS.map(([, label]) => `<th>${label}</th>`).join("") + "</tr>" +
      d.workers.map((w) => `<tr class="${w.banned ? "banned" : ""}">` + WORKER_COLUMNS.map(([c]) => cell(c, w)).join("") + "</tr>").join("");
    const stamp = Date.now(), ratio = Math.min(4, Math.max(1, window.devicePixelRatio || 1));
    $("previews").innerHTML = d.previews.map((p) => {
      const src = `${base}/previews/${p.image_id}.jpg?px=${PREVIEW_PX}&dpr=${ratio}&key=${encodeURIComponent(key)}&t=${stamp}`;
      return `<figure><img alt="the mask being formed over ${esc(p.name)}" width="${PREVIEW_PX}" height="${Math.round(PREVIEW_PX * p.height / p.width)}" src="${src}">` +
        `<figcaption><span class="name" title="${esc(p.name)}">${esc(p.name)}</span>${p.answers} answers · ${esc(p.stage)}</figcaption></figure>`;
    }).join("");
  }

  const PREVIEW_PX = 220;
  const WORKER_COLUMNS = [
    ["worker", "worker"], ["evidence", "evidence"], ["platform", "platform"], ["answers", "answers"], ["gold_seen", "gold"], ["gold_accuracy", "gold acc"],
    ["agreement", "agree"], ["yes_rate", "yes"], ["median_seconds", "median s"], ["too_fast", "fast"], ["stopped_reason", "stopped by"],
    ["completion_code", "completion code"],
  ];

  function cell(column, worker) {
    const value = worker[column];
    // Long ids (Prolific's are 24 characters, MTurk's longer) are cut with an ellipsis; the whole id is the cell's tooltip.
    if (column === "worker") return `<td class="worker" title="${esc(value)}">${esc(value)}</td>`;
    if (column === "stopped_reason") return `<td class="stopped">${esc(value || (worker.banned ? "yes" : ""))}</td>`;
    if (column === "completion_code") return `<td class="code">${esc(value || "")}</td>`;
    return `<td>${esc(fmt(value))}</td>`;
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
