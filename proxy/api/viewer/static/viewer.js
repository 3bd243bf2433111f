// Keyboard navigation, the live badge and copy-as-curl. Everything else is rendered on the server.
(function () {
  "use strict";
  let index = -1;
  const rows = () => Array.from(document.querySelectorAll(".nav-row"));

  function select(i) {
    const all = rows();
    if (!all.length) return;
    index = Math.max(0, Math.min(i, all.length - 1));
    all.forEach((row, n) => row.classList.toggle("selected", n === index));
    all[index].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target.closest && target.closest("input, select, textarea")) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.key === "j") select(index + 1);
    else if (event.key === "k") select(index - 1);
    else if (event.key === "Enter" && index >= 0) {
      const href = rows()[index] && rows()[index].dataset.href;
      if (href) window.location.href = href;
    } else if (event.key === "Escape") {
      const up = document.querySelector(".crumbs a");
      if (up) window.location.href = up.getAttribute("href");
      else if (window.location.pathname !== "/") window.location.href = "/";
    } else return;
    event.preventDefault();
  });

  // a refreshed list keeps the selected row where it was
  document.addEventListener("htmx:afterSwap", () => { if (index >= 0) select(index); });

  function live(on) {
    const badge = document.getElementById("live");
    if (!badge) return;
    badge.textContent = on ? "live" : "offline";
    badge.classList.toggle("on", on);
    badge.classList.toggle("off", !on);
  }
  document.addEventListener("htmx:sseOpen", () => live(true));
  document.addEventListener("htmx:sseError", () => live(false));

  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest(".copy-curl");
    if (!button) return;
    const text = button.parentElement.querySelector(".curl").textContent;
    const done = () => { button.textContent = "copied"; setTimeout(() => (button.textContent = "copy as curl"), 1500); };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done);
    else {  // plain http beyond loopback has no clipboard API
      const area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      document.execCommand("copy"); area.remove(); done();
    }
  });
})();
