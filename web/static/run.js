// Live run view: polls the run's JSON every 2 s and appends new task results and
// output. Store data only ever goes in through textContent, never as HTML.
// When the run has ended, shows its final status, then reloads for the verdicts.
(function () {
  "use strict";
  var section = document.getElementById("live");
  if (!section) { return; }
  var url = section.getAttribute("data-url");
  var afterTask = section.getAttribute("data-after-task") || "0";
  var afterOutput = section.getAttribute("data-after-output") || "0";
  var tbody = document.getElementById("live-tasks");
  var output = document.getElementById("live-output");
  var note = document.getElementById("live-note");
  var status = document.getElementById("run-status");
  var took = document.getElementById("run-took");
  var started = document.getElementById("run-started");
  var revision = document.getElementById("run-revision");
  var INTERVAL = 2000;
  var failures = 0;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function pill(statusName, symbol, tone) {
    var span = el("span", "pill tone-" + tone);
    var sym = el("span", "sym", symbol);
    sym.setAttribute("aria-hidden", "true");
    span.appendChild(sym);
    span.appendChild(document.createTextNode(" "));
    span.appendChild(el("span", "word", statusName.replace("_", " ")));
    return span;
  }

  function cell(row, child, className) {
    var td = el("td", className);
    if (typeof child === "string") { td.textContent = child; } else { td.appendChild(child); }
    row.appendChild(td);
  }

  // The badges the page's marks() macro draws: unverified, accepted, ran for real, rescued, cause, flapping.
  function statusCell(task) {
    var td = el("td", "st");
    td.appendChild(pill(task.status, task.symbol, task.tone));
    (task.marks || []).forEach(function (mark) {
      var badge = el("span", "pill mark tone-" + mark.tone, mark.word);
      badge.title = mark.title;
      td.appendChild(document.createTextNode(" "));
      td.appendChild(badge);
    });
    return td;
  }

  function addTask(task) {
    var row = el("tr", task.drift ? "row-changed" : "");
    cell(row, task.host);
    row.appendChild(statusCell(task));
    var name = el("td", "", task.task);
    if (task.handler) {
      name.appendChild(document.createTextNode(" "));
      name.appendChild(el("span", "tag", "handler"));
    }
    row.appendChild(name);
    cell(row, el("code", "", task.action));
    cell(row, task.duration.toFixed(1) + " s", "num");
    cell(row, task.unverified ? (task.reason || "") : "", "msg");
    tbody.appendChild(row);
  }

  function addOutput(chunks) {
    if (!chunks.length) { return; }
    var atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 8;
    var text = chunks.join("\n");
    output.appendChild(document.createTextNode((output.textContent ? "\n" : "") + text));
    if (atBottom) { output.scrollTop = output.scrollHeight; }
  }

  function showStatus(data) {
    if (!status) { return; }
    var fresh = pill(data.status, data.symbol, data.tone);
    fresh.id = "run-status";
    status.replaceWith(fresh);
    status = fresh;
    if (took) { took.textContent = data.took; }
    if (started) { started.textContent = data.started; started.title = data.started_utc; }
    if (revision && data.revision !== "—") {
      var code = el("code", "sha", data.revision);
      revision.replaceChildren(code);
    }
  }

  function poll() {
    var query = "?after_task=" + encodeURIComponent(afterTask) + "&after_output=" + encodeURIComponent(afterOutput);
    fetch(url + query, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        data.tasks.forEach(addTask);
        addOutput(data.output);
        afterTask = String(data.after_task);
        afterOutput = String(data.after_output);
        showStatus(data);
        var behind = data.more || data.tasks.length >= 500 || data.output.length >= 500;
        if (data.done && !behind) {
          note.textContent = "run " + data.status.replace("_", " ") + "; loading the results…";
          window.setTimeout(function () { window.location.reload(); }, 1500);
          return;
        }
        window.setTimeout(poll, behind ? 100 : INTERVAL);
      })
      .catch(function (error) {
        failures += 1;
        note.textContent = "cannot reach fleet (" + error.message + "); retrying";
        window.setTimeout(poll, Math.min(INTERVAL * (failures + 1), 15000));
      });
  }

  window.setTimeout(poll, 500);
})();
