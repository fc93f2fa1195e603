// sarcolor page: upload -> job -> poll -> compare (swipe / side by side, zoom and pan) -> download.
// No framework and no build step. Text from the server is only ever set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
let limits = { max_upload_mb: Infinity, max_pixels: Infinity };
let busy = false;
let pollTimer = null;

// ------------------------------------------------------------------ model info
// names: the renderings in the analyst's words, from the server (/api/model's render_names)
function showRenders(renders, chosen, names) {
  const sel = $("render");
  sel.replaceChildren();
  for (const name of renders) {
    const opt = document.createElement("option");
    opt.value = name;
    opt.textContent = names[name] || name;
    opt.selected = name === chosen;
    sel.append(opt);
  }
  $("render-field").hidden = renders.length === 0;  // a model without renderings has one colour balance
}

async function loadModel() {
  try {
    const r = await fetch("/api/model");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const m = await r.json();
    limits = m.limits;
    $("model-name").textContent = m.name;
    const meta = $("model-meta");
    meta.replaceChildren();
    const rows = [["Name", m.name], ["Architecture", m.arch], ["Parameters", m.parameters.toLocaleString()],
                  ["Polarisation", m.polarisation], ["Runs on", m.device],
                  ["Tile", `${m.config.tile} px, overlap ${m.config.overlap} px`]];
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = String(v);
      meta.append(dt, dd);
    }
    showRenders(m.config.renders || [], m.config.render, m.render_names || {});
    $("model-card").textContent = m.card && m.card.trim() ? m.card : "(this model has no card)";
    $("limits").textContent =
      `Up to ${Math.round(limits.max_upload_mb)} MB and ${(limits.max_pixels / 1e6).toFixed(0)} megapixels.`;
  } catch (e) {
    $("model-name").textContent = "unavailable";
    showError(`Could not reach the server (${e.message}).`);
  }
}

// ------------------------------------------------------------------ status, errors, progress
function setStatus(text, percent) {
  $("status").textContent = text;
  const p = $("progress");
  if (percent === null) p.removeAttribute("value");  // indeterminate
  else p.value = Math.max(0, Math.min(100, percent));
}

function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setDownloads(job) {
  const png = $("dl-png"), tif = $("dl-tif");
  for (const a of [png, tif]) {
    a.removeAttribute("href");
    a.setAttribute("aria-disabled", "true");
    a.tabIndex = -1;
  }
  $("georef-note").textContent = "";
  if (!job) return;
  png.href = job.links.png;
  tif.href = job.links.tif;
  for (const a of [png, tif]) {
    a.setAttribute("aria-disabled", "false");
    a.tabIndex = 0;
  }
  tif.textContent = job.georeferenced ? "Download GeoTIFF" : "Download TIFF";
  $("georef-note").textContent = job.georeferenced
    ? "The GeoTIFF keeps the input's georeferencing."
    : "The input had no georeferencing, so the TIFF has none either.";
}

// ------------------------------------------------------------------ upload and job polling
function upload(file) {
  if (busy) return;
  clearError();
  setDownloads(null);
  if (file.size > limits.max_upload_mb * 1048576) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB, over the ${Math.round(limits.max_upload_mb)} MB limit.`);
    return;
  }
  busy = true;
  $("views").dataset.pending = "true";
  const form = new FormData();
  form.append("file", file, file.name);
  const scale = encodeURIComponent($("scale").value);
  const look = encodeURIComponent(document.querySelector('input[name="look"]:checked').value);
  const render = $("render-field").hidden ? "" : `&render=${encodeURIComponent($("render").value)}`;
  const xhr = new XMLHttpRequest();  // fetch() cannot report upload progress
  xhr.open("POST", `/api/colorize?async=1&scale=${scale}&look=${look}${render}`);
  xhr.responseType = "json";
  xhr.upload.onprogress = (ev) => {
    if (ev.lengthComputable) {
      const pct = (100 * ev.loaded) / ev.total;
      setStatus(`Uploading ${file.name}: ${pct.toFixed(0)}%`, pct);
    } else {
      setStatus(`Uploading ${file.name}…`, null);
    }
  };
  xhr.onerror = () => fail("The upload failed: the server could not be reached.");
  xhr.onload = () => {
    const body = xhr.response || {};
    if (xhr.status === 202 || xhr.status === 200) {
      showInput(body);
      poll(body.id);
    } else {
      fail(body.detail || `The server answered ${xhr.status}.`);
    }
  };
  setStatus(`Uploading ${file.name}…`, 0);
  xhr.send(form);
}

function fail(text) {
  busy = false;
  clearTimeout(pollTimer);
  setStatus("Stopped.", 0);
  showError(text);
  // Do not leave the SAR of a failed job next to the result of an earlier one.
  const views = $("views");
  views.dataset.empty = "true";
  views.dataset.pending = "false";
  for (const id of ["sar-img", "result-img", "result-side"]) $(id).removeAttribute("src");
  natW = natH = 0;
}

async function poll(id) {
  let job;
  try {
    const r = await fetch(`/api/jobs/${encodeURIComponent(id)}`);
    job = await r.json();
    if (!r.ok) return fail(job.detail || `The server answered ${r.status}.`);
  } catch (e) {
    return fail(`Lost contact with the server (${e.message}).`);
  }
  if (job.status === "queued") {
    const ahead = job.queue_position;
    setStatus(ahead > 0 ? `Waiting: ${ahead} job${ahead > 1 ? "s" : ""} ahead.` : "Waiting to start…", 0);
  } else if (job.status === "running") {
    const pct = 100 * job.progress;
    setStatus(`Colorizing ${job.width} × ${job.height} px: ${pct.toFixed(0)}%`, pct);
  } else if (job.status === "failed") {
    return fail(job.error || "Colorization failed.");
  } else if (job.status === "done") {
    return showResult(job);
  }
  pollTimer = setTimeout(() => poll(id), POLL_MS);
}

function loadImage(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${src}`));
    img.src = src;
  });
}

let natW = 0, natH = 0;

async function showInput(job) {
  natW = job.width;
  natH = job.height;
  try {
    const img = await loadImage($("sar-img"), job.links.input_preview);
    // Size the stage by the preview (large scenes are shown shrunk); both images fill the same box.
    natW = img.naturalWidth;
    natH = img.naturalHeight;
    const views = $("views");
    views.dataset.empty = "false";
    for (const s of [$("stage-main"), $("stage-side")]) {
      s.style.width = `${natW}px`;
      s.style.height = `${natH}px`;
    }
    fit();
  } catch (e) {
    // The SAR preview is a convenience; the job goes on.
  }
}

async function showResult(job) {
  try {
    await Promise.all([loadImage($("result-img"), job.links.preview),
                       loadImage($("result-side"), job.links.preview)]);
  } catch (e) {
    return fail(`The result could not be displayed (${e.message}).`);
  }
  $("views").dataset.pending = "false";
  $("views").dataset.empty = "false";
  busy = false;
  setStatus(`Done: ${job.width} × ${job.height} px colorized with ${job.model}.`, 100);
  setDownloads(job);
  applyView();
}

// ------------------------------------------------------------------ file picker and drag-and-drop
function setupInput() {
  const input = $("file-input"), zone = $("drop-zone");
  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
    input.value = "";  // choosing the same file again still fires "change"
  });
  for (const ev of ["dragenter", "dragover"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("dragover"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("dragover"); });
  }
  zone.addEventListener("drop", (e) => {
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) upload(files[0]);
  });
  // A file dropped next to the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// ------------------------------------------------------------------ zoom, pan, swipe
const view = { s: 1, tx: 0, ty: 0 };
const MIN_S = 0.02, MAX_S = 32;

function vpSize() {
  const vp = $("vp-main");
  return { w: vp.clientWidth, h: vp.clientHeight };
}

function applyView() {
  const t = `translate(${view.tx}px, ${view.ty}px) scale(${view.s})`;
  for (const s of [$("stage-main"), $("stage-side")]) {
    s.style.transform = t;
    s.classList.toggle("pixelated", view.s >= 2);
  }
  $("zoom-level").textContent = `${Math.round(view.s * 100)}%`;
  // The swipe line is a fixed place on screen; the result is clipped to the right of it, in image pixels.
  const pct = Number($("swipe").value);
  const x = (vpSize().w * pct) / 100;
  $("swipe-line").style.left = `${x}px`;
  const clip = Math.max(0, (x - view.tx) / view.s);
  $("result-img").style.clipPath = `inset(0 0 0 ${clip}px)`;
}

function fit() {
  if (!natW || !natH) return;
  const { w, h } = vpSize();
  view.s = Math.min(w / natW, h / natH);
  view.tx = (w - natW * view.s) / 2;
  view.ty = (h - natH * view.s) / 2;
  applyView();
}

function zoomAt(factor, cx, cy) {
  const s = Math.min(MAX_S, Math.max(MIN_S, view.s * factor));
  view.tx = cx - ((cx - view.tx) * s) / view.s;
  view.ty = cy - ((cy - view.ty) * s) / view.s;
  view.s = s;
  applyView();
}

function zoomCenter(factor) {
  const { w, h } = vpSize();
  zoomAt(factor, w / 2, h / 2);
}

function actualPixels() {
  const { w, h } = vpSize();
  zoomAt(1 / view.s, w / 2, h / 2);
}

function setupViewer() {
  for (const vp of [$("vp-main"), $("vp-side")]) {
    vp.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = vp.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    let drag = null;
    vp.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY };
      vp.setPointerCapture(e.pointerId);
      vp.classList.add("dragging");
    });
    vp.addEventListener("pointermove", (e) => {
      if (!drag) return;
      view.tx += e.clientX - drag.x;
      view.ty += e.clientY - drag.y;
      drag = { x: e.clientX, y: e.clientY };
      applyView();
    });
    const end = () => { drag = null; vp.classList.remove("dragging"); };
    vp.addEventListener("pointerup", end);
    vp.addEventListener("pointercancel", end);
    vp.addEventListener("dblclick", fit);
    vp.addEventListener("keydown", (e) => {
      const step = e.shiftKey ? 200 : 50;
      const keys = {
        ArrowLeft: () => { view.tx += step; applyView(); },
        ArrowRight: () => { view.tx -= step; applyView(); },
        ArrowUp: () => { view.ty += step; applyView(); },
        ArrowDown: () => { view.ty -= step; applyView(); },
        "+": () => zoomCenter(1.25), "=": () => zoomCenter(1.25), "-": () => zoomCenter(0.8),
        "0": fit, "1": actualPixels,
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }
  $("zoom-in").addEventListener("click", () => zoomCenter(1.25));
  $("zoom-out").addEventListener("click", () => zoomCenter(0.8));
  $("zoom-fit").addEventListener("click", fit);
  $("zoom-1").addEventListener("click", actualPixels);
  const swipe = $("swipe");
  swipe.addEventListener("input", () => {
    swipe.setAttribute("aria-valuetext", `${swipe.value}% SAR`);
    applyView();
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      $("views").dataset.mode = radio.value;
      requestAnimationFrame(fit);  // the viewports changed width
    });
  }
  window.addEventListener("resize", () => requestAnimationFrame(fit));
}

document.addEventListener("DOMContentLoaded", () => {
  setupInput();
  setupViewer();
  setDownloads(null);
  loadModel();
});
