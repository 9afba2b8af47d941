// easel's pages: the job form <-> YAML editor, the watch page's live events, datasets, generation.
// Plain browser JavaScript, no build step. The server does every check; this only shows what it says.
"use strict";

const easel = {};
window.easel = easel;

async function postJSON(url, body) {
  const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  return response.json();
}

async function postForm(url, data) {
  const response = await fetch(url, {method: "POST", body: data});
  return response.json();
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function formValues(form) {
  const values = {};
  for (const element of form.elements) {
    if (!element.name) continue;
    values[element.name] = element.type === "checkbox" ? element.checked : element.value;
  }
  return values;
}

// ---- new job: the form and the YAML are two views of one config ----
easel.jobEditor = function () {
  const form = document.getElementById("job-form");
  const yaml = document.getElementById("yaml");
  const gutter = document.getElementById("gutter");
  const validation = document.getElementById("validation");
  const parseState = document.getElementById("parse-state");
  let badLines = new Set();

  function drawGutter() {
    const count = yaml.value.split("\n").length;
    let text = "";
    for (let line = 1; line <= count; line++) text += (badLines.has(line) ? "▶" : "") + line + "\n";
    gutter.textContent = text;
    gutter.scrollTop = yaml.scrollTop;
  }

  function jumpTo(line) {
    const lines = yaml.value.split("\n");
    const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    yaml.focus();
    yaml.setSelectionRange(start, start + (lines[line - 1] || "").length);
    yaml.scrollTop = Math.max(0, (line - 5) * parseFloat(getComputedStyle(yaml).lineHeight));
  }

  function showCheck(result) {
    badLines = new Set((result.issues || []).map((issue) => issue.line).filter(Boolean));
    drawGutter();
    validation.className = "validation " + (result.ok ? "ok" : "bad");
    validation.replaceChildren();
    if (result.ok) { validation.textContent = "✓ valid (the CLI's check)"; return; }
    const pre = document.createElement("pre");
    pre.textContent = result.message;
    validation.append(pre);
    for (const issue of result.issues || []) {
      if (!issue.line) continue;
      const link = document.createElement("button");
      link.className = "link";
      link.textContent = `line ${issue.line}: ${issue.message}`;
      link.onclick = () => jumpTo(issue.line);
      validation.append(link);
    }
  }

  const validate = debounce(async () => showCheck(await postJSON("/api/validate", {yaml: yaml.value})), 250);

  const fromForm = debounce(async () => {
    const result = await postJSON("/api/form/to-yaml", {values: formValues(form), yaml: yaml.value});
    if (result.ok) { yaml.value = result.yaml; parseState.textContent = ""; drawGutter(); validate(); }
    else parseState.textContent = result.message;
  }, 200);

  const fromYaml = debounce(async () => {
    const result = await postJSON("/api/form/from-yaml", {yaml: yaml.value});
    if (!result.ok) { parseState.textContent = result.message; return; }
    parseState.textContent = "";
    for (const [key, value] of Object.entries(result.values)) {
      const element = form.elements[key];
      if (!element || element === document.activeElement) continue;
      if (element.type === "checkbox") element.checked = Boolean(value);
      else if (element.tagName === "SELECT" && ![...element.options].some((o) => o.value === String(value))) {
        element.add(new Option(String(value), String(value)));
        element.value = String(value);
      } else element.value = value;
    }
  }, 250);

  form.addEventListener("input", fromForm);
  form.addEventListener("change", fromForm);
  yaml.addEventListener("input", () => { drawGutter(); fromYaml(); validate(); });
  yaml.addEventListener("scroll", () => { gutter.scrollTop = yaml.scrollTop; });
  document.getElementById("queue-button").onclick = async () => {
    const state = document.getElementById("queue-state");
    state.textContent = "checking with the CLI (--dry-run)…";
    const result = await postJSON("/api/jobs", {yaml: yaml.value});
    if (result.ok) { state.textContent = "queued"; window.location = result.url; return; }
    state.textContent = "not queued";
    showCheck(result);
  };
  drawGutter();
  validate();
};

// ---- watch: server-sent events ----
function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return seconds.toFixed(0) + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function drawChart(svg, points) {
  const width = 600, height = 260, left = 50, bottom = 22, top = 8, right = 8;
  svg.replaceChildren();
  if (points.length < 2) return;
  const steps = points.map((p) => p[0]), losses = points.map((p) => p[1]);
  const low = Math.min(...losses), high = Math.max(...losses), span = (high - low) || 1;
  const first = steps[0], last = steps[steps.length - 1], range = (last - first) || 1;
  const x = (s) => left + (s - first) / range * (width - left - right);
  const y = (v) => top + (high - v) / span * (height - top - bottom);
  const ns = "http://www.w3.org/2000/svg";
  const add = (name, attrs, text) => {
    const node = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("rect", {x: left, y: top, width: width - left - right, height: height - top - bottom, class: "frame"});
  add("polyline", {points: points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), class: "raw"});
  let smooth = losses[0];
  const smoothed = points.map((p) => { smooth = 0.9 * smooth + 0.1 * p[1]; return `${x(p[0])},${y(smooth)}`; });
  add("polyline", {points: smoothed.join(" "), class: "smooth"});
  add("text", {x: 4, y: top + 10}, high.toPrecision(4));
  add("text", {x: 4, y: height - bottom}, low.toPrecision(4));
  add("text", {x: left, y: height - 6}, `step ${first}`);
  add("text", {x: width - right - 70, y: height - 6}, `step ${last}`);
}

easel.latencies = [];

easel.watch = function (jobId, prompts) {
  const promptCount = prompts.length;
  const $ = (id) => document.getElementById(id);
  const points = [];
  const source = new EventSource(`/api/jobs/${jobId}/events`);
  source.addEventListener("status", (event) => {
    const row = JSON.parse(event.data);
    $("status").textContent = row.status;
    $("status").className = "badge " + row.status;
    const active = row.status === "running" || row.status === "stopping";
    for (const id of ["save-now", "sample-now"]) if ($(id) && !$(id).title) $(id).disabled = row.status !== "running";
    $("stop").disabled = !(active || row.status === "queued") || row.status === "stopping";
    if ($("continue")) $("continue").hidden = active || row.status === "queued";
    $("message").hidden = !(row.waiting || row.message);
    $("message").textContent = row.waiting || row.message;
    $("message").className = "message " + row.status;
  });
  source.addEventListener("holder", (event) => {
    const holder = JSON.parse(event.data).holder;
    if ($("holder")) $("holder").textContent = holder ? `in use by ${holder}` : "not in use";
  });
  source.addEventListener("progress", (event) => {
    const data = JSON.parse(event.data);
    if (data.reset) points.length = 0;
    points.push(...data.rows);
    if (points.length > 4000) points.splice(0, points.length - 4000);
    $("step").textContent = data.step;
    $("total").textContent = data.total || "?";
    $("bar-fill").style.width = data.total ? `${Math.min(100, 100 * data.step / data.total)}%` : "0";
    $("speed").textContent = data.seconds_per_step ? data.seconds_per_step.toFixed(3) : "–";
    $("eta").textContent = formatSeconds(data.eta);
    if (points.length) $("loss").textContent = points[points.length - 1][1].toFixed(4);
    if (data.written && data.rows.length) easel.latencies.push({step: data.step, ms: Date.now() - data.written * 1000});
    window.easelLastStep = data.step;
    drawChart($("chart"), points);
  });
  source.addEventListener("log", (event) => {
    const log = $("log");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = JSON.parse(event.data).text;
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("samples", (event) => {
    const grid = JSON.parse(event.data);
    const body = $("samples").querySelector("tbody");
    body.replaceChildren();
    const steps = Object.keys(grid).map(Number).sort((a, b) => b - a);
    $("no-samples").hidden = steps.length > 0;
    for (const step of steps) {
      const row = body.insertRow();
      row.insertCell().textContent = step;
      for (let index = 0; index < Math.max(promptCount, 1); index++) {
        const cell = row.insertCell();
        const url = grid[step][index];
        if (!url) continue;
        const image = document.createElement("img");
        image.src = url;
        image.loading = "lazy";
        image.dataset.large = url;
        image.alt = `step ${step} · ${prompts[index] || ""}`;
        cell.append(image);
      }
    }
  });
  source.addEventListener("saves", (event) => {
    const list = $("saves");
    list.replaceChildren();
    for (const save of JSON.parse(event.data)) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.textContent = save.name;
      if (save.url) { link.href = save.url; link.download = save.name; }
      item.append(link, ` ${save.step === null ? "final" : "step " + save.step} · ${(save.size / 1024).toFixed(0)} KiB`);
      list.append(item);
    }
    if (!list.children.length) list.innerHTML = '<li class="empty">None yet.</li>';
  });
  source.addEventListener("end", () => source.close());
  for (const button of document.querySelectorAll("[data-action]")) {
    button.onclick = async () => {
      const result = await postJSON(`/api/jobs/${jobId}/${button.dataset.action}`, {});
      $("action-state").textContent = result.message || (result.ok ? `${button.textContent}: asked` : "refused");
    };
  }
};

// ---- datasets ----
easel.createFolder = function (form) {
  postForm("/api/datasets", new FormData(form)).then((result) => {
    if (result.ok) window.location = result.url;
    else document.getElementById("new-folder-state").textContent = result.message;
  });
  return false;
};

easel.trigger = function (form, name) {
  postForm(`/api/datasets/${name}/trigger`, new FormData(form)).then((result) => {
    document.getElementById("tool-state").textContent = result.ok ? `${result.changed} captions changed` : result.message;
    if (result.ok && result.changed) setTimeout(() => window.location.reload(), 600);
  });
  return false;
};

easel.datasetJob = function (form, name) {
  const state = document.getElementById("tool-state");
  state.textContent = "checking with the CLI (--dry-run)…";
  postForm(`/api/datasets/${name}/job`, new FormData(form)).then((result) => {
    if (result.ok) window.location = result.url;
    else state.textContent = result.message;
  });
  return false;
};

easel.dataset = function (name) {
  const drop = document.getElementById("drop");
  const state = document.getElementById("tool-state");
  async function send(files) {
    const data = new FormData();
    for (const file of files) data.append("files", file, file.name);
    state.textContent = `uploading ${files.length} file(s)…`;
    const result = await postForm(`/api/datasets/${name}/upload`, data);
    const refused = (result.refused || []).map((r) => r.message).join(" ");
    state.textContent = `${(result.stored || []).length} stored. ${refused}`;
    state.className = refused ? "hint bad" : "hint";
    if ((result.stored || []).length && !refused) setTimeout(() => window.location.reload(), 400);
  }
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); send(event.dataTransfer.files); });
  document.getElementById("file-input").addEventListener("change", (event) => send(event.target.files));
  document.body.addEventListener("htmx:afterRequest", (event) => {
    const area = event.detail.elt;
    if (!area.classList.contains("caption")) return;
    const note = area.parentElement.querySelector(".saved");
    const ok = event.detail.successful;
    note.textContent = ok ? "saved" : JSON.parse(event.detail.xhr.responseText).message;
    note.className = "saved hint" + (ok ? "" : " bad");
  });
};

// ---- generate ----
easel.generate = function () {
  const form = document.getElementById("gen-form");
  const samplerSelect = form.elements.sampler;
  function fillSamplers() {
    samplerSelect.replaceChildren(...(window.easelSamplers[form.elements.arch.value] || []).map((s) => new Option(s, s)));
  }
  form.elements.arch.addEventListener("change", fillSamplers);
  fillSamplers();
  for (const range of form.querySelectorAll("input[type=range]")) {
    const show = () => { range.nextElementSibling.textContent = Number(range.value).toFixed(2); };
    range.addEventListener("input", show);
    show();
  }
  document.getElementById("gen-button").onclick = async () => {
    const data = new FormData(form);
    for (const lora of form.querySelectorAll(".lora")) {
      if (lora.querySelector(".lora-on").checked) {
        const slider = lora.querySelector(".lora-weight");
        data.append("lora:" + slider.dataset.lora, slider.value);
      }
    }
    const state = document.getElementById("gen-state");
    const result = document.getElementById("result");
    state.textContent = "generating…";
    const answer = await postForm("/api/generate", data);
    result.replaceChildren();
    if (!answer.ok) {
      state.textContent = "failed";
      const pre = document.createElement("pre");
      pre.className = "validation bad";
      pre.textContent = answer.message;
      result.append(pre);
      return;
    }
    state.textContent = `done in ${answer.seconds} s`;
    for (const image of answer.images) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = image.url;
      img.dataset.large = image.url;
      img.alt = image.name;
      const caption = document.createElement("pre");
      caption.className = "parameters";
      caption.textContent = image.parameters;
      const link = document.createElement("a");
      link.href = image.url;
      link.download = image.name;
      link.textContent = image.name;
      figure.append(img, link, caption);
      result.append(figure);
    }
  };
};

// ---- click any image with data-large to enlarge it ----
document.addEventListener("click", (event) => {
  const box = document.getElementById("lightbox");
  if (event.target.dataset && event.target.dataset.large) {
    box.querySelector("img").src = event.target.dataset.large;
    box.querySelector("p").textContent = event.target.alt || "";
    box.hidden = false;
  } else if (!box.hidden && box.contains(event.target)) {
    box.hidden = true;
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") document.getElementById("lightbox").hidden = true;
});
