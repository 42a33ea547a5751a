/* The flux-pipeline review gallery (docs/reports.md). Reads window.FLUX_GALLERY (data.js).
   Every element is built with createElement and textContent: no string from the data is ever
   parsed as HTML. The view (filters, search, grid, open task, page) lives in the URL hash. */
(function () {
  "use strict";
  var D = window.FLUX_GALLERY;
  var app = document.getElementById("app");
  var banner = document.getElementById("banner");
  if (!D || !app) { return; }

  var PAGE = 120;  /* cards a page */
  var GRID_ROWS = 20;  /* grid rows a page, and cards shown in one cell */
  var GRID_CELL = 6;
  var THUMBS = ".flux-pipeline/thumbs/";
  var STORE = "flux-pipeline:review:" + D.manifest;
  var served = location.protocol === "http:" || location.protocol === "https:";

  /* ---- tasks: decoded as report/gallery_data.py describes them -------------------- */
  var axisNames = D.axes.map(function (a) { return a[0]; });
  function unpackHash(packed) {  /* 43 characters of base64url -> 64 hex digits */
    if (packed.charAt(0) === "~") { return packed.slice(1); }
    var bytes = atob(packed.replace(/-/g, "+").replace(/_/g, "/") + "=");
    var hex = "";
    for (var b = 0; b < bytes.length; b++) { hex += (bytes.charCodeAt(b) + 256).toString(16).slice(1); }
    return hex;
  }
  function packHash(hex) {  /* the other way round; "~" and the text when it is no hash */
    if (!/^[0-9a-f]{64}$/.test(hex)) { return "~" + hex; }
    var bytes = "";
    for (var b = 0; b < 64; b += 2) { bytes += String.fromCharCode(parseInt(hex.substr(b, 2), 16)); }
    return btoa(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function hexKey(t) {  /* keys stay packed until one is needed in full */
    if (t.key === null) { t.key = unpackHash(t.pk); }
    return t.key;
  }
  function moment(m) { return m === null ? null : D.t0 + m / 100; }
  var tasks = D.t.map(function (r, i) {
    var cell = Object.create(null), pairs = [];
    for (var j = 0; j < r[4].length; j += 2) {
      var axis = D.axes[r[4][j]];
      cell[axis[0]] = axis[1][r[4][j + 1]];
      pairs.push(axis[0] + "=" + axis[1][r[4][j + 1]]);
    }
    return {
      i: i, rid: r[0], pk: r[1], key: null, step: D.steps[r[2]], state: D.states[r[3]],
      stateText: D.stateText[r[3]], own: cell, pairs: pairs, cell: null,
      prompt: r[5].map(function (w) { return D.words[w]; }).join(" "), parent: r[6],
      req: D.reqs[r[7]], outs: r[8], failCode: r[9], failMsg: r[10], taskId: r[11],
      times: r[12].slice(0, 4).map(moment).concat(r[12].slice(4)), isNew: r[13] === 1,
      children: [], search: null
    };
  });
  tasks.forEach(function (t) { if (t.parent >= 0) { tasks[t.parent].children.push(t.i); } });
  function fullId(t) {  /* an id stored as its repeat: step, own cell, after its parent's */
    if (typeof t.rid === "number") {
      var axes = t.pairs.join(",");
      var own = t.step + (axes ? "@" + axes : "") + "#" + t.rid;
      t.rid = t.parent >= 0 ? fullId(tasks[t.parent]) + "/" + own : own;
    }
    return t.rid;
  }
  function fullCell(t) {  /* a chained task's cell: its parent's axes, then its own */
    if (t.cell === null) {
      var c = Object.create(null);
      if (t.parent >= 0) { Object.assign(c, fullCell(tasks[t.parent])); }
      t.cell = Object.assign(c, t.own);
    }
    return t.cell;
  }
  tasks.forEach(function (t) {
    fullId(t);
    fullCell(t);
    t.search = (t.prompt + "\n" + t.rid).toLowerCase();
  });
  var byPacked = Object.create(null);
  tasks.forEach(function (t) { byPacked[t.pk] = t; });
  function byKey(hex) { return byPacked[packHash(hex)] || null; }

  /* ---- decisions: the review file's, then this browser's (localStorage) ------------- */
  var local = {};  /* key -> picked, rejected or clear: this browser's, over the file's */
  try { local = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch (e) { local = {}; }
  function packed(byHex) {
    var map = Object.create(null);
    Object.keys(byHex).forEach(function (k) { map[packHash(k)] = byHex[k]; });
    return map;
  }
  var localPacked = packed(local), filePacked = packed(D.decisions);
  function decisionOf(t) {
    var d = t.pk in localPacked ? localPacked[t.pk] : filePacked[t.pk];
    return d === "picked" || d === "rejected" ? d : "";
  }
  function showError(text) {
    banner.textContent = text;
    banner.hidden = false;
  }
  function send(t, decision) {
    if (!served) { return; }
    var body = JSON.stringify({ decision: decision, id: t.rid, step: t.step });
    fetch("/api/decisions/" + encodeURIComponent(hexKey(t)), {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: body
    }).then(function (response) {
      if (response.status !== 200) {
        throw new Error("the server answered " + response.status);
      }
      return response.json();
    }).then(function (answer) {
      if (answer && answer.decisions && typeof answer.decisions === "object") {
        var fresh = {};
        Object.keys(answer.decisions).forEach(function (k) {
          var v = answer.decisions[k];
          fresh[k] = v && typeof v === "object" ? v.decision : v;
        });
        D.decisions = fresh;
        filePacked = packed(fresh);
      }
    }).catch(function (err) {
      showError("Could not save the decision on " + t.rid + " (" + err.message + "). " +
        "It is kept in this browser: use \u201cExport review\u201d to keep it for sure.");
    });
  }
  function decide(t, decision) {
    if (!t) { return; }
    local[hexKey(t)] = decision;
    localPacked[t.pk] = decision;
    try { localStorage.setItem(STORE, JSON.stringify(local)); } catch (e) {
      showError("This browser would not store the decision: export the review to keep it.");
    }
    send(t, decision);
    render();
  }
  function exportReview() {
    var keys = {};
    Object.keys(D.decisions).forEach(function (k) { keys[k] = true; });
    Object.keys(local).forEach(function (k) { keys[k] = true; });
    var decisions = {};
    Object.keys(keys).sort().forEach(function (k) {
      var t = byKey(k);
      if (!t) { return; }
      var d = decisionOf(t);
      if (d) { decisions[k] = { decision: d, id: t.rid, step: t.step }; }
    });
    var doc = { decisions: decisions, format: 1, manifest: D.manifest };
    var blob = new Blob([JSON.stringify(doc, null, 2) + "\n"], { type: "application/json" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = D.manifest.replace(/\.[^.]*$/, "") + ".review.json";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  /* ---- the view, kept in the hash ------------------------------------------------- */
  var view = {};
  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    view = {};
    params.forEach(function (value, name) { view[name] = value; });
  }
  var lastHash = null;
  function writeHash() {
    var params = new URLSearchParams();
    Object.keys(view).sort().forEach(function (k) {
      if (view[k] !== "" && view[k] !== undefined) { params.set(k, view[k]); }
    });
    var hash = "#" + params.toString();
    if (hash === "#") { hash = "#view=cards"; }
    lastHash = hash;
    if (location.hash !== hash) { location.replace(hash); }
  }
  function setView(name, value) {
    view[name] = value;
    if (name !== "page" && name !== "open" && name !== "zp") { delete view.page; }
    writeHash();
    render();
  }
  window.addEventListener("hashchange", function () {
    if (location.hash === lastHash) { return; }
    readHash();
    render();
  });

  function matches(t) {
    if (view.step && t.step !== view.step) { return false; }
    if (view.state && t.state !== view.state) { return false; }
    if (view.d) {
      var d = decisionOf(t) || "undecided";
      if (d !== view.d) { return false; }
    }
    if (view["new"] === "1" && !t.isNew) { return false; }
    for (var a = 0; a < axisNames.length; a++) {
      var want = view["a." + axisNames[a]];
      if (want !== undefined && want !== "" && t.cell[axisNames[a]] !== want) { return false; }
    }
    if (view.q) {
      var words = view.q.toLowerCase().split(/\s+/);
      for (var w = 0; w < words.length; w++) {
        if (words[w] && t.search.indexOf(words[w]) < 0) { return false; }
      }
    }
    return true;
  }

  /* ---- elements ------------------------------------------------------------------- */
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function href(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }
  function select(label, name, options, allText) {
    var wrap = el("label", "", label);
    var s = el("select");
    s.name = name;
    var all = el("option", "", allText || "all");
    all.value = "";
    s.appendChild(all);
    options.forEach(function (o) {
      var opt = el("option", "", o[1]);
      opt.value = o[0];
      s.appendChild(opt);
    });
    s.value = view[name] || "";
    s.addEventListener("change", function () { setView(name, s.value); });
    wrap.appendChild(s);
    return wrap;
  }
  function pairs(list) { return list.map(function (v) { return [v, v]; }); }

  function imageBox(t, index, full) {
    var out = t.outs[index];
    if (out && out[4] === 1) {
      var img = el("img", "box");
      var thumb = out[1] && !full ? THUMBS + unpackHash(out[1]) + ".webp" : href(out[0]);
      img.setAttribute("src", thumb);
      img.alt = t.prompt;
      img.loading = "lazy";
      img.decoding = "async";
      if (out[2] > 0 && out[3] > 0) { img.style.aspectRatio = out[2] + " / " + out[3]; }
      return img;
    }
    var box = el("div", "box");
    if (out) {
      box.appendChild(el("span", "", "file missing"));
      box.appendChild(el("code", "reason", out[0]));
    } else if (t.state === "failed" || t.state === "expired") {
      box.appendChild(el("strong", "", t.failCode || t.state.toUpperCase()));
      box.appendChild(el("span", "reason", t.failMsg || t.stateText));
    } else if (t.state === "planned" && t.parent >= 0 &&
               (tasks[t.parent].state === "failed" || tasks[t.parent].state === "expired")) {
      box.appendChild(el("span", "", "not started: its parent failed"));
    } else {
      box.appendChild(el("span", "", t.stateText));
    }
    return box;
  }

  function card(t) {
    var d = decisionOf(t);
    var c = el("article", "card " + t.state + (d ? " " + d : ""));
    c.tabIndex = 0;
    c.dataset.index = String(t.i);
    c.appendChild(imageBox(t, 0, false));
    var badges = el("div", "badges");
    if (d) { badges.appendChild(el("span", "badge " + d, d)); }
    if (t.isNew) { badges.appendChild(el("span", "badge new", "new")); }
    if (t.outs.length > 1) { badges.appendChild(el("span", "badge", t.outs.length + " images")); }
    c.appendChild(badges);
    c.appendChild(el("code", "rid", t.rid));
    c.appendChild(el("span", "state " + t.state,
      t.stateText + (t.failCode ? " \u00b7 " + t.failCode : "")));
    if (t.prompt) {
      var p = el("p", "prompt", t.prompt);
      p.title = t.prompt;
      c.appendChild(p);
    }
    c.addEventListener("click", function () { openTask(t); });
    return c;
  }

  /* ---- controls (built once) ------------------------------------------------------ */
  var controls = el("div", "controls");
  var status = el("div", "status");
  var results = el("div", "results");
  app.appendChild(controls);
  app.appendChild(status);
  app.appendChild(results);
  var search = el("input");
  function buildControls() {
    controls.textContent = "";
    var q = el("label", "", "search prompts");
    search.type = "search";
    search.name = "q";
    search.placeholder = "words in the prompt or id";
    search.value = view.q || "";
    search.addEventListener("input", function () { setView("q", search.value); });
    q.appendChild(search);
    controls.appendChild(q);
    controls.appendChild(select("step", "step", pairs(D.steps)));
    var used = {};
    tasks.forEach(function (t) { used[t.state] = true; });
    controls.appendChild(select("state", "state",
      D.states.filter(function (s) { return used[s]; }).map(function (s) {
        return [s, D.stateText[D.states.indexOf(s)]];
      })));
    controls.appendChild(select("decision", "d",
      [["picked", "picked"], ["rejected", "rejected"], ["undecided", "undecided"]]));
    D.axes.forEach(function (a) {
      controls.appendChild(select(a[0], "a." + a[0], pairs(a[1])));
    });
    if (D.previous) {
      var lab = el("label", "check");
      var box = el("input");
      box.type = "checkbox";
      box.name = "new";
      box.checked = view["new"] === "1";
      box.addEventListener("change", function () { setView("new", box.checked ? "1" : ""); });
      lab.appendChild(box);
      lab.appendChild(document.createTextNode("new since the previous run"));
      controls.appendChild(lab);
    }
    controls.appendChild(select("view", "view", [["grid", "X/Y grid"]], "cards"));
    if (view.view === "grid") {
      var axes = pairs(["step"].concat(axisNames));
      controls.appendChild(select("X axis", "x", axes, "(none)"));
      controls.appendChild(select("Y axis", "y", axes, "(none)"));
      controls.appendChild(select("pages by", "z", axes, "(none)"));
    }
    controls.appendChild(select("card size", "size", [["s", "small"], ["l", "large"]], "medium"));
    var exp = el("button", "export", "Export review");
    exp.type = "button";
    exp.addEventListener("click", exportReview);
    controls.appendChild(exp);
  }
  function syncControls() {
    controls.querySelectorAll("select").forEach(function (s) { s.value = view[s.name] || ""; });
    if (document.activeElement !== search) { search.value = view.q || ""; }
  }

  /* ---- rendering ------------------------------------------------------------------ */
  var shown = [];  /* the filtered tasks, in order: the lightbox's arrows walk them */
  var builtFor = null;
  function valueOf(t, axis) { return axis === "step" ? t.step : t.cell[axis]; }
  function render() {
    var shape = (view.view || "") + "|" + (view.x || "") + (view.y || "") + (view.z || "");
    if (shape !== builtFor) { buildControls(); builtFor = shape; } else { syncControls(); }
    document.body.className = view.size ? "size-" + view.size : "";
    shown = tasks.filter(matches);
    var n = { picked: 0, rejected: 0 };
    tasks.forEach(function (t) { var d = decisionOf(t); if (d) { n[d] += 1; } });
    status.textContent = "";
    status.appendChild(el("span", "shown", "showing " + shown.length + " of " + tasks.length));
    status.appendChild(el("span", "picked", "picked: " + n.picked));
    status.appendChild(el("span", "rejected", "rejected: " + n.rejected));
    status.appendChild(el("span", "undecided",
      "undecided: " + (tasks.length - n.picked - n.rejected)));
    if (D.previous) {
      status.appendChild(el("span", "new",
        "new: " + tasks.filter(function (t) { return t.isNew; }).length));
    }
    status.appendChild(el("span", "note", "keys: Enter open \u00b7 \u2190 \u2192 move \u00b7 " +
      "p pick \u00b7 x reject \u00b7 c clear \u00b7 Esc close"));
    results.textContent = "";
    if (view.view === "grid" && view.x && view.y) { renderGrid(); } else { renderCards(shown); }
    renderLightbox();
  }
  function pager(count, current, name, labels) {
    var nav = el("nav", "pager");
    if (count <= 1) { return nav; }
    for (var p = 1; p <= count; p++) {
      var b = el("button", "", labels ? labels[p - 1] : String(p));
      b.type = "button";
      if (p === current) { b.setAttribute("aria-current", "page"); }
      b.addEventListener("click", (function (page) {
        return function () { setView(name, String(page)); };
      })(p));
      nav.appendChild(b);
    }
    return nav;
  }
  function renderCards(list) {
    var pages = Math.max(1, Math.ceil(list.length / PAGE));
    var page = Math.min(pages, Math.max(1, parseInt(view.page || "1", 10) || 1));
    results.appendChild(pager(pages, page, "page"));
    var grid = el("div", "cards");
    list.slice((page - 1) * PAGE, page * PAGE).forEach(function (t) { grid.appendChild(card(t)); });
    if (!list.length) { results.appendChild(el("p", "note", "No task matches.")); }
    results.appendChild(grid);
    if (pages > 1) { results.appendChild(pager(pages, page, "page")); }
  }
  function distinct(list, axis) {
    var seen = [];
    list.forEach(function (t) {
      var v = valueOf(t, axis);
      if (v !== undefined && seen.indexOf(v) < 0) { seen.push(v); }
    });
    var order = axis === "step" ? D.steps : (D.axes[axisNames.indexOf(axis)] || [0, []])[1];
    return seen.sort(function (a, b) { return order.indexOf(a) - order.indexOf(b); });
  }
  function renderGrid() {
    var x = view.x, y = view.y, z = view.z;
    var list = shown.filter(function (t) {
      return valueOf(t, x) !== undefined && valueOf(t, y) !== undefined &&
        (!z || valueOf(t, z) !== undefined);
    });
    if (z) {
      var zs = distinct(list, z);
      var zi = Math.min(zs.length, Math.max(1, parseInt(view.zp || "1", 10) || 1)) - 1;
      results.appendChild(pager(zs.length, zi + 1, "zp", zs.map(function (v) {
        return z + " = " + v;
      })));
      list = list.filter(function (t) { return valueOf(t, z) === zs[zi]; });
    }
    var xs = distinct(list, x), ys = distinct(list, y);
    var rowPages = Math.max(1, Math.ceil(ys.length / GRID_ROWS));
    var rowPage = Math.min(rowPages, Math.max(1, parseInt(view.page || "1", 10) || 1));
    results.appendChild(pager(rowPages, rowPage, "page"));
    ys = ys.slice((rowPage - 1) * GRID_ROWS, rowPage * GRID_ROWS);
    var buckets = Object.create(null);
    list.forEach(function (t) {
      var at = valueOf(t, x) + "\u0000" + valueOf(t, y);
      (buckets[at] = buckets[at] || []).push(t);
    });
    var table = el("table", "xy");
    var head = el("tr");
    head.appendChild(el("th", "", y + " \u2193 / " + x + " \u2192"));
    xs.forEach(function (v) { head.appendChild(el("th", "", v)); });
    table.appendChild(head);
    ys.forEach(function (yv) {
      var row = el("tr");
      row.appendChild(el("th", "", yv));
      xs.forEach(function (xv) {
        var td = el("td");
        var cell = el("div", "cell");
        var inCell = buckets[xv + "\u0000" + yv] || [];
        inCell.slice(0, GRID_CELL).forEach(function (t) { cell.appendChild(card(t)); });
        if (inCell.length > GRID_CELL) {
          cell.appendChild(el("p", "note", "+" + (inCell.length - GRID_CELL) +
            " more: narrow the filters"));
        }
        td.appendChild(cell);
        row.appendChild(td);
      });
      table.appendChild(row);
    });
    results.appendChild(table);
    if (list.length < shown.length && !z) {
      results.appendChild(el("p", "note", (shown.length - list.length) +
        " tasks without both axes are not in the grid."));
    }
  }

  /* ---- the lightbox --------------------------------------------------------------- */
  var lightbox = el("div");
  lightbox.id = "lightbox";
  lightbox.hidden = true;
  lightbox.setAttribute("role", "dialog");
  lightbox.setAttribute("aria-modal", "true");
  document.body.appendChild(lightbox);
  function current() {
    var t = view.open ? byKey(view.open) : null;
    return t || null;
  }
  function openTask(t) { setView("open", hexKey(t)); }
  function closeBox() {
    var t = current();
    setView("open", "");
    if (t) {
      var c = results.querySelector('[data-index="' + t.i + '"]');
      if (c) { c.focus(); }
    }
  }
  function step(delta) {
    var t = current();
    if (!t || !shown.length) { return; }
    var at = shown.indexOf(t);
    var next = shown[(at + delta + shown.length) % shown.length];
    setView("open", hexKey(next));
  }
  function stamp(seconds) {
    return seconds === null || seconds === undefined ? "\u2013" : new Date(seconds * 1000).toISOString();
  }
  function figure(t, label, isCurrent) {
    var f = el("figure", isCurrent ? "current" : "");
    f.appendChild(imageBox(t, 0, false));
    f.appendChild(el("figcaption", "", label + ": " + t.rid));
    f.addEventListener("click", function () { setView("open", hexKey(t)); });
    return f;
  }
  function renderLightbox() {
    var t = current();
    lightbox.textContent = "";
    if (!t) { lightbox.hidden = true; return; }
    lightbox.hidden = false;
    lightbox.dataset.key = hexKey(t);
    var stage = el("div", "stage");
    var full = el("div", "full");
    if (t.outs.length) {
      t.outs.forEach(function (o, i) { full.appendChild(imageBox(t, i, true)); });
    } else {
      full.appendChild(imageBox(t, 0, true));
    }
    stage.appendChild(full);
    if (t.parent >= 0 || t.children.length) {  /* the image beside its chained edits */
      var lineage = el("div", "lineage");
      if (t.parent >= 0) {
        lineage.appendChild(figure(tasks[t.parent], "parent", false));
        lineage.appendChild(el("span", "arrow", "\u2192"));
      }
      lineage.appendChild(figure(t, "this", true));
      if (t.children.length) { lineage.appendChild(el("span", "arrow", "\u2192")); }
      t.children.forEach(function (i) { lineage.appendChild(figure(tasks[i], "edit", false)); });
      stage.appendChild(lineage);
    }
    lightbox.appendChild(stage);
    var side = el("div", "details");
    var buttons = el("div", "buttons");
    [["\u2190 previous", function () { step(-1); }], ["next \u2192", function () { step(1); }],
     ["pick (p)", function () { decide(t, "picked"); }],
     ["reject (x)", function () { decide(t, "rejected"); }],
     ["clear (c)", function () { decide(t, "clear"); }],
     ["close (Esc)", closeBox]].forEach(function (b) {
      var button = el("button", "", b[0]);
      button.type = "button";
      button.addEventListener("click", b[1]);
      buttons.appendChild(button);
    });
    side.appendChild(buttons);
    var d = decisionOf(t);
    side.appendChild(el("p", "decision " + d, d ? "decision: " + d : "no decision yet"));
    var dl = el("dl");
    function row(name, value) {
      dl.appendChild(el("dt", "", name));
      var dd = el("dd");
      if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = String(value); }
      dl.appendChild(dd);
    }
    row("id", t.rid);
    row("step", t.step);
    row("state", t.stateText + " (" + t.state + ")");
    if (t.failCode || t.failMsg) { row("failCode", t.failCode || "\u2013"); row("failMsg", t.failMsg || "\u2013"); }
    row("key", hexKey(t));
    row("taskId", t.taskId || "\u2013");
    Object.keys(t.cell).forEach(function (a) { row(a, t.cell[a]); });
    row("prompt", t.prompt || "\u2013");
    row("first submitted", stamp(t.times[0]));
    row("submitted", stamp(t.times[1]));
    row("finished", stamp(t.times[2]));
    row("downloaded", stamp(t.times[3]));
    row("costTime", t.times[4] === null ? "\u2013" : t.times[4] + " ms");
    row("attempts", t.times[5]);
    t.outs.forEach(function (o, i) {
      var a = el("a", "", o[0]);
      a.href = href(o[0]);
      row("image " + (i + 1), a);
      if (o[2] > 0) { row("size", o[2] + " \u00d7 " + o[3]); }
    });
    var request = JSON.parse(JSON.stringify(t.req));
    if (request && typeof request === "object" && request.input && typeof request.input === "object") {
      request.input.prompt = t.prompt;
    }
    row("request", el("pre", "request", JSON.stringify(request, null, 2)));
    side.appendChild(dl);
    lightbox.appendChild(side);
  }

  /* ---- keys ----------------------------------------------------------------------- */
  function focusedTask() {
    var open = current();
    if (open) { return open; }
    var a = document.activeElement;
    if (a && a.dataset && a.dataset.index !== undefined) { return tasks[Number(a.dataset.index)]; }
    return null;
  }
  document.addEventListener("keydown", function (ev) {
    var target = ev.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" ||
                   target.tagName === "TEXTAREA")) { return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var open = current();
    var t = focusedTask();
    var key = ev.key;
    if (key === "Escape" && open) { closeBox(); } else if (key === "ArrowRight" && open) {
      step(1);
    } else if (key === "ArrowLeft" && open) { step(-1); } else if (key === "Enter" && !open && t) {
      openTask(t);
    } else if ((key === "ArrowRight" || key === "ArrowLeft") && t) {
      var cards = Array.prototype.slice.call(results.querySelectorAll(".card"));
      var at = cards.indexOf(document.activeElement);
      var next = cards[at + (key === "ArrowRight" ? 1 : -1)];
      if (next) { next.focus(); }
    } else if ((key === "p" || key === "x" || key === "c") && t) {
      var keep = t.i;
      decide(t, key === "p" ? "picked" : key === "x" ? "rejected" : "clear");
      if (!open) {
        var again = results.querySelector('[data-index="' + keep + '"]');
        if (again) { again.focus(); }
      }
    } else { return; }
    ev.preventDefault();
  });

  readHash();
  render();
  /* when the first view is built, in ms since navigation started (tests/benchmarks) */
  document.documentElement.setAttribute("data-ready", String(Math.round(performance.now())));
})();
