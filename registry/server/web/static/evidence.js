// loradex web (version, compare, review pages): copy buttons and the compare slider.
// Progressive only: without it the prompt line is selectable text and the two images of a
// flip view sit side by side (the CSS-only "flip" toggle works without script too).
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.textContent).then(function () {
          button.textContent = "Copied";
          window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
        });
      });
    });
    document.querySelectorAll(".flip").forEach(function (view) {
      var range = view.querySelector("input.slider");
      var top = view.querySelector(".flip-b");
      if (!range || !top) { return; }
      view.classList.add("slider-on");
      range.hidden = false;
      function update() { top.style.clipPath = "inset(0 0 0 " + range.value + "%)"; }
      range.addEventListener("input", update);
      update();
    });
  });
}());
