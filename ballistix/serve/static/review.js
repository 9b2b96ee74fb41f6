// The review app's script (a static file: the pages allow no inline script).
// Zoom and pan of the surfaces and the graph; the split / overlay view; the cells shown.
"use strict";

(function () {
  // ---------------------------------------------------------------- zoom and pan
  // Every .zoom-view holds a .zoom-stage; views with the same data-sync move together.
  const groups = {};
  document.querySelectorAll(".zoom-view").forEach((view, k) => {
    const key = view.dataset.sync || "view-" + k;
    (groups[key] = groups[key] || { views: [], s: 1, x: 0, y: 0 }).views.push(view);
  });

  function apply(gr) {
    for (const v of gr.views) {
      v.querySelector(".zoom-stage").style.transform = `translate(${gr.x}px, ${gr.y}px) scale(${gr.s})`;
    }
  }

  function zoomAt(gr, f, mx, my) {
    const s = Math.min(40, Math.max(0.5, gr.s * f));
    f = s / gr.s;
    gr.x = mx - (mx - gr.x) * f;
    gr.y = my - (my - gr.y) * f;
    gr.s = s;
    apply(gr);
  }

  for (const gr of Object.values(groups)) {
    for (const view of gr.views) {
      view.addEventListener("wheel", (e) => {
        e.preventDefault();
        const r = view.getBoundingClientRect();
        zoomAt(gr, e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - r.left, e.clientY - r.top);
      }, { passive: false });
      let drag = null, moved = false;
      view.addEventListener("pointerdown", (e) => {
        if (e.button !== 0) return;
        drag = [e.clientX - gr.x, e.clientY - gr.y, e.clientX, e.clientY];
        moved = false;
      });
      view.addEventListener("pointermove", (e) => {
        if (!drag) return;
        if (!moved && Math.hypot(e.clientX - drag[2], e.clientY - drag[3]) > 4) {
          moved = true;
          view.setPointerCapture(e.pointerId);
          view.classList.add("dragging");
        }
        if (moved) {
          gr.x = e.clientX - drag[0];
          gr.y = e.clientY - drag[1];
          apply(gr);
        }
      });
      const end = () => { drag = null; view.classList.remove("dragging"); };
      view.addEventListener("pointerup", end);
      view.addEventListener("pointercancel", end);
      // a drag that ends on a link is a pan, not a click
      view.addEventListener("click", (e) => { if (moved) { e.preventDefault(); e.stopPropagation(); moved = false; } }, true);
    }
  }

  document.querySelectorAll("button[data-zoom]").forEach((b) => {
    b.addEventListener("click", () => {
      const gr = groups[b.dataset.sync];
      if (!gr) return;
      const r = gr.views.find((v) => v.offsetParent !== null) || gr.views[0];
      const w = r.clientWidth / 2, h = r.clientHeight / 2;
      if (b.dataset.zoom === "reset") { gr.s = 1; gr.x = 0; gr.y = 0; apply(gr); }
      else zoomAt(gr, b.dataset.zoom === "in" ? 1.5 : 1 / 1.5, w, h);
    });
  });

  // ---------------------------------------------------------------- split / overlay, cells
  const panes = document.getElementById("panes");
  if (panes) {
    document.querySelectorAll("input[name=mode]").forEach((r) => {
      r.addEventListener("change", () => {
        panes.classList.toggle("overlay", r.value === "overlay" && r.checked);
        panes.classList.toggle("split", !(r.value === "overlay" && r.checked));
        document.querySelector(".controls").classList.toggle("overlay-mode", r.value === "overlay" && r.checked);
      });
    });
    const top = document.getElementById("overlay-top");
    const opacity = document.getElementById("opacity");
    if (top && opacity) {
      const set = () => { top.style.opacity = String(opacity.value / 100); };
      opacity.addEventListener("input", set);
      set();
    }
    const all = document.getElementById("all-cells");
    if (all) all.addEventListener("change", () => panes.classList.toggle("all-cells", all.checked));
  }
})();
