// The labelling queue's keys: 1-9 pick a label, Enter accepts the first suggestion, S skips.
// Each submits the same form a click does (nothing here talks to the server by itself).
(function () {
  var form = document.getElementById("label-form");
  if (!form) return;
  var busy = false;
  function press(button) {
    if (busy || !button) return;
    busy = true;
    form.requestSubmit(button);
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || /INPUT|TEXTAREA|SELECT/.test(ev.target.tagName)) return;
    var k = ev.key.toLowerCase();
    if (k === "enter") {
      var first = form.elements["first"].value;
      if (!first) return;
      ev.preventDefault();
      press(form.querySelector('button[name="label"][value="' + CSS.escape(first) + '"]'));
    } else {
      var b = form.querySelector('button[data-key="' + CSS.escape(k) + '"]');
      if (b) { ev.preventDefault(); press(b); }
    }
  });
})();
