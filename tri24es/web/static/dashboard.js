// Live updates: the server says when the log head moves (server-sent events); the page then
// fetches its live part again (the same page with ?fragment=1, rendered and escaped by the
// server) and swaps it in. At most one fetch at a time; a move during a fetch means one more.
// A running task's output grows without events: its page looks again every two seconds.
"use strict";

(function () {
  const live = document.getElementById("live");
  const dot = document.getElementById("live-state");
  if (!window.EventSource) return;

  let busy = false;
  let again = false;
  let shownHead = null;

  function fragmentUrl() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const response = await fetch(fragmentUrl(), {credentials: "same-origin"});
        if (response.ok) {
          live.innerHTML = await response.text();
          const banner = document.querySelector("#killswitch.banner");
          const reset = document.getElementById("reset-panel");
          if (reset) reset.hidden = !banner;
        }
      } while (again);
    } finally {
      busy = false;
      pollWhileRunning();
    }
  }

  let polling = null;
  function pollWhileRunning() {
    if (polling === null && document.getElementById("still-running")) {
      polling = setTimeout(function () { polling = null; refresh(); }, 2000);
    }
  }
  pollWhileRunning();

  // A browser keeps at most six connections to a host: a page it leaves (or keeps in its
  // back-forward cache) closes its stream, and opens a new one if it is shown again.
  let source = null;
  function listen() {
    source = new EventSource("/live");
    source.addEventListener("open", function () {
      if (dot) { dot.textContent = "●"; dot.title = "live"; dot.className = "on"; }
    });
    source.addEventListener("error", function () {
      if (dot) { dot.textContent = "○"; dot.title = "reconnecting"; dot.className = "muted"; }
    });
    source.addEventListener("head", function (event) {
      const head = event.data;
      if (head === shownHead) return;  // the first one too: the page may be older than it
      shownHead = head;
      if (live) refresh();
    });
  }
  window.addEventListener("pagehide", function () {
    if (source) { source.close(); source = null; }
    if (dot) { dot.textContent = "○"; }
  });
  window.addEventListener("pageshow", function () {
    if (!source) listen();
  });
  listen();
})();
