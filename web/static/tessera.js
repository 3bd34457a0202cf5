// Live views: the server says when the store changed (server-sent events from the change
// feed); an open view that asks for it (main[data-live="true"]) is fetched again and its
// content replaced, unless someone is typing in it.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || main.getAttribute("data-live") !== "true" || !window.EventSource) return;
  var pending = false;
  function busy() {
    var el = document.activeElement;
    return el && main.contains(el) && (el.tagName === "INPUT" || el.tagName === "TEXTAREA");
  }
  function refresh() {
    if (pending) return;
    pending = true;
    setTimeout(function () {
      pending = false;
      if (busy()) return;
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
          if (next) { main.innerHTML = next.innerHTML; main.setAttribute("data-updated", String(Date.now())); }
        });
    }, 250);
  }
  var events = new EventSource("/ui/events");
  events.addEventListener("change", refresh);
})();
