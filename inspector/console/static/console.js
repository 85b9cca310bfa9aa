// The live page: on every `update` event from /events, fetch the cards (HTML rendered and
// escaped by the server) and put them in place. EventSource reconnects by itself.
(function () {
  var live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  var busy = false;
  function refresh() {
    if (busy) return;
    busy = true;
    fetch("/live/cards", {credentials: "same-origin"}).then(function (r) { return r.text(); })
      .then(function (html) { live.innerHTML = html; })
      .finally(function () { busy = false; });
  }
  var es = new EventSource("/events");
  es.addEventListener("update", refresh);
})();
