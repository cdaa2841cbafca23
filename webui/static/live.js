// Progressive enhancement only: every page works without this file.
// It refreshes the page's live regions ([data-live] with an id) every few seconds without a reload,
// says what changed (boxes joining, leaving or taking the coordinator role; tasks changing status),
// asks before destructive actions, and submits filter forms when a choice changes.
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  var MAX_CHANGES = 6;
  var busy = false;

  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) event.preventDefault();
    });
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  function states(root, selector, idAttr, stateAttr, nameAttr) {
    var found = {};
    root.querySelectorAll(selector).forEach(function (el) {
      found[el.getAttribute(idAttr)] = { state: el.getAttribute(stateAttr), name: el.getAttribute(nameAttr) };
    });
    return found;
  }

  function describe(before, after) {
    var lines = [];
    Object.keys(after.boxes).forEach(function (id) {
      var now = after.boxes[id], was = before.boxes[id];
      if (!was) lines.push("Box " + now.name + " joined the passel");
      else if (was.state !== now.state) {
        if (now.state.indexOf("coordinator") === 0 && was.state.indexOf("coordinator") !== 0) lines.push(now.name + " is now the coordinator");
        else if (/gone$/.test(now.state)) lines.push("Box " + now.name + " stopped answering");
        else if (/gone$/.test(was.state)) lines.push("Box " + now.name + " is back");
      }
    });
    Object.keys(before.boxes).forEach(function (id) {
      if (!after.boxes[id]) lines.push("Box " + before.boxes[id].name + " left the passel");
    });
    Object.keys(after.tasks).forEach(function (id) {
      var now = after.tasks[id], was = before.tasks[id];
      if (was && was.state !== now.state) lines.push("Task " + now.name + " is now " + now.state);
    });
    return lines;
  }

  function snapshot(root) {
    return {
      boxes: states(root, "[data-box-id]", "data-box-id", "data-box-state", "data-box-name"),
      tasks: states(root, "[data-task-id]", "data-task-id", "data-status", "data-task-name")
    };
  }

  function announce(lines) {
    if (!lines.length) return;
    var list = document.getElementById("changes");
    if (!list) return;
    list.parentElement.hidden = false;
    var stamp = new Date().toLocaleTimeString();
    lines.forEach(function (line) {
      var item = document.createElement("li");
      item.textContent = stamp + " " + line;
      list.insertBefore(item, list.firstChild);
    });
    while (list.children.length > MAX_CHANGES) list.removeChild(list.lastChild);
  }

  function say(text) {
    var status = document.getElementById("live-state");
    if (status) status.textContent = text;
  }

  function keepsFocus(el) {
    var active = document.activeElement;
    return active && active !== document.body && el.contains(active);
  }

  function atEnd(log) {
    return log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  }

  function toEnd(log) {
    log.scrollTop = log.scrollHeight;
  }

  // A log is only read, so a finger on it (which focuses it on a phone) must not stop its new lines:
  // its text is replaced in place, and it stays at its end if it was there.
  function swapLog(el, replacement) {
    if (el.textContent === replacement.textContent) return;
    var pinned = atEnd(el);
    el.textContent = replacement.textContent;
    if (pinned) toEnd(el);
  }

  function swap(fresh) {
    document.querySelectorAll("[data-live][id]").forEach(function (el) {
      var replacement = fresh.getElementById(el.id);
      if (!replacement) return;
      if (el.classList.contains("log")) return swapLog(el, replacement);
      if (!keepsFocus(el)) el.replaceWith(replacement);
    });
  }

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      var reply = await fetch(location.href, { headers: { "Accept": "text/html" },
                                                cache: "no-store", credentials: "same-origin" });
      if (!reply.ok && reply.status !== 404) throw new Error("HTTP " + reply.status);
      var fresh = new DOMParser().parseFromString(await reply.text(), "text/html");
      var before = snapshot(document);
      swap(fresh);
      announce(describe(before, snapshot(document)));
      say("Live · updated " + new Date().toLocaleTimeString());
    } catch (error) {
      say("This box is not answering; retrying…");
    } finally {
      busy = false;
    }
  }

  // The log opens at its end: its last lines say what the task does now. Once more when the page's
  // layout has settled (a phone lays out again after the first paint).
  function openLogAtEnd() {
    var log = document.getElementById("log");
    if (!log) return;
    toEnd(log);
    window.requestAnimationFrame(function () { toEnd(log); });
    window.addEventListener("load", function () { toEnd(log); });
  }

  function start() {
    openLogAtEnd();
    if (document.body.getAttribute("data-live") !== "on") return;
    say("Live");
    window.setInterval(refresh, PERIOD_MS);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  }

  confirmForms();
  start();
})();
