// DBA panel: count the query log's "seconds left" down once a second. Display only: the proxy
// decides when logging stops (at the first statement after its deadline); reload for its word.
(function () {
  "use strict";
  var el = document.getElementById("instr-seconds-left");
  if (!el) return;
  var left = parseInt(el.getAttribute("data-seconds-left"), 10);
  if (!(left > 0)) return;
  var end = Date.now() + left * 1000;
  var timer = setInterval(function () {
    var now = Math.max(0, Math.round((end - Date.now()) / 1000));
    el.textContent = String(now);
    if (now === 0) {
      clearInterval(timer);
      el.parentNode.textContent = "time is up: logging stops with the next statement (reload to see)";
    }
  }, 1000);
})();
