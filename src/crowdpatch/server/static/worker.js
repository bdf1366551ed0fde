// The worker page: open a session from the platform's link, then answer, prefetching the next task.
"use strict";
(() => {
  const body = document.body;
  const project = body.dataset.project;
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, perSession: Number(body.dataset.answers), given: 0,
    current: null, shownAt: 0, next: null, nextReady: null, undoable: false, finished: false,
    cells: new Set(), points: [], closed: false, marks: [], latencies: [], pressedAt: null, inflight: new Set(), sending: new Set(),
    waited: 0,  // key presses whose next patch was not decoded yet (bench/keypress.py reports it)
  };
  window.crowdpatch = state;
  const wide = window.matchMedia("(min-width: 860px)");  // the task screen's two-column layout (worker.css)
  const pixelRatio = Math.min(4, Math.max(1, Math.round((window.devicePixelRatio || 1) * 4) / 4));

  function arrival() {
    const mode = params.get("mode") === "polygon" ? "polygon" : "patch";
    if (params.get("PROLIFIC_PID")) {
      return { platform: "prolific", worker_id: params.get("PROLIFIC_PID"), study_id: params.get("STUDY_ID"),
               session_id: params.get("SESSION_ID"), mode };
    }
    if (params.get("assignmentId")) {
      return { platform: "mturk", worker_id: params.get("workerId") || "", assignment_id: params.get("assignmentId"),
               hit_id: params.get("hitId"), turk_submit_to: params.get("turkSubmitTo"), mode };
    }
    let id = localStorage.getItem("crowdpatch-worker");
    if (!id) { id = "w-" + crypto.getRandomValues(new Uint32Array(2)).join(""); localStorage.setItem("crowdpatch-worker", id); }
    return { platform: "local", worker_id: params.get("worker") || id, invite: params.get("invite"), mode };
  }

  function clientId() {
    const a = crypto.getRandomValues(new Uint32Array(4));
    return Array.from(a, (n) => n.toString(16).padStart(8, "0")).join("");
  }

  async function api(method, path, payload) {
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch(path, {
          method, headers: { "Content-Type": "application/json", ...(state.token ? { Authorization: "Bearer " + state.token } : {}) },
          body: payload === undefined ? undefined : JSON.stringify(payload),
        });
        if (response.status === 503 && response.headers.get("Retry-After") && attempt < 60) {
          // the server cannot store right now (a full disk): wait as told, then the same request again
          await new Promise((r) => setTimeout(r, Math.min(Number(response.headers.get("Retry-After")) || 5, 30) * 1000));
          continue;
        }
        if (response.status >= 500 && attempt < 4) throw new Error("server " + response.status);
        if (response.status === 429 && attempt < 4) {  // rate limited: wait as told, then the same request again
          const seconds = Math.min(Number(response.headers.get("Retry-After")) || 1, 30);
          await new Promise((r) => setTimeout(r, seconds * 1000));
          continue;
        }
        return response;
      } catch (error) {  // network trouble: retrying is safe, answers carry a client id
        if (attempt >= 4) throw error;
        await new Promise((r) => setTimeout(r, 300 * 2 ** attempt));
      }
    }
  }

  function show(section) {
    for (const id of ["intro", "task", "finished", "refused"]) $(id).hidden = id !== section;
  }

  // -- refusals: a page titled by what happened (the server words it) ------------------------------
  function showRefusal(body) {
    state.finished = true;
    const title = body.title || "Cannot go on";
    document.title = title;
    $("refused-title").textContent = title;
    $("refused-text").textContent = body.detail || "";
    $("refused-hint").textContent = body.hint || "";
    $("refused-hint").hidden = !body.hint;
    show("refused");
    if (body.reason === "stopped" && body.code_offered) offerCode();
  }

  async function refused(response) {
    // 401 / 403 carry a reason: show its page and stop. Anything else is the caller's to handle.
    if (response.status !== 401 && response.status !== 403) return false;
    let body = {};
    try { body = await response.json(); } catch (error) { body = { detail: "This link cannot be used (" + response.status + ")." }; }
    showRefusal(body);
    return true;
  }

  async function offerCode() {
    // A stopped worker whom the study pays anyway: the code (and the way back to the platform) on the stop page.
    const response = await api("POST", "/api/v1/sessions/complete");
    if (!response.ok) return;
    const done = await response.json();
    $("refused-code").hidden = false;
    $("stopped-code").parentElement.hidden = !done.code;
    $("stopped-code").textContent = done.code || "";
    if (done.redirect_url) { $("refused-return").href = done.redirect_url; $("refused-return").hidden = false; }
    if (done.submit_url) { $("refused-submit").hidden = false; $("refused-submit").onclick = () => submitForm(done); }
  }

  window.addEventListener("unhandledrejection", () => {
    if (state.finished) return;
    showRefusal({ title: "Connection lost", detail: "The server could not be reached. Your answers so far are saved: reload this page to go on." });
  });

  function counter() { $("counter").textContent = `${state.given} / ${state.perSession}`; }

  async function fetchTask(exclude) {
    const query = exclude ? "?exclude=" + exclude.join(",") : "";
    const response = await api("GET", "/api/v1/tasks/next" + query);
    if (response.status === 204) return null;
    if (await refused(response)) return null;
    if (!response.ok) throw new Error("next task: " + response.status);
    return withImages(await response.json());
  }

  // -- the picture: as wide as it can be shown whole, drawn by the server at exactly that size -----
  function pictureWidth(task) {
    const [x0, y0, x1, y1] = task.view_box;
    const aspect = (x1 - x0) / (y1 - y0);
    const slot = $("frame-slot");
    const available = slot.clientWidth || document.body.clientWidth;
    const top = slot.getBoundingClientRect().top + window.scrollY;
    const below = wide.matches ? 16 : 150;  // on a phone the answer buttons sit below the picture
    const height = Math.max(220, window.innerHeight - top - below);
    return Math.max(Math.min(available, 160), Math.floor(Math.min(available, height * aspect)));
  }

  const MIN_ROW_PANEL = 260;  // CSS px: narrower pick pictures go in a column when that shows them larger

  function choiceLayout(task) {
    // A pick's pictures, all on screen at once where they fit: in one row, or in a column on a narrow screen.
    const [x0, y0, x1, y1] = task.view_box;
    const aspect = (x1 - x0) / (y1 - y0), count = task.choice_urls.length, gap = 12;
    const slot = $("frame-slot");
    const available = slot.clientWidth || document.body.clientWidth;
    const top = slot.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(220, window.innerHeight - top - (wide.matches ? 16 : 150));
    const fit = (across) => {
      const rows = Math.ceil(count / across);
      const width = Math.min((available - gap * (across - 1)) / across, ((height - gap * (rows - 1)) / rows - 28) * aspect);
      return { across, width: Math.floor(Math.max(120, Math.min(width, 640))) };
    };
    // Side by side, to compare at a glance; in a column only where a row would make them small and a column larger.
    const row = fit(count), column = fit(1);
    return row.width >= MIN_ROW_PANEL || row.width >= column.width ? row : column;
  }

  function withImages(task) {
    // Decoded off the main thread ahead of time: swapping these very elements in paints at once.
    const size = (px) => `&px=${px}&dpr=${pixelRatio}`;
    const pictures = [];
    if (task.kind === "pick") {
      task.layout = choiceLayout(task);
      task.width = task.layout.width;
      task.pictures = task.choice_urls.map((url) => { const image = new Image(); image.src = url + size(task.width); return image; });
      pictures.push(...task.pictures);
    } else {
      task.width = pictureWidth(task);
      task.main = new Image(); task.main.src = task.image_url + size(task.width);
      task.context = new Image(); task.context.src = task.context_url + size(wide.matches ? 200 : 110);
      pictures.push(task.main, task.context);
    }
    task.ready = Promise.all(pictures.map((image) => image.decode())).catch(() => undefined);
    return task;
  }

  function prefetch() {
    // Answers still in flight hold their lease until stored: never let the prefetch get them back.
    const exclude = [...state.inflight, ...(state.current ? [state.current.task_id] : [])];
    const next = fetchTask(exclude);
    state.next = next;
    state.nextReady = null;
    // Once its images are decoded, a key press can show it without waiting for anything.
    next.then((task) => task && task.ready.then(() => { if (state.next === next) state.nextReady = task; }), () => undefined);
  }

  async function advance() {
    const task = await state.next;
    state.next = null; state.nextReady = null;
    if (state.finished) return;
    if (!task) { await complete(state.given < state.perSession); return; }
    await task.ready;
    render(task);
    prefetch();
  }

  function place(id, image) {
    const shown = $(id);
    if (shown === image) return;
    image.id = id; image.alt = shown.alt;
    shown.replaceWith(image);
  }

  function render(task) {
    state.current = task;
    const kind = task.kind;
    $("question").textContent = task.question;
    if (kind === "pick") showChoices(task);
    else {
      place("main", task.main);
      place("context", task.context);
      $("frame").style.width = task.width + "px";
    }
    $("frame").hidden = kind === "pick";
    $("choices").hidden = kind !== "pick";
    $("where").hidden = kind !== "patch" && kind !== "grid";
    $("answer-yesno").hidden = kind !== "verify" && kind !== "patch";
    $("answer-grid").hidden = kind !== "grid";
    $("answer-polygon").hidden = kind !== "polygon";
    $("answer-extreme").hidden = kind !== "extreme";
    $("answer-pick").hidden = kind !== "pick";
    $("answer-correct").hidden = kind !== "correct";
    $("region").hidden = kind !== "grid";
    $("marks").hidden = !MARKED.has(kind);
    $("marks").classList.toggle("errors", kind === "correct");
    $("poly").toggleAttribute("hidden", kind !== "polygon");  // an SVG element has no .hidden property
    $("frame").dataset.taskId = task.task_id;
    $("frame").dataset.kind = kind;
    $("message").textContent = "";
    if (kind === "grid") { placeRegion(task); buildGrid(task.grid_size, task.active_cells); }
    if (kind === "polygon") resetPolygon();
    if (MARKED.has(kind)) resetMarks();
    show("task");
    requestAnimationFrame(() => {
      state.shownAt = performance.now();
      if (state.pressedAt !== null) { state.latencies.push(state.shownAt - state.pressedAt); state.pressedAt = null; }
      body.dataset.shown = task.task_id;
    });
  }

  async function answer(value, event) {
    const task = state.current;
    if (!task || state.finished) return;
    // The key event's own time: input handling delays count against us too.
    state.pressedAt = event && event.timeStamp ? event.timeStamp : performance.now();
    const payload = { task_id: task.task_id, answer: value, client_id: clientId(), client_ms: Math.round(state.pressedAt - state.shownAt) };
    state.current = null;
    $("frame").dataset.taskId = "";
    const last = state.given + state.inflight.size + 1 >= state.perSession;
    state.inflight.add(task.task_id);
    let shown;
    if (!last && state.nextReady) {
      // The next patch is here and decoded: show it in this same event, before anything goes on the network.
      const next = state.nextReady;
      state.next = null; state.nextReady = null;
      render(next);
      prefetch();
      shown = Promise.resolve();
    } else {
      if (!last) state.waited += 1;
      shown = last ? Promise.resolve() : advance();
    }
    // Stored in the background; the retries in api() reuse the client id, so a retry never stores twice.
    const sent = api("POST", "/api/v1/answers", payload).finally(() => { state.inflight.delete(task.task_id); state.sending.delete(sent); });
    state.sending.add(sent);
    const response = await sent;
    if (response.status === 201 || response.status === 200) {
      const result = await response.json();
      state.given = result.answers_given;
      state.undoable = true;
      $("undo").disabled = false;
      counter();
      if (result.worker_stopped && !result.session_complete) {
        // Stopped by this answer: the next-task request says why (403), and the stop page replaces the screen.
        await shown;
        const leased = await fetchTask([]);
        if (!state.finished && !leased) await complete();
      } else if (result.session_complete) { await shown; await complete(); }
      else if (last) await advance();
    } else if (response.status === 409) {
      $("message").textContent = "That question had already been answered by others; here is the next one.";
    } else if (await refused(response)) {
      return;
    } else {
      $("message").textContent = "Your answer could not be saved (" + response.status + ").";
    }
    await shown;
  }

  async function undo() {
    if (!state.undoable || state.finished) return;
    const response = await api("POST", "/api/v1/answers/undo");
    if (await refused(response)) return;
    if (!response.ok) {
      $("message").textContent = (await response.json()).detail || "Cannot undo.";
      state.undoable = false; $("undo").disabled = true;
      return;
    }
    const task = withImages(await response.json());
    await task.ready;
    state.given = Math.max(0, state.given - 1);
    counter();
    state.undoable = false; $("undo").disabled = true;
    // The task on screen stays leased to us: it comes back through the prefetch slot.
    const waiting = state.current;
    if (waiting) {
      const later = state.next;
      state.next = Promise.resolve(waiting); state.nextReady = waiting;
      if (later) later.then(() => undefined);
    }
    render(task);
    $("message").textContent = "Your last answer was taken back: answer it again.";
  }

  function submitForm(done) {
    const form = document.createElement("form");
    form.method = "POST"; form.action = done.submit_url;
    for (const [name, value] of Object.entries(done.fields || {})) {
      const input = document.createElement("input"); input.type = "hidden"; input.name = name; input.value = value; form.append(input);
    }
    document.body.append(form); form.submit();
  }

  async function complete(noneLeft) {
    if (state.finished) return;
    state.finished = true;
    // A finished session takes no more answers: the last ones must be stored before it is completed.
    await Promise.allSettled([...state.sending]);
    const response = await api("POST", "/api/v1/sessions/complete");
    if (await refused(response)) return;
    if (!response.ok) { showRefusal(await response.json()); return; }  // 409: nothing answered yet
    const done = await response.json();
    if (done.redirect_url) { location.href = done.redirect_url; return; }
    if (done.submit_url) { submitForm(done); return; }
    $("finished-text").textContent = (noneLeft ? "There are no more questions for now. " : "You have finished. ") +
      "Keep this code, or paste it where you were asked for it: the study's organiser sees it beside your answers.";
    $("code").textContent = done.code;
    show("finished");
  }

  // -- grid --------------------------------------------------------------------------------------
  function buildGrid(size, active) {
    // Consecutive grid screens reuse their cells: rebuilding 64 nodes per answer costs a layout.
    // A boundary round (active cells given) locks the cells already decided: greyed, not clickable.
    const grid = $("grid");
    state.cells = new Set();
    state.active = active ? new Set(active) : null;
    if (grid.dataset.size !== String(size)) makeCells(grid, size);
    drawLines($("grid-lines"), size);
    for (const cell of grid.querySelectorAll(".on")) cell.classList.remove("on");
    for (const cell of grid.children) cell.classList.toggle("locked", state.active !== null && !state.active.has(Number(cell.dataset.cell)));
  }

  function placeRegion(task) {
    // The grid covers the task's box, which the picture may show inside its surroundings (view_box).
    const [vx0, vy0, vx1, vy1] = task.view_box, [x0, y0, x1, y1] = task.box;
    const across = (pixels) => `${(100 * pixels) / (vx1 - vx0)}%`, down = (pixels) => `${(100 * pixels) / (vy1 - vy0)}%`;
    Object.assign($("region").style, { left: across(x0 - vx0), right: across(vx1 - x1), top: down(y0 - vy0), bottom: down(vy1 - y1) });
  }

  function drawLines(svg, size) {
    // Every cell boundary, white over a dark halo (worker.css); the strokes keep their width at any picture size.
    if (svg.dataset.size === String(size)) return;
    svg.dataset.size = size;
    svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
    svg.setAttribute("preserveAspectRatio", "none");
    let path = "";
    for (let k = 0; k <= size; k++) path += `M${k} 0V${size}M0 ${k}H${size}`;
    svg.innerHTML = `<path class="halo" d="${path}"/><path class="line" d="${path}"/>`;
  }

  function makeCells(grid, size) {
    grid.dataset.size = size;
    grid.style.gridTemplateColumns = `repeat(${size}, 1fr)`;
    grid.style.gridTemplateRows = `repeat(${size}, 1fr)`;
    const cells = [];
    for (let i = 0; i < size * size; i++) {
      const cell = document.createElement("div");
      cell.dataset.cell = i;
      cells.push(cell);
    }
    grid.replaceChildren(...cells);
  }

  $("grid").addEventListener("click", (event) => {
    const cell = event.target.closest("[data-cell]");
    if (!cell) return;
    const i = Number(cell.dataset.cell);
    if (state.active && !state.active.has(i)) return;
    if (state.cells.has(i)) state.cells.delete(i); else state.cells.add(i);
    cell.classList.toggle("on", state.cells.has(i));
  });

  // -- polygon -----------------------------------------------------------------------------------
  function resetPolygon() { state.points = []; state.closed = false; drawPolygon(); }

  function drawPolygon() {
    const task = state.current, svg = $("poly");
    if (!task) return;
    svg.setAttribute("viewBox", `0 0 ${task.image_width} ${task.image_height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    const r = Math.max(1, task.image_width / 80);
    const pts = state.points.map((p) => p.join(",")).join(" ");
    // Each line twice: a dark halo under it, so it shows on any background.
    const halo = state.closed ? `<polygon points="${pts}" fill="none" stroke="#000" stroke-opacity=".7" stroke-width="${r}"/>`
      : `<polyline points="${pts}" fill="none" stroke="#000" stroke-opacity=".7" stroke-width="${r}"/>`;
    const shape = state.closed ? `<polygon points="${pts}" fill="rgba(0,200,83,.3)" stroke="#00e676" stroke-width="${r / 2}"/>`
      : `<polyline points="${pts}" fill="none" stroke="#ffd600" stroke-width="${r / 2}"/>`;
    svg.innerHTML = halo + shape + state.points.map(([x, y]) => `<circle cx="${x}" cy="${y}" r="${r}" fill="#ffd600" stroke="#000" stroke-width="${r / 3}"/>`).join("");
    $("poly-submit").disabled = !(state.closed && state.points.length >= 3);
  }

  $("poly").addEventListener("click", (event) => {
    const task = state.current;
    if (!task || state.closed) return;
    const box = $("poly").getBoundingClientRect();
    const x = Math.round(((event.clientX - box.left) / box.width) * task.image_width * 100) / 100;
    const y = Math.round(((event.clientY - box.top) / box.height) * task.image_height * 100) / 100;
    if (state.points.length >= 3) {
      const [fx, fy] = state.points[0];
      if (Math.hypot(fx - x, fy - y) < task.image_width / 30) { state.closed = true; drawPolygon(); return; }
    }
    state.points.push([x, y]);
    drawPolygon();
  });
  function polyUndo() { if (state.closed) state.closed = false; else state.points.pop(); drawPolygon(); }
  function polyClose() { if (state.points.length >= 3) { state.closed = true; drawPolygon(); } }
  function polySubmit() { if (state.closed && state.points.length >= 3) answer({ polygon: state.points }); }

  // -- clicks on the picture: extreme points, and a correction's clicks on where the outline is wrong --
  // Each click is a numbered marker, sent in the image's own pixels (through view_box).
  const EXTREME_POINTS = 4;
  const ENDS = ["top", "bottom", "left", "right"];  // the order the server expects (policies/precise.py in_order)
  const MAX_CLICKS = 10;  // the server's rules.MAX_CLICKS
  const MARKED = new Set(["extreme", "correct"]);  // the kinds answered by clicks on the picture

  function markLimit(task) { return task.kind === "extreme" ? EXTREME_POINTS : MAX_CLICKS; }

  function resetMarks() { state.marks = []; drawMarks(); }

  function drawMarks() {
    // Numbered rings where the worker clicked, placed in percent of the picture so they follow any resize.
    const task = state.current;
    if (!task) return;
    const [x0, y0, x1, y1] = task.view_box;
    $("marks").replaceChildren(...state.marks.map(([x, y], index) => {
      const mark = document.createElement("div");
      mark.className = "mark";
      mark.style.left = `${(100 * (x - x0)) / (x1 - x0)}%`;
      mark.style.top = `${(100 * (y - y0)) / (y1 - y0)}%`;
      const label = document.createElement("span");
      label.textContent = task.kind === "extreme" ? ENDS[index][0].toUpperCase() : index + 1;
      if (task.kind === "extreme") mark.title = ENDS[index];
      mark.append(label);
      return mark;
    }));
    if (task.kind === "extreme") countPoints(); else countClicks();
  }

  function countPoints() {
    const left = EXTREME_POINTS - state.marks.length;
    const placed = `${state.marks.length} of ${EXTREME_POINTS} points`;
    const next = ENDS[state.marks.length];
    $("extreme-count").textContent = left
      ? `${placed}: now click its ${next}most point`
      : `${placed}: submit, or undo one to move it`;
    $("extreme-submit").disabled = left !== 0;
    $("extreme-undo").disabled = state.marks.length === 0;
  }

  function countClicks() {
    // "Fits" says there is nothing to click: it waits until the clicks placed are taken back.
    const placed = state.marks.length;
    const clicks = `${placed} click${placed === 1 ? "" : "s"}`;
    $("correct-count").textContent = placed === 0 ? "No clicks yet."
      : placed < MAX_CLICKS ? `${clicks}: submit when every wrong place is clicked.`
      : `${clicks}, the most: submit, or undo one to move it.`;
    $("correct-submit").disabled = placed === 0;
    $("correct-undo").disabled = placed === 0;
    $("correct-fits").disabled = placed !== 0;
  }

  function imagePoint(task, event) {
    // The click in image pixels: the picture's content box (inside its border) shows task.view_box.
    const picture = $("main"), box = picture.getBoundingClientRect();
    const [x0, y0, x1, y1] = task.view_box;
    const u = (event.clientX - box.left - picture.clientLeft) / picture.clientWidth;
    const v = (event.clientY - box.top - picture.clientTop) / picture.clientHeight;
    const clamp = (value, low, high) => Math.min(high, Math.max(low, value));
    const round = (value) => Math.round(value * 100) / 100;
    return [round(clamp(x0 + u * (x1 - x0), 0, task.image_width)), round(clamp(y0 + v * (y1 - y0), 0, task.image_height))];
  }

  $("marks").addEventListener("click", (event) => {
    const task = state.current;
    if (!task || !MARKED.has(task.kind) || state.marks.length >= markLimit(task)) return;
    state.marks.push(imagePoint(task, event));
    drawMarks();
  });
  function marksUndo() { state.marks.pop(); drawMarks(); }
  function marksSubmit(event) { if (state.marks.length === EXTREME_POINTS) answer({ points: state.marks }, event); }
  function clicksSubmit(event) { if (state.marks.length > 0) answer({ clicks: state.marks }, event); }
  function fits(event) { if (state.marks.length === 0) answer({ clicks: [] }, event); }

  // -- pick: one picture per outline, the outline chosen by a click or its number --------------
  function showChoices(task) {
    const panels = task.pictures.map((picture, k) => {
      const panel = document.createElement("button");
      panel.type = "button";
      panel.className = "choice";
      panel.dataset.choice = k;
      panel.style.width = task.width + "px";
      panel.setAttribute("aria-label", `Outline ${k + 1}`);
      const frame = document.createElement("div");
      frame.className = "frame";
      picture.alt = `outline ${k + 1}`;
      frame.append(picture);
      const key = document.createElement("span");
      key.className = "key";
      key.innerHTML = `Outline ${k + 1} <kbd>${k + 1}</kbd>`;
      panel.append(frame, key);
      return panel;
    });
    $("choices").classList.toggle("column", task.layout.across === 1);
    $("choices").replaceChildren(...panels);
  }

  $("choices").addEventListener("click", (event) => {
    const panel = event.target.closest("[data-choice]");
    if (panel && state.current && state.current.kind === "pick") answer({ choice: Number(panel.dataset.choice) }, event);
  });

  // -- wiring ------------------------------------------------------------------------------------
  $("yes").addEventListener("click", () => answer("yes"));
  $("no").addEventListener("click", () => answer("no"));
  $("grid-submit").addEventListener("click", () => answer({ cells: [...state.cells].sort((a, b) => a - b) }));
  $("poly-undo").addEventListener("click", polyUndo);
  $("poly-close").addEventListener("click", polyClose);
  $("poly-submit").addEventListener("click", polySubmit);
  $("extreme-undo").addEventListener("click", marksUndo);
  $("extreme-none").addEventListener("click", (event) => answer({ not_here: true }, event));
  $("extreme-submit").addEventListener("click", marksSubmit);
  $("pick-none").addEventListener("click", (event) => answer({ choice: null }, event));
  $("correct-undo").addEventListener("click", marksUndo);
  $("correct-fits").addEventListener("click", fits);
  $("correct-submit").addEventListener("click", clicksSubmit);
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    if (!$("intro").hidden && key === "enter" && !$("start").hidden) { event.preventDefault(); start(); return; }
    const task = state.current;
    if (key === "u") { undo(); return; }
    if (!task) return;
    if ((task.kind === "verify" || task.kind === "patch") && (key === "y" || key === "n")) answer(key === "y" ? "yes" : "no", event);
    else if (task.kind === "grid" && key === "enter") { event.preventDefault(); answer({ cells: [...state.cells].sort((a, b) => a - b) }, event); }
    else if (task.kind === "polygon") {
      if (key === "z" || key === "backspace") polyUndo();
      else if (key === "c") polyClose();
      else if (key === "enter") { event.preventDefault(); polySubmit(); }
    } else if (task.kind === "extreme") {
      if (key === "z" || key === "backspace") marksUndo();
      else if (key === "enter") { event.preventDefault(); marksSubmit(event); }
    } else if (task.kind === "correct") {
      if (key === "z" || key === "backspace") marksUndo();
      else if (key === "f") fits(event);
      else if (key === "enter") { event.preventDefault(); clicksSubmit(event); }
    } else if (task.kind === "pick") {
      const k = Number(key) - 1;
      if (key === "n" || key === "0") answer({ choice: null }, event);
      else if (Number.isInteger(k) && k >= 0 && k < task.choice_urls.length) answer({ choice: k }, event);
    }
  });

  async function start() {
    $("start").hidden = true;
    const response = await api("POST", `/api/v1/projects/${encodeURIComponent(project)}/sessions`, arrival());
    if (await refused(response)) return;
    if (response.status !== 201) { showRefusal({ title: "Cannot start", detail: "The session could not be opened (" + response.status + "): reload this page to try again." }); return; }
    const session = await response.json();
    state.token = session.token; state.given = session.answers_given; state.perSession = session.answers_per_session;
    counter();
    show("task");  // laid out before the first picture is asked for: its width is measured there
    $("question").textContent = "Loading…";
    state.next = fetchTask([]);
    await advance();
  }

  window.addEventListener("resize", () => {
    const task = state.current;
    if (!task || $("task").hidden) return;
    if (task.kind !== "pick") { $("frame").style.width = pictureWidth(task) + "px"; return; }
    task.layout = choiceLayout(task);
    $("choices").classList.toggle("column", task.layout.across === 1);
    for (const panel of $("choices").children) panel.style.width = task.layout.width + "px";
  });

  // The instruction examples: the task screen's own grid, answered.
  for (const cells of document.querySelectorAll(".example .cells")) {
    const size = Number(cells.dataset.size);
    makeCells(cells, size);
    const on = new Set(cells.dataset.on.split(",").filter(Boolean).map(Number));
    for (const cell of cells.children) cell.classList.toggle("on", on.has(Number(cell.dataset.cell)));
    drawLines(cells.nextElementSibling, size);
  }

  if (body.dataset.refused) {
    state.finished = true;  // the page itself says why nothing can start (no invite, no such study)
  } else if (params.get("assignmentId") === "ASSIGNMENT_ID_NOT_AVAILABLE") {
    $("preview-note").hidden = false;
    $("task").remove();  // an MTurk preview shows the instructions only: nothing can be answered
  } else {
    $("start").hidden = false;
    $("start").addEventListener("click", start);
  }
})();
