// lookalike web page: pick or drop an image, see the most similar indexed images,
// click one to search with it; or (#duplicates) see groups of near-duplicates with
// the suggested keeper. Plain JS, no build step, talks only to this server.
"use strict";

(() => {
  const TOKEN_KEY = "lookalike.token";
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), file: $("file"), queryImage: $("query-image"), dropText: $("drop-text"),
    caption: $("query-caption"), k: $("k"), verify: $("verify"), status: $("status"), results: $("results"),
    info: $("index-info"), tokenForm: $("token-form"), tokenInput: $("token-input"),
    searchView: $("search-view"), dupView: $("dup-view"), tabs: [...document.querySelectorAll(".tab")],
    dupForm: $("dup-form"), dupThreshold: $("dup-threshold"), dupFind: $("dup-find"),
    dupStatus: $("dup-status"), dupGroups: $("dup-groups"), dupMore: $("dup-more"),
    dupLevel: $("dup-level"), dupTrash: $("dup-trash"), dupPicked: $("dup-picked"), dupDone: $("dup-done"),
    dupUndo: $("dup-undo"),
  };
  // Where the server's own message is not what a person on this page needs to read.
  const MESSAGES = {
    unauthorized: "This server needs a token: enter it below.",
    network: "The server cannot be reached.",
  };
  const objectUrls = []; // blob: URLs of the search view's images (with a token)
  const dupUrls = []; // ... and of the duplicates view's
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
      const rest = hash.toString().replace(/=(&|$)/g, "$1"); // "#duplicates", not "#duplicates="
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

  function setStatus(text, isError = false, el = els.status) {
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function showError(err, again, el = els.status) {
    if (err.status === 401) {
      retry = again;
      els.tokenForm.hidden = false;
      els.tokenInput.focus();
    }
    const text = MESSAGES[err.code] || err.message;
    setStatus(text.charAt(0).toUpperCase() + text.slice(1) + " [" + err.code + "]", true, el);
  }

  // -- images: plain URLs without a token; with one, fetched with the header as blobs --
  function releaseUrls(pool = objectUrls) {
    pool.splice(0).forEach((u) => URL.revokeObjectURL(u));
  }

  async function loadImage(img, path, pool = objectUrls) {
    if (!token()) {
      img.src = path;
      return;
    }
    try {
      const blob = await (await api(path)).blob();
      const u = URL.createObjectURL(blob);
      pool.push(u);
      img.src = u;
    } catch (e) {
      img.alt = "thumbnail unavailable (" + e.code + ")";
    }
  }

  const basename = (p) => p.split(/[\\/]/).pop();
  const thumbUrl = (id, size = 256) => "api/files/" + id + "/thumbnail?size=" + size;
  const searchParams = () => "?k=" + els.k.value + (els.verify.checked ? "&verify=true" : "");
  const SVG = "http://www.w3.org/2000/svg";

  // The query's outline as found in a verified hit, drawn over its thumbnail. The region is in the
  // hit's full-size pixels: an SVG with that viewBox scales it as object-fit: contain scales the image.
  async function drawRegion(box, hit) {
    let file;
    try {
      file = await (await api("api/files/" + hit.id)).json();
    } catch (e) {
      return; // the outline is an extra: the card is complete without it
    }
    if (!file.width || !file.height) return;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "region");
    svg.setAttribute("viewBox", "0 0 " + file.width + " " + file.height);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    svg.setAttribute("aria-hidden", "true");
    const outline = document.createElementNS(SVG, "polygon");
    outline.setAttribute("points", hit.region.map(([x, y]) => x + "," + y).join(" "));
    outline.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(outline);
    box.append(svg);
  }

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
      const verified = hit.inliers != null;
      if (verified) {
        card.dataset.inliers = hit.inliers;
        if (hit.inliers > 0) card.classList.add("verified");
      }
      const inlierText = !verified ? "" : hit.inliers > 0 ? hit.inliers + " inliers" : "no geometric match";
      card.title = hit.path + "\nscore " + hit.score.toFixed(4) + (verified ? "\n" + inlierText : "") +
        "\nclick to search with this image";

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
      meta.append(rank, score, name);
      if (verified) {
        const inliers = document.createElement("span");
        inliers.className = "inliers";
        inliers.textContent = inlierText;
        meta.append(inliers);
      }
      meta.append(bar);

      card.append(box, meta);
      card.addEventListener("click", () => searchId(hit.id, hit.path));
      els.results.append(card);
      loadImage(img, thumbUrl(hit.id));
      if (hit.region) drawRegion(box, hit);
    }
    const n = data.hits.length;
    const how = data.verified ? " (copy detection: best " + data.candidates + " candidates verified)" : "";
    setStatus(n ? n + " hit" + (n === 1 ? "" : "s") + " in " + Math.round(data.took_ms) + " ms" + how
                : "The index is empty: no hits.");
  }

  // -- searches --
  async function searchFile(file) {
    if (!file) return;
    const fromDuplicates = view === "duplicates";
    showView("search");
    const mine = ++generation;
    showQuery(file, file.name + " (" + Math.round(file.size / 1024) + " KB)");
    setStatus("Searching\u2026");
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      const res = await api("api/search" + searchParams(), { method: "POST", body: form });
      const data = await res.json();
      if (mine !== generation) return;
      els.caption.textContent = file.name + " \u2014 " + data.query.width + "\u00d7" + data.query.height;
      render(data, null);
      const plain = window.location.pathname + window.location.search;
      if (fromDuplicates) history.pushState(null, "", plain); // back returns to the duplicates
      else history.replaceState(null, "", plain);
    } catch (e) {
      if (mine === generation) { els.results.replaceChildren(); showError(e, () => searchFile(file)); }
    }
  }

  async function searchId(id, path) {
    showView("search");
    const mine = ++generation;
    showQuery(thumbUrl(id, 512), path || "file " + id);
    setStatus("Searching\u2026");
    try {
      const res = await api("api/search/" + encodeURIComponent(id) + searchParams());
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

  const hashParams = () => new URLSearchParams(window.location.hash.slice(1));

  function idFromHash() {
    const v = new URLSearchParams(window.location.hash.slice(1)).get("id");
    return v && /^\d+$/.test(v) ? Number(v) : null;
  }

  // -- views: #duplicates shows the duplicates view, anything else the search view --
  let view = "search";

  const viewFromHash = () => (hashParams().has("duplicates") ? "duplicates" : "search");

  function showView(v) {
    view = v;
    els.searchView.hidden = v !== "search";
    els.dupView.hidden = v !== "duplicates";
    for (const tab of els.tabs) {
      const on = tab.dataset.view === v;
      tab.classList.toggle("active", on);
      if (on) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    document.title = v === "duplicates" ? "lookalike \u2014 duplicates" : "lookalike";
  }

  function dupHash() {
    const t = els.dupThreshold.value.trim();
    const level = els.dupLevel.value;
    return "#duplicates" + (level !== "near" ? "&level=" + encodeURIComponent(level) : "") +
      (t ? "&threshold=" + encodeURIComponent(t) : "");
  }

  // Show the view the URL names, and load what it needs (the back button lands here too).
  function route() {
    if (viewFromHash() === "duplicates") {
      const t = hashParams().get("threshold");
      els.dupThreshold.value = t !== null && t.trim() !== "" && isFinite(Number(t)) ? t.trim() : "";
      const level = hashParams().get("level");
      els.dupLevel.value = ["exact", "near", "edited"].includes(level) ? level : "near";
      showView("duplicates");
      loadDuplicates(false);
    } else {
      showView("search");
      const id = idFromHash();
      if (id) searchId(id);
    }
  }

  // -- the duplicates view --
  const DUP_PAGE = 100; // groups drawn at once; "Show more groups" draws the next ones
  let dupGeneration = 0;
  let dupLoaded = null; // the level and threshold (as typed) of the groups on screen
  let dupData = null;
  let dupShown = 0;

  const fmtSize = (n) => n == null ? "? KB" : n < 1024 * 1024 ? Math.max(1, Math.round(n / 1024)) + " KB"
    : (n / (1024 * 1024)).toFixed(1) + " MB";
  const tail = (p) => p.split(/[\\/]/).slice(-2).join("/");

  // Thumbnails load as they come into view; with a token they are fetched (with the header) only then.
  const pendingThumbs = new WeakMap();
  const thumbObserver = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      thumbObserver.unobserve(e.target);
      const load = pendingThumbs.get(e.target);
      pendingThumbs.delete(e.target);
      if (load) load();
    }
  }, { rootMargin: "600px" }) : null;

  function lazyImage(img, path) {
    if (!token() || !thumbObserver) {
      img.loading = "lazy";
      loadImage(img, path, dupUrls);
      return;
    }
    pendingThumbs.set(img, () => loadImage(img, path, dupUrls));
    thumbObserver.observe(img);
  }

  async function loadDuplicates(force) {
    const typed = els.dupThreshold.value.trim();
    const asked = els.dupLevel.value + " " + typed;
    if (!force && dupLoaded === asked) return; // already on screen
    const mine = ++dupGeneration;
    setStatus("Looking for duplicates\u2026", false, els.dupStatus);
    els.dupFind.disabled = true;
    try {
      const q = "?level=" + encodeURIComponent(els.dupLevel.value) +
        (typed === "" ? "" : "&threshold=" + encodeURIComponent(typed));
      const data = await (await api("api/duplicates" + q)).json();
      if (mine !== dupGeneration) return;
      dupLoaded = asked;
      renderDuplicates(data, typed === "");
    } catch (e) {
      if (mine !== dupGeneration) return;
      dupLoaded = null;
      if (thumbObserver) thumbObserver.disconnect();
      releaseUrls(dupUrls);
      els.dupGroups.replaceChildren();
      els.dupMore.hidden = true;
      showError(e, () => loadDuplicates(true), els.dupStatus);
    } finally {
      if (mine === dupGeneration) els.dupFind.disabled = false;
    }
  }

  function renderDuplicates(data, isDefault) {
    if (thumbObserver) thumbObserver.disconnect();
    releaseUrls(dupUrls);
    els.dupGroups.replaceChildren();
    dupData = data;
    dupShown = 0;
    const n = data.groups.length;
    const files = data.groups.reduce((sum, g) => sum + g.members.length, 0);
    const thr = "level " + data.level +
      (data.threshold === null || data.threshold <= -1 ? "" : ", threshold " + data.threshold.toFixed(3)) +
      (isDefault ? " (server default)" : "");
    setStatus(n ? n + " group" + (n === 1 ? "" : "s") + " of duplicates, " + files + " files, " +
                  fmtSize(data.duplicate_bytes) + " in files that are not keepers \u00b7 " + thr +
                  " \u00b7 " + Math.round(data.took_ms) + " ms"
                : "No duplicates at " + thr + ".", false, els.dupStatus);
    renderMoreGroups();
    updatePicked();
  }

  function renderMoreGroups() {
    const groups = dupData.groups;
    const end = Math.min(groups.length, dupShown + DUP_PAGE);
    for (let i = dupShown; i < end; i++) els.dupGroups.append(groupElement(groups[i], i + 1));
    dupShown = end;
    els.dupMore.hidden = dupShown >= groups.length;
    if (!els.dupMore.hidden) els.dupMore.textContent = "Show more groups (" + (groups.length - dupShown) + " left)";
  }

  function groupElement(group, number) {
    const section = document.createElement("section");
    section.className = "dup-group";
    section.dataset.keeper = group.keeper;
    const head = document.createElement("h2");
    head.textContent = "Group " + number + " ";
    const count = document.createElement("span");
    count.className = "muted";
    count.textContent = "\u00b7 " + group.members.length + " files";
    head.append(count);
    const row = document.createElement("div");
    row.className = "dup-row";
    for (const m of group.members) row.append(memberCell(m, m.path === group.keeper));
    section.append(head, row);
    return section;
  }

  // A member's card and, for a file of this index, a box to pick it for the trash.
  function memberCell(m, isKeeper) {
    const cell = document.createElement("div");
    cell.className = "dup-cell";
    cell.append(memberElement(m, isKeeper));
    if (m.id != null) {
      const label = document.createElement("label");
      label.className = "pick";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.className = "pick-box";
      box.dataset.id = m.id;
      box.addEventListener("change", updatePicked);
      label.append(box, document.createTextNode(isKeeper ? "trash (another one is kept)" : "trash"));
      cell.append(label);
    }
    return cell;
  }

  const pickedIds = () => [...els.dupGroups.querySelectorAll(".pick-box:checked")].map((b) => Number(b.dataset.id));

  function updatePicked() {
    const n = pickedIds().length;
    els.dupPicked.textContent = n + " selected";
    els.dupTrash.disabled = n === 0;
  }

  let lastUndo = null; // the undo log of the last move from this page

  async function trashPicked() {
    const ids = pickedIds();
    if (!ids.length) return;
    els.dupTrash.disabled = true;
    const typed = els.dupThreshold.value.trim();
    const body = { ids, level: els.dupLevel.value, threshold: typed === "" ? null : Number(typed) };
    try {
      const res = await api("api/duplicates/trash", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const data = await res.json();
      lastUndo = data.undo_log;
      const notDone = data.not_done.map((e) => tail(e.path) + ": " + e.error).join("; ");
      setStatus("Moved " + data.moved.length + " file" + (data.moved.length === 1 ? "" : "s") +
        " to the trash folder." + (notDone ? " Not moved: " + notDone : ""), Boolean(notDone), els.dupDone);
      els.dupUndo.hidden = !lastUndo;
    } catch (e) {
      showError(e, trashPicked, els.dupDone);
    }
    loadDuplicates(true);
  }

  async function undoLast() {
    if (!lastUndo) return;
    els.dupUndo.disabled = true;
    try {
      const res = await api("api/undo", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ log: lastUndo }),
      });
      const data = await res.json();
      const problems = data.problems.join("; ");
      setStatus("Put back " + data.restored.length + " file" + (data.restored.length === 1 ? "" : "s") + "." +
        (problems ? " Problems: " + problems : ""), Boolean(problems), els.dupDone);
      if (!problems) { lastUndo = null; els.dupUndo.hidden = true; }
    } catch (e) {
      showError(e, undoLast, els.dupDone);
    } finally {
      els.dupUndo.disabled = false;
    }
    loadDuplicates(true);
  }

  function memberElement(m, isKeeper) {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "dup-member" + (isKeeper ? " keeper" : "");
    card.dataset.role = isKeeper ? "keeper" : "duplicate";
    card.dataset.path = m.path;
    card.dataset.score = m.score;
    if (m.id != null) card.dataset.id = m.id;
    const res = m.width && m.height ? m.width + "\u00d7" + m.height : "?\u00d7?";
    card.title = m.path + "\n" + (isKeeper ? "suggested keeper\n" : "score " + m.score.toFixed(4) + "\n") +
      res + ", " + fmtSize(m.size) + (m.id != null ? "\nclick to search with this image" : "");

    const box = document.createElement("div");
    box.className = "thumb";
    const img = document.createElement("img");
    img.alt = basename(m.path);
    img.decoding = "async";
    box.append(img);
    if (isKeeper) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "keep";
      box.append(badge);
    }

    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = isKeeper ? "keeper" : m.score.toFixed(3);
    const dims = document.createElement("span");
    dims.className = "res";
    dims.textContent = res;
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = fmtSize(m.size);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = tail(m.path);
    meta.append(score, dims, size, name);
    card.append(box, meta);

    if (m.id != null) {
      card.addEventListener("click", () => searchId(m.id, m.path));
      lazyImage(img, thumbUrl(m.id));
    } else {
      card.disabled = true; // not in this index: nothing to show or search from
    }
    return card;
  }

  async function loadInfo() {
    try {
      const info = await (await api("api/info")).json();
      const ex = info.manifest.extractor || {};
      els.info.textContent = info.files + " images \u00b7 extractor " + (ex.name || "?") +
        " \u00b7 " + info.path;
      els.info.title = "roots: " + info.roots.join(", ");
      if (!info.manifest.local) {  // no keypoints stored: the server would refuse verify
        els.verify.checked = false;
        els.verify.disabled = true;
        els.verify.parentElement.title = "This index stores no keypoints: rebuild it with keypoints " +
          "(lookalike index --keypoints sift) for copy detection.";
      }
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
  els.verify.addEventListener("change", rerun);
  window.addEventListener("popstate", route);
  for (const tab of els.tabs) {
    tab.addEventListener("click", (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return; // new tab etc.
      e.preventDefault();
      if (tab.dataset.view === view) {
        if (view === "duplicates") loadDuplicates(false);
        return;
      }
      if (tab.dataset.view === "duplicates") {
        history.pushState(null, "", dupHash());
        route();
      } else {
        // back to the search view as it was (its last results stay on screen)
        const lastId = Number(els.results.querySelector(".hit.self")?.dataset.id) || null;
        history.pushState(null, "", lastId ? "#id=" + lastId : window.location.pathname + window.location.search);
        showView("search");
      }
    });
  }
  els.dupForm.addEventListener("submit", (e) => {
    e.preventDefault();
    history.replaceState(null, "", dupHash());
    loadDuplicates(true);
  });
  els.dupMore.addEventListener("click", renderMoreGroups);
  els.dupTrash.addEventListener("click", trashPicked);
  els.dupUndo.addEventListener("click", undoLast);
  els.dupLevel.addEventListener("change", () => {
    history.replaceState(null, "", dupHash());
    loadDuplicates(true);
  });
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
  route();
})();
