/* Tradesentry review: keyboard triage, bulk selection, fetch with the CSRF token. No dependencies. */
(function () {
  "use strict";
  var meta = function (n) { var m = document.querySelector('meta[name="' + n + '"]'); return m ? m.content : ""; };
  var CSRF = meta("csrf-token");
  var ROOT = meta("app-root");
  var STATUS = { new: "New", in_review: "In review", escalated: "Escalated", closed: "Closed" };
  var OUTCOME = { confirmed: "Confirmed", dismissed: "Dismissed", data_error: "Data error", inconclusive: "Inconclusive" };
  var UNDO_KEY = "ts-review-undo";

  function toast(msg, err) {
    var t = document.getElementById("toast");
    if (!t) return;
    t.textContent = msg;
    t.className = "toast" + (err ? " err" : "");
    t.hidden = false;
    clearTimeout(toast._t);
    toast._t = setTimeout(function () { t.hidden = true; }, 2600);
  }

  function post(path, body) {
    return fetch(ROOT + path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF, "Accept": "application/json" },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error(j.detail || ("HTTP " + r.status));
        return j;
      });
    });
  }

  function undoStack() { try { return JSON.parse(sessionStorage.getItem(UNDO_KEY) || "[]"); } catch (e) { return []; } }
  function pushUndo(id) { var s = undoStack(); s.push(id); sessionStorage.setItem(UNDO_KEY, JSON.stringify(s.slice(-50))); }
  function popUndo() { var s = undoStack(); var id = s.pop(); sessionStorage.setItem(UNDO_KEY, JSON.stringify(s)); return id; }

  function typing(e) {
    var t = e.target;
    return e.ctrlKey || e.metaKey || e.altKey || (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)));
  }

  function span(cls, text) { var s = document.createElement("span"); s.className = cls; s.textContent = text; return s; }

  function paintStatus(row, d) {
    var cell = row.querySelector(".status-cell");
    if (cell) {
      cell.textContent = "";
      cell.appendChild(span("st st-" + d.status, STATUS[d.status] || d.status));
      if (d.outcome) { cell.appendChild(document.createTextNode(" ")); cell.appendChild(span("oc oc-" + d.outcome, OUTCOME[d.outcome] || d.outcome)); }
    }
    var as = row.querySelector(".assignee");
    if (as) as.textContent = d.assignee || "";
    row.dataset.revision = d.revision;
    row.classList.toggle("row-closed", d.status === "closed");
  }

  var help = document.getElementById("help");
  function showHelp() { if (help && !help.open) help.showModal(); }
  document.querySelectorAll("[data-help]").forEach(function (b) { b.addEventListener("click", showHelp); });

  /* ---------------- queue page ---------------- */
  var table = document.getElementById("queue");
  if (table) {
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr"));
    var cur = -1;
    var select = function (i) {
      if (!rows.length) return;
      i = Math.max(0, Math.min(rows.length - 1, i));
      if (rows[cur]) rows[cur].classList.remove("cur");
      cur = i;
      rows[cur].classList.add("cur");
      rows[cur].scrollIntoView({ block: "nearest" });
    };
    rows.forEach(function (r, i) {
      r.addEventListener("click", function (e) { if (e.target.tagName !== "INPUT" && e.target.tagName !== "A") select(i); });
    });
    var checks = function () { return Array.prototype.slice.call(document.querySelectorAll('input[name="ids"]')); };
    var countSel = function () {
      var n = checks().filter(function (c) { return c.checked; }).length;
      var el = document.getElementById("sel-count"); if (el) el.textContent = n;
      var b = document.getElementById("bulk-apply"); if (b) b.disabled = n === 0;
    };
    checks().forEach(function (c) { c.addEventListener("change", countSel); });
    var all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () { checks().forEach(function (c) { c.checked = all.checked; }); countSel(); });
    var ba = document.getElementById("bulk-action"), bv = document.getElementById("bulk-value");
    if (ba && bv) ba.addEventListener("change", function () { bv.hidden = ba.value !== "assign"; });

    var decide = function (quick, label) {
      var row = rows[cur]; if (!row) { toast("Select a row first (j / k)", true); return; }
      var id = row.dataset.id;
      post("/api/anomalies/" + id + "/decision", { quick: quick, revision: parseInt(row.dataset.revision || "0", 10) })
        .then(function (j) { paintStatus(row, j.decision); pushUndo(id); toast(label + " · u to undo"); select(cur + 1); })
        .catch(function (e) { toast(e.message, true); });
    };
    var undo = function () {
      var id = popUndo();
      if (!id) { toast("Nothing to undo"); return; }
      post("/api/anomalies/" + id + "/undo", {}).then(function (j) {
        var idx = rows.findIndex(function (r) { return r.dataset.id === id; });
        if (j.undone && idx >= 0) { paintStatus(rows[idx], j.decision); select(idx); }
        toast(j.undone ? "Undone" : "Nothing to undo");
      }).catch(function (e) { toast(e.message, true); });
    };
    document.addEventListener("keydown", function (e) {
      if (typing(e) || (help && help.open)) return;
      switch (e.key) {
        case "j": select(cur + 1); break;
        case "k": select(cur - 1); break;
        case "o": case "Enter": if (rows[cur]) location.href = rows[cur].dataset.href; break;
        case "x": if (rows[cur]) { var c = rows[cur].querySelector('input[name="ids"]'); c.checked = !c.checked; countSel(); } break;
        case "c": decide("confirm", "Confirmed"); break;
        case "d": decide("dismiss", "Dismissed"); break;
        case "e": decide("escalate", "Escalated"); break;
        case "a": decide("take", "Assigned to you"); break;
        case "u": undo(); break;
        case "/": e.preventDefault(); var q = document.getElementById("f-q"); if (q) q.focus(); break;
        case "?": showHelp(); break;
        default: return;
      }
      e.preventDefault();
    });
  }

  /* ---------------- detail page ---------------- */
  var nav = document.getElementById("detail-nav");
  if (nav) {
    var click = function (id) { var b = document.getElementById(id); if (b && !b.disabled) b.click(); };
    document.addEventListener("keydown", function (e) {
      if (typing(e) || (help && help.open)) return;
      switch (e.key) {
        case "j": if (nav.dataset.next) location.href = nav.dataset.next; break;
        case "k": if (nav.dataset.prev) location.href = nav.dataset.prev; break;
        case "c": click("btn-confirm"); break;
        case "d": click("btn-dismiss"); break;
        case "e": click("btn-escalate"); break;
        case "a": click("btn-take"); break;
        case "u": click("btn-undo"); break;
        case "?": showHelp(); break;
        default: return;
      }
      e.preventDefault();
    });
  }
})();
