// /ui/live: redraw the table from the server-sent events of /ui/live/stream (text only, no HTML).
(function () {
  var body = document.querySelector("#live tbody"), status = document.getElementById("live-status");
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
  function show(v) {
    if (!v) { status.textContent = "starting…"; return; }
    document.getElementById("n-open").textContent = v.open;
    document.getElementById("n-pending").textContent = v.pending_commit;
    var rows = document.createDocumentFragment();
    v.sessions.forEach(function (s) {
      var tr = document.createElement("tr");
      cell(tr, s.session_id, "id"); cell(tr, s.user_id, "id");
      cell(tr, s.events + " (" + s.visible + ")");
      cell(tr, (s.label || "—") + (s.abstained ? " (abstained)" : "") + (s.pending ? " (re-scoring)" : ""));
      cell(tr, s.probability === null ? "" : s.probability.toFixed(2) +
           (s.threshold === null ? "" : " / threshold " + s.threshold.toFixed(2)));
      cell(tr, s.evidence.join("; ")); cell(tr, s.idle_s + " s");
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    status.textContent = "live";
  }
  var source = new EventSource("/ui/live/stream");
  source.onmessage = function (e) { show(JSON.parse(e.data)); };
  source.onerror = function () { status.textContent = "reconnecting…"; };
})();
