// Dark or light, remembered in this browser; runs before the page paints.
(function () {
  var t = null;
  try { t = localStorage.getItem("fw-theme"); } catch (e) { /* private mode */ }
  if (!t && window.matchMedia && matchMedia("(prefers-color-scheme: light)").matches) t = "light";
  document.documentElement.setAttribute("data-theme", t || "dark");
})();
