// console.js: the Live page's event stream. Rows arrive as Server-Sent
// Events already rendered, and escaped, by the server's html/template;
// this script only places them. While the reader scrolls away from the
// top, new rows are held back (the table must not move under the reader)
// and a Resume button shows how many wait.
(function () {
  "use strict";

  var maxRows = 1000;
  var tbody = document.getElementById("events");
  if (!tbody || !tbody.dataset.stream) {
    return;
  }
  var status = document.getElementById("live-status");
  var pauseBtn = document.getElementById("live-pause");
  var resumeBtn = document.getElementById("live-resume");
  var empty = document.getElementById("live-empty");
  var paused = false;
  var held = [];
  var state = "Connecting…";

  function show() {
    if (paused) {
      status.textContent = "Paused" + (held.length ? ": " + held.length + " new event" + (held.length === 1 ? "" : "s") + " waiting" : "");
    } else {
      status.textContent = state;
    }
    pauseBtn.hidden = paused;
    resumeBtn.hidden = !paused;
  }

  function place(row) {
    tbody.insertBefore(row, tbody.firstChild);
    if (empty) {
      empty.remove();
      empty = null;
    }
    while (tbody.rows.length > maxRows) {
      tbody.deleteRow(tbody.rows.length - 1);
    }
  }

  function pause() {
    paused = true;
    show();
  }

  function resume() {
    paused = false;
    var rows = held;
    held = [];
    for (var i = 0; i < rows.length; i++) {
      place(rows[i]);
    }
    window.scrollTo(0, 0);
    show();
  }

  pauseBtn.addEventListener("click", pause);
  resumeBtn.addEventListener("click", resume);
  window.addEventListener("scroll", function () {
    if (!paused && window.scrollY > 40) {
      pause();
    }
  }, { passive: true });

  var es = new EventSource(tbody.dataset.stream);
  es.addEventListener("open", function () {
    state = "Live";
    show();
  });
  es.addEventListener("event", function (m) {
    var t = document.createElement("template");
    t.innerHTML = m.data; // the server's html/template output
    var row = t.content.firstElementChild;
    if (!row) {
      return;
    }
    row.classList.add("new");
    if (paused) {
      held.push(row);
    } else {
      place(row);
    }
    show();
  });
  es.addEventListener("expired", function (m) {
    es.close();
    state = m.data;
    show();
  });
  es.addEventListener("error", function () {
    state = es.readyState === EventSource.CLOSED ? "Disconnected: reload the page" : "Reconnecting…";
    show();
  });
})();
