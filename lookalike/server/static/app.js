// lookalike web page: pick or drop an image, see the most similar indexed images,
// click one to search with it. Plain JS, no build step, talks only to this server.
"use strict";

(() => {
  const TOKEN_KEY = "lookalike.token";
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), file: $("file"), queryImage: $("query-image"), dropText: $("drop-text"),
    caption: $("query-caption"), k: $("k"), status: $("status"), results: $("results"),
    info: $("index-info"), tokenForm: $("token-form"), tokenInput: $("token-input"),
  };
  // Where the server's own message is not what a person on this page needs to read.
  const MESSAGES = {
    unauthorized: "This server needs a token: enter it below.",
    network: "The server cannot be reached.",
  };
  let objectUrls = [];
  let queryUrl = null;
  let generation = 0; // drops answers to searches that were overtaken by a newer one
  let retry = null; // what to do again once a token was entered

  // -- token: taken once from #token=... (or ?token=...), then kept in sessionStorage --
  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const hash = new URLSearchParams(url.hash.slice(1));
    let token = null;
    if (hash.has("token")) { token = hash.get("token"); hash.delete("token"); }
    if (url.searchParams.has("token")) { token = url.searchParams.get("token"); url.searchParams.delete("token"); }
    if (token !== null) {
      sessionStorage.setItem(TOKEN_KEY, token);
      const rest = hash.toString();
      history.replaceState(null, "", url.pathname + url.search + (rest ? "#" + rest : ""));
    }
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token()) headers.set("Authorization", "Bearer " + token());
    let res;
    try {
      res = await fetch(path, { ...options, headers });
    } catch (e) {
      throw new ApiError(0, "network", "The server cannot be reached (" + e.message + ").");
    }
    if (!res.ok) {
      let code = "http_" + res.status, message = res.statusText || "request failed";
      try {
        const body = await res.json();
        if (body && body.error) { code = body.error.code; message = body.error.message; }
      } catch (e) { /* not JSON */ }
      throw new ApiError(res.status, code, message);
    }
    return res;
  }

  function setStatus(text, isError = false) {
    els.status.textContent = text;
    els.status.classList.toggle("error", isError);
  }

  function showError(err, again) {
    if (err.status === 401) {
      retry = again;
      els.tokenForm.hidden = false;
      els.tokenInput.focus();
    }
    const text = MESSAGES[err.code] || err.message;
    setStatus(text.charAt(0).toUpperCase() + text.slice(1) + " [" + err.code + "]", true);
  }

  // -- images: plain URLs without a token; with one, fetched with the header as blobs --
  function releaseUrls() {
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
    objectUrls = [];
  }

  async function loadImage(img, path) {
    if (!token()) {
      img.src = path;
      return;
    }
    try {
      const blob = await (await api(path)).blob();
      const u = URL.createObjectURL(blob);
      objectUrls.push(u);
      img.src = u;
    } catch (e) {
      img.alt = "thumbnail unavailable (" + e.code + ")";
    }
  }

  const basename = (p) => p.split(/[\\/]/).pop();
  const thumbUrl = (id, size = 256) => "api/files/" + id + "/thumbnail?size=" + size;

  function showQuery(src, caption) {
    if (queryUrl) { URL.revokeObjectURL(queryUrl); queryUrl = null; }
    els.queryImage.hidden = false;
    els.dropText.hidden = true;
    if (src instanceof Blob) {
      queryUrl = URL.createObjectURL(src);
      els.queryImage.src = queryUrl;
    } else {
      loadImage(els.queryImage, src);
    }
    els.caption.textContent = caption;
  }

  function render(data, selfId) {
    releaseUrls();
    els.results.replaceChildren();
    const max = Math.max(...data.hits.map((h) => h.score), 1e-9);
    for (const hit of data.hits) {
      const card = document.createElement("button");
      card.type = "button";
      card.className = "hit" + (hit.id === selfId ? " self" : "");
      card.dataset.id = hit.id;
      card.dataset.rank = hit.rank;
      card.dataset.path = hit.path;
      card.dataset.score = hit.score;
      card.title = hit.path + "\nscore " + hit.score.toFixed(4) + "\nclick to search with this image";

      const box = document.createElement("div");
      box.className = "thumb";
      const img = document.createElement("img");
      img.alt = basename(hit.path);
      img.loading = "lazy";
      img.decoding = "async";
      box.append(img);

      const meta = document.createElement("div");
      meta.className = "meta";
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = "#" + hit.rank;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = hit.score.toFixed(3);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = basename(hit.path);
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = Math.max(0, Math.min(1, hit.score / max)) * 100 + "%";
      bar.append(fill);
      meta.append(rank, score, name, bar);

      card.append(box, meta);
      card.addEventListener("click", () => searchId(hit.id, hit.path));
      els.results.append(card);
      loadImage(img, thumbUrl(hit.id));
    }
    const n = data.hits.length;
    setStatus(n ? n + " hit" + (n === 1 ? "" : "s") + " in " + Math.round(data.took_ms) + " ms"
                : "The index is empty: no hits.");
  }

  // -- searches --
  async function searchFile(file) {
    if (!file) return;
    const mine = ++generation;
    showQuery(file, file.name + " (" + Math.round(file.size / 1024) + " KB)");
    setStatus("Searching\u2026");
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      const res = await api("api/search?k=" + els.k.value, { method: "POST", body: form });
      const data = await res.json();
      if (mine !== generation) return;
      els.caption.textContent = file.name + " \u2014 " + data.query.width + "\u00d7" + data.query.height;
      render(data, null);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    } catch (e) {
      if (mine === generation) { els.results.replaceChildren(); showError(e, () => searchFile(file)); }
    }
  }

  async function searchId(id, path) {
    const mine = ++generation;
    showQuery(thumbUrl(id, 512), path || "file " + id);
    setStatus("Searching\u2026");
    try {
      const res = await api("api/search/" + encodeURIComponent(id) + "?k=" + els.k.value);
      const data = await res.json();
      if (mine !== generation) return;
      els.caption.textContent = data.query.path;
      render(data, id);
      const want = "#id=" + id;
      if (window.location.hash !== want) history.pushState({ id }, "", want);
      window.scrollTo({ top: 0, behavior: "smooth" });
    } catch (e) {
      if (mine === generation) { els.results.replaceChildren(); showError(e, () => searchId(id, path)); }
    }
  }

  let lastFile = null;
  function rerun() {
    const id = idFromHash();
    if (id) searchId(id);
    else if (lastFile) searchFile(lastFile);
  }

  function idFromHash() {
    const v = new URLSearchParams(window.location.hash.slice(1)).get("id");
    return v && /^\d+$/.test(v) ? Number(v) : null;
  }

  async function loadInfo() {
    try {
      const info = await (await api("api/info")).json();
      const ex = info.manifest.extractor || {};
      els.info.textContent = info.files + " images \u00b7 extractor " + (ex.name || "?") +
        " \u00b7 " + info.path;
      els.info.title = "roots: " + info.roots.join(", ");
    } catch (e) {
      els.info.textContent = "index info unavailable (" + e.code + ")";
      if (e.status === 401) showError(e, loadInfo);
    }
  }

  // -- wiring --
  els.queryImage.addEventListener("error", () => {  // a file the browser cannot show either
    els.queryImage.hidden = true;
    els.dropText.hidden = false;
  });
  function pick(file) {
    if (!file) return;
    lastFile = file;
    searchFile(file);
  }

  els.file.addEventListener("change", () => { pick(els.file.files[0]); els.file.value = ""; });
  ["dragenter", "dragover"].forEach((t) => els.drop.addEventListener(t, (e) => {
    e.preventDefault();
    els.drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => els.drop.addEventListener(t, () => els.drop.classList.remove("over")));
  // Dropping anywhere on the page searches (instead of the browser opening the file).
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    pick(file);
  });
  window.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.files : [])][0];
    if (item) pick(item);
  });
  els.k.addEventListener("change", rerun);
  window.addEventListener("popstate", () => { const id = idFromHash(); if (id) searchId(id); });
  els.tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, els.tokenInput.value.trim());
    els.tokenInput.value = "";
    els.tokenForm.hidden = true;
    setStatus("");
    loadInfo();
    const again = retry;
    retry = null;
    if (again) again();
  });

  takeTokenFromUrl();
  loadInfo();
  const start = idFromHash();
  if (start) searchId(start);
})();
