"""What the viewer benchmark runs inside the page: one probe for every viewer.

The probe is installed before any of the page's own scripts (Playwright's
init script, which a page's Content Security Policy does not stop). It
wraps the canvas's ``drawImage`` and ``putImageData`` and records the time,
from the start of the navigation (``performance.now()``), of every draw onto
a canvas that is in the document and at least ``MIN_SIDE`` pixels wide: an
image reaching the screen, whichever viewer drew it. Off-screen canvases
(where Cornerstone, in Orthanc's viewer, decodes) and thumbnails do not
count, and clearing a canvas is not a draw.
"""

from __future__ import annotations

MIN_SIDE = 200

PROBE = """
(() => {
  const draws = { count: 0, first: null, times: [] };
  window.__benchDraws = draws;
  const record = (context) => {
    const canvas = context.canvas;
    if (!canvas || !canvas.isConnected || canvas.width < MIN_SIDE) {
      return;
    }
    const now = performance.now();
    draws.count += 1;
    draws.times.push(now);
    if (draws.first === null) {
      draws.first = now;
    }
  };
  const prototype = CanvasRenderingContext2D.prototype;
  for (const name of ["drawImage", "putImageData"]) {
    const original = prototype[name];
    prototype[name] = function (...args) {
      const result = original.apply(this, args);
      record(this);
      return result;
    };
  }
})();
""".replace("MIN_SIDE", str(MIN_SIDE))

FIRST_DRAW = "window.__benchDraws ? window.__benchDraws.first : null"

DRAW_RATE = """
(seconds) => new Promise((resolve) => {
  const draws = window.__benchDraws;
  const start = [draws.count, performance.now()];
  setTimeout(() => resolve(
    (draws.count - start[0]) * 1000 / (performance.now() - start[1])
  ), seconds * 1000);
})
"""

# Orthanc's viewer has no cine: a person steps through a clip with the mouse
# wheel, one frame a notch. Each notch here waits until its frame is drawn.
WHEEL_STEPS = """
async (steps) => {
  const element = document.getElementById("dicomImage");
  const draws = window.__benchDraws;
  const started = performance.now();
  for (let step = 0; step < steps; step += 1) {
    const before = draws.count;
    const wheel = new Event("mousewheel", { bubbles: true });
    Object.defineProperty(wheel, "wheelDelta", { value: -120 });
    element.dispatchEvent(wheel);
    const deadline = performance.now() + 10000;
    while (draws.count === before && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
  return (performance.now() - started) / 1000;
}
"""
