// fortranspire dashboard: small additions to htmx. The page works without this file (and
// without JavaScript at all): the translate form then posts normally.
(function () {
  "use strict";

  function showError(message) {
    var target = document.getElementById("result");
    if (!target) { return; }
    var card = document.createElement("div");
    card.className = "card error-card";
    var title = document.createElement("h3");
    title.textContent = "Translation could not run";
    var text = document.createElement("p");
    text.className = "error";
    text.textContent = message;  // textContent: never HTML from a server error page
    card.appendChild(title);
    card.appendChild(text);
    target.replaceChildren(card);
  }

  // Refuse an oversized source before uploading it; the server enforces the same limit.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.target;
    if (!form || (form.id !== "translate-form" && form.id !== "profile-form")) { return; }
    var limit = parseInt(form.dataset.maxBytes || "0", 10);
    if (!limit) { return; }
    var source = form.querySelector("textarea[name=source]");
    var upload = form.querySelector("input[type=file][name=upload]");
    var size = 0;
    if (upload && upload.files && upload.files.length) {
      for (var i = 0; i < upload.files.length; i++) { size += upload.files[i].size; }
    } else if (source) {
      size = new Blob([source.value]).size;
    }
    if (size > limit) {
      event.preventDefault();
      showError("the source is " + size + " bytes; the limit is " + limit + " bytes");
    }
  });

  // "Copy" buttons next to secrets shown once (hidden without JavaScript: select the text).
  function setUpCopyButtons() {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      button.hidden = !(navigator.clipboard && window.isSecureContext);
      button.addEventListener("click", function () {
        var source = document.querySelector(button.dataset.copy);
        var status = button.parentNode.querySelector(".copy-status");
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          if (status) { status.textContent = "copied"; }
        }, function () {
          if (status) { status.textContent = "copy failed: select the text"; }
        });
      });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpCopyButtons);
  } else {
    setUpCopyButtons();
  }

  // 5xx answers and lost connections are not swapped by htmx: say something instead of nothing.
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail && event.detail.xhr ? event.detail.xhr.status : "?";
    showError("the server failed (HTTP " + status + "); the run history shows what was recorded");
  });
  document.addEventListener("htmx:sendError", function () {
    showError("the server could not be reached; check your connection and try again");
  });
})();
