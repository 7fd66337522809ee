// Live updates: one EventSource per page. A "change" event makes the page fetch itself
// again from the dashboard (which answers from its cache) and swap in the new content;
// the browser never polls, and nothing here talks to the API server.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  var text = status && status.querySelector(".live-text");
  var pending = null;
  var busy = false;
  var again = false;

  function show(state, label) {
    if (!status) return;
    status.setAttribute("data-state", state);
    if (text) text.textContent = label;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.pathname + window.location.search, {
      credentials: "same-origin",
      headers: { "X-Requested-With": "live" },
      cache: "no-store"
    }).then(function (response) {
      if (response.redirected && new URL(response.url).pathname === "/signin") {
        window.location.assign("/signin");
        return null;
      }
      return response.text();
    }).then(function (html) {
      if (html === null || html === undefined) return;
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("live");
      var current = document.getElementById("live");
      if (!fresh || !current) return;
      document.title = doc.title;
      // Nothing this page shows changed: keep the DOM (no reloaded preview frames, no
      // lost selection or open details).
      if (fresh.innerHTML === current.innerHTML) return;
      var focused = document.activeElement && document.activeElement.id;
      current.innerHTML = fresh.innerHTML;
      if (focused) {
        var again_ = document.getElementById(focused);
        if (again_) again_.focus();
      }
      document.documentElement.setAttribute("data-updated", String(Date.now()));
    }).catch(function () {
      show("offline", "Offline");
    }).then(function () {
      busy = false;
      if (again) { again = false; refresh(); }
    });
  }

  if (!window.EventSource) return;
  var source = new EventSource("/events");
  source.addEventListener("open", function () { show("live", "Live"); });
  source.addEventListener("error", function () { show("offline", "Reconnecting"); });
  source.addEventListener("change", function () {
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(); }, 50);
  });
  source.addEventListener("signout", function () {
    source.close();
    window.location.assign("/signin");
  });
})();
