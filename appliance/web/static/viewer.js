/*
 * The study viewer: thumbnails, zoom, pan, fit, window/level and cine.
 *
 * Plain JavaScript, no build step. Frames are fetched one request each and
 * decoded into ImageBitmaps, so the first frame shows at once and a clip
 * plays from memory at its own rate while the rest arrive. Playback keeps
 * time against the clock, not against animation frames: a clip of 30 frames
 * a second shows 30 frames a second whatever the screen's refresh rate.
 */
(function () {
  "use strict";

  const FETCHES_AT_ONCE = 4;
  const ZOOM_STEP = 1.25;
  const SPEEDS = [0.25, 0.5, 1, 2, 4];

  const items = JSON.parse(document.getElementById("study-data").textContent);
  const viewer = document.getElementById("viewer");
  const stage = document.getElementById("stage");
  const canvas = document.getElementById("canvas");
  const context = canvas.getContext("2d");
  const reportBox = document.getElementById("report");
  const messageBox = document.getElementById("message");
  const statusLine = document.getElementById("status");
  const progressBar = document.getElementById("progress-bar");
  const playButton = document.getElementById("play");
  const scrubber = document.getElementById("scrubber");
  const speedSelect = document.getElementById("speed");
  const counter = document.getElementById("frame-counter");
  const help = document.getElementById("help");

  const state = {
    index: -1,
    item: null,
    info: null,
    frames: [],
    loaded: 0,
    frame: 0,
    playing: false,
    rate: 25,
    speed: 1,
    anchorTime: 0,
    anchorFrame: 0,
    view: { scale: 1, x: 0, y: 0, fitted: true },
    tool: "pan",
    window: null,
    values: null,
    windowed: null,
    generation: 0,
    controller: null,
  };

  // Read by the end-to-end tests and the benchmark.
  const stats = {
    framesShown: 0,
    loaded: 0,
    frames: 0,
    rate: 0,
    firstFrameMs: null,
    allLoadedMs: null,
    started: 0,
  };
  window.applianceViewer = { stats: stats, state: state, show: show };

  /* ---- Choosing what to show ---- */

  async function show(index) {
    if (index < 0 || index >= items.length) {
      return;
    }
    const generation = reset(index);
    const item = state.item;
    const signal = state.controller.signal;

    // The first frame is asked for at once, beside the instance's details.
    const hasPixels = item.kind === "image" || item.kind === "clip";
    const firstFrame = hasPixels ? loadFrame(0, generation) : null;
    let info;
    try {
      info = await fetchJson(item.info, signal);
    } catch (error) {
      return failed(error, generation);
    }
    if (generation !== state.generation) {
      return;
    }
    state.info = info;
    state.rate = info.frameRate || 25;
    stats.rate = state.rate;
    viewer.classList.toggle("is-gray", Boolean(info.grayscale));

    if (info.kind === "report") {
      return showReport(item, generation);
    }
    if (!firstFrame) {
      return showMessage("This object has no image to show.");
    }
    try {
      await firstFrame;
    } catch (error) {
      return failed(error, generation);
    }
    if (generation !== state.generation) {
      return;
    }
    fit();
    showFrame(0);
    stats.firstFrameMs = performance.now() - stats.started;
    if (state.frames.length > 1) {
      play();
      loadRest(generation);
    }
  }

  function reset(index) {
    if (state.controller) {
      state.controller.abort();
    }
    for (const bitmap of state.frames) {
      if (bitmap) {
        bitmap.close();
      }
    }
    state.generation += 1;
    state.controller = new AbortController();
    state.index = index;
    state.item = items[index];
    state.info = null;
    state.frames = new Array(state.item.frames).fill(null);
    state.loaded = 0;
    state.frame = 0;
    state.playing = false;
    state.window = null;
    state.values = null;
    state.windowed = null;
    Object.assign(stats, {
      framesShown: 0,
      loaded: 0,
      frames: state.item.frames,
      firstFrameMs: null,
      allLoadedMs: null,
      started: performance.now(),
    });

    viewer.classList.toggle("is-clip", state.item.kind === "clip");
    viewer.classList.remove("is-gray");
    reportBox.hidden = true;
    messageBox.hidden = true;
    canvas.hidden = false;
    scrubber.max = String(state.item.frames);
    scrubber.value = "1";
    playButton.textContent = "Play";
    progress();
    clear();
    markThumbnail(index);
    return state.generation;
  }

  function markThumbnail(index) {
    for (const button of document.querySelectorAll(".thumb")) {
      const current = Number(button.dataset.index) === index;
      button.classList.toggle("current", current);
      if (current) {
        button.scrollIntoView({ block: "nearest" });
      }
    }
  }

  /* ---- Fetching ---- */

  async function fetchChecked(url, signal) {
    const response = await fetch(url, { signal: signal, credentials: "same-origin" });
    if (response.redirected || response.status === 401 || response.status === 403) {
      // Logged out (idle time-out): the page itself goes to the login.
      window.location.reload();
      throw new Error("login needed");
    }
    if (!response.ok) {
      throw new Error("the server answered " + response.status);
    }
    return response;
  }

  async function fetchJson(url, signal) {
    return (await fetchChecked(url, signal)).json();
  }

  async function loadFrame(index, generation) {
    const url = state.item.frame + (index + 1);
    const response = await fetchChecked(url, state.controller.signal);
    const bitmap = await createImageBitmap(await response.blob());
    if (generation !== state.generation) {
      bitmap.close();
      return;
    }
    state.frames[index] = bitmap;
    state.loaded += 1;
    stats.loaded = state.loaded;
    if (state.loaded === state.frames.length) {
      stats.allLoadedMs = performance.now() - stats.started;
    }
    progress();
  }

  function loadRest(generation) {
    // In frame order, a few requests at a time, so playback rarely waits.
    let next = 1;
    async function worker() {
      while (generation === state.generation && next < state.frames.length) {
        const index = next;
        next += 1;
        try {
          await loadFrame(index, generation);
        } catch (error) {
          failed(error, generation);
          return;
        }
      }
    }
    for (let count = 0; count < FETCHES_AT_ONCE; count += 1) {
      worker();
    }
  }

  function failed(error, generation) {
    if (error.name === "AbortError" || generation !== state.generation) {
      return;
    }
    showMessage("This image could not be loaded (" + error.message + ").");
  }

  /* ---- Reports and messages ---- */

  async function showReport(item, generation) {
    let body;
    try {
      body = await fetchJson(item.report, state.controller.signal);
    } catch (error) {
      return failed(error, generation);
    }
    if (generation !== state.generation) {
      return;
    }
    reportBox.replaceChildren();
    for (const line of body.lines) {
      const paragraph = document.createElement("p");
      paragraph.textContent = line.text;
      paragraph.style.paddingLeft = line.depth * 18 + "px";
      if (line.heading) {
        paragraph.className = "heading";
      }
      reportBox.appendChild(paragraph);
    }
    canvas.hidden = true;
    reportBox.hidden = false;
    statusLine.textContent = "";
  }

  function showMessage(text) {
    messageBox.textContent = text;
    messageBox.hidden = false;
    canvas.hidden = true;
    statusLine.textContent = "";
  }

  /* ---- Drawing ---- */

  function resizeCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(stage.clientWidth * ratio);
    const height = Math.round(stage.clientHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      if (state.view.fitted) {
        fit();
      }
    }
  }

  function clear() {
    resizeCanvas();
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
  }

  function source() {
    if (state.windowed && state.values && state.values.frame === state.frame) {
      return state.windowed;
    }
    return state.frames[state.frame];
  }

  function draw() {
    clear();
    const image = source();
    if (!image) {
      return;
    }
    const ratio = window.devicePixelRatio || 1;
    const view = state.view;
    context.imageSmoothingEnabled = view.scale < 3;
    context.setTransform(view.scale * ratio, 0, 0, view.scale * ratio,
      view.x * ratio, view.y * ratio);
    context.drawImage(image, 0, 0);
    describe();
  }

  function imageSize() {
    const image = state.frames[state.frame] || state.frames.find(Boolean);
    if (image) {
      return { width: image.width, height: image.height };
    }
    const info = state.info || {};
    return { width: info.columns || 1, height: info.rows || 1 };
  }

  function fit() {
    const size = imageSize();
    const width = stage.clientWidth;
    const height = stage.clientHeight;
    const scale = Math.min(width / size.width, height / size.height) || 1;
    state.view = {
      scale: scale,
      x: (width - size.width * scale) / 2,
      y: (height - size.height * scale) / 2,
      fitted: true,
    };
  }

  function actualSize() {
    const size = imageSize();
    state.view = {
      scale: 1,
      x: (stage.clientWidth - size.width) / 2,
      y: (stage.clientHeight - size.height) / 2,
      fitted: false,
    };
    draw();
  }

  function zoom(factor, pointX, pointY) {
    const view = state.view;
    const x = pointX === undefined ? stage.clientWidth / 2 : pointX;
    const y = pointY === undefined ? stage.clientHeight / 2 : pointY;
    const scale = Math.min(Math.max(view.scale * factor, 0.05), 40);
    const applied = scale / view.scale;
    state.view = {
      scale: scale,
      x: x - (x - view.x) * applied,
      y: y - (y - view.y) * applied,
      fitted: false,
    };
    draw();
  }

  function describe() {
    const parts = [];
    if (state.frames.length > 1) {
      counter.textContent = (state.frame + 1) + " / " + state.frames.length;
      parts.push(state.rate.toFixed(state.rate % 1 ? 1 : 0) + " fps");
      if (state.speed !== 1) {
        parts.push(state.speed + "×");
      }
      if (state.loaded < state.frames.length) {
        parts.push("loading " + state.loaded + "/" + state.frames.length);
      }
    }
    if (state.window) {
      parts.push("W " + Math.round(state.window.width) +
        " L " + Math.round(state.window.center));
    }
    parts.push(Math.round(state.view.scale * 100) + "%");
    statusLine.textContent = parts.join(" · ");
  }

  function progress() {
    const total = state.frames.length || 1;
    const done = state.loaded >= total ? 0 : (100 * state.loaded) / total;
    progressBar.style.width = done + "%";
  }

  /* ---- Cine ---- */

  function showFrame(index) {
    state.frame = index;
    if (state.playing) {
      stats.framesShown += 1;
    }
    scrubber.value = String(index + 1);
    if (state.window) {
      windowFrame();
    }
    draw();
  }

  function play() {
    if (state.frames.length < 2) {
      return;
    }
    state.playing = true;
    state.anchorTime = performance.now();
    state.anchorFrame = state.frame;
    playButton.textContent = "Pause";
  }

  function pause() {
    state.playing = false;
    playButton.textContent = "Play";
    scrubber.value = String(state.frame + 1);
    describe();
  }

  function step(delta) {
    pause();
    const count = state.frames.length;
    const target = (state.frame + delta + count) % count;
    if (state.frames[target]) {
      showFrame(target);
    }
  }

  function goTo(index) {
    pause();
    if (state.frames[index]) {
      showFrame(index);
    }
  }

  function setSpeed(speed) {
    state.speed = speed;
    speedSelect.value = String(speed);
    state.anchorTime = performance.now();
    state.anchorFrame = state.frame;
    describe();
  }

  function changeSpeed(direction) {
    const position = SPEEDS.indexOf(state.speed);
    const next = SPEEDS[Math.min(Math.max(position + direction, 0), SPEEDS.length - 1)];
    setSpeed(next);
  }

  function tick(now) {
    const count = state.frames.length;
    if (state.playing && count > 1) {
      const period = 1000 / (state.rate * state.speed);
      const advance = Math.floor((now - state.anchorTime) / period);
      if (advance >= 1) {
        const target = (state.anchorFrame + advance) % count;
        if (state.frames[target]) {
          state.anchorFrame = target;
          state.anchorTime += advance * period;
          showFrame(target);
        } else {
          // Not loaded yet: hold this frame and restart the clock from here.
          state.anchorTime = now;
        }
      }
      if (now - state.anchorTime > 1000) {
        state.anchorTime = now;
      }
    }
    window.requestAnimationFrame(tick);
  }

  /* ---- Window/level (grayscale) ---- */

  async function startWindowing() {
    if (!state.info || !state.info.grayscale) {
      return false;
    }
    pause();
    if (!state.values || state.values.frame !== state.frame) {
      await loadValues(state.frame);
    }
    if (!state.window) {
      const values = state.values;
      state.window = state.info.window || {
        center: (values.minimum + values.maximum) / 2,
        width: Math.max(values.maximum - values.minimum, 1),
      };
    }
    return true;
  }

  async function loadValues(index) {
    const url = state.item.frame + (index + 1) + "/values";
    const response = await fetchChecked(url, state.controller.signal);
    const headers = response.headers;
    state.values = {
      frame: index,
      data: new Float32Array(await response.arrayBuffer()),
      rows: Number(headers.get("X-Rows")),
      columns: Number(headers.get("X-Columns")),
      minimum: Number(headers.get("X-Minimum")),
      maximum: Number(headers.get("X-Maximum")),
      invert: headers.get("X-Invert") === "1",
    };
  }

  function windowFrame() {
    // PS3.3 C.11.2.1.2.1, LINEAR, as the server renders it.
    const values = state.values;
    if (!values || values.frame !== state.frame || !state.window) {
      return;
    }
    const center = state.window.center - 0.5;
    const width = Math.max(state.window.width - 1, 1e-6);
    const low = center - width / 2;
    const high = center + width / 2;
    const image = new ImageData(values.columns, values.rows);
    const pixels = image.data;
    const data = values.data;
    for (let i = 0, j = 0; i < data.length; i += 1, j += 4) {
      const value = data[i];
      let gray = value <= low ? 0 : value > high ? 255 : ((value - center) / width + 0.5) * 255;
      if (values.invert) {
        gray = 255 - gray;
      }
      pixels[j] = gray;
      pixels[j + 1] = gray;
      pixels[j + 2] = gray;
      pixels[j + 3] = 255;
    }
    if (!state.windowed || state.windowed.width !== values.columns ||
        state.windowed.height !== values.rows) {
      state.windowed = document.createElement("canvas");
      state.windowed.width = values.columns;
      state.windowed.height = values.rows;
    }
    state.windowed.getContext("2d").putImageData(image, 0, 0);
  }

  function adjustWindow(dx, dy) {
    const values = state.values;
    const range = Math.max(values.maximum - values.minimum, 1);
    const sensitivity = range / Math.max(stage.clientWidth, 1);
    state.window = {
      center: state.window.center + dy * sensitivity,
      width: Math.max(state.window.width + dx * sensitivity, 1),
    };
    windowFrame();
    draw();
  }

  function resetView() {
    state.window = null;
    state.values = null;
    state.windowed = null;
    fit();
    draw();
  }

  /* ---- Mouse, wheel and keyboard ---- */

  let drag = null;

  canvas.addEventListener("contextmenu", function (event) {
    event.preventDefault();
  });

  canvas.addEventListener("pointerdown", async function (event) {
    const windowing = event.button === 2 || state.tool === "window";
    drag = { x: event.clientX, y: event.clientY, windowing: false, ready: !windowing };
    canvas.setPointerCapture(event.pointerId);
    if (windowing) {
      const current = drag;
      current.windowing = await startWindowing();
      current.ready = true;
    }
  });

  canvas.addEventListener("pointermove", function (event) {
    if (!drag || !drag.ready) {
      return;
    }
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    drag.x = event.clientX;
    drag.y = event.clientY;
    if (drag.windowing) {
      adjustWindow(dx, dy);
    } else {
      state.view.x += dx;
      state.view.y += dy;
      state.view.fitted = false;
      draw();
    }
  });

  canvas.addEventListener("pointerup", function () {
    drag = null;
  });

  canvas.addEventListener("dblclick", function () {
    fit();
    draw();
  });

  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    const box = canvas.getBoundingClientRect();
    zoom(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });

  function toggleWindowTool() {
    state.tool = state.tool === "window" ? "pan" : "window";
    canvas.classList.toggle("window-tool", state.tool === "window");
    const button = document.querySelector('[data-action="window"]');
    button.classList.toggle("active", state.tool === "window");
  }

  const actions = {
    previous: function () { show(state.index - 1); },
    next: function () { show(state.index + 1); },
    fit: function () { fit(); draw(); },
    actual: actualSize,
    "zoom-in": function () { zoom(ZOOM_STEP); },
    "zoom-out": function () { zoom(1 / ZOOM_STEP); },
    window: toggleWindowTool,
    reset: resetView,
    play: function () { if (state.playing) { pause(); } else { play(); } },
    "step-back": function () { step(-1); },
    "step-forward": function () { step(1); },
    help: function () { help.hidden = !help.hidden; },
  };

  document.getElementById("toolbar").addEventListener("click", function (event) {
    const button = event.target.closest("[data-action]");
    if (button && actions[button.dataset.action]) {
      // Keys go to the viewer, not to a focused button (Space would click it).
      button.blur();
      actions[button.dataset.action]();
    }
  });

  const keys = {
    ArrowUp: actions.previous,
    PageUp: actions.previous,
    ArrowDown: actions.next,
    PageDown: actions.next,
    ArrowLeft: actions["step-back"],
    ArrowRight: actions["step-forward"],
    " ": actions.play,
    Home: function () { goTo(0); },
    End: function () { goTo(state.frames.length - 1); },
    f: actions.fit,
    "1": actions.actual,
    "+": actions["zoom-in"],
    "=": actions["zoom-in"],
    "-": actions["zoom-out"],
    w: actions.window,
    r: actions.reset,
    "[": function () { changeSpeed(-1); },
    "]": function () { changeSpeed(1); },
    "?": actions.help,
  };

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (target.matches && target.matches("input[type=text], input:not([type]), textarea")) {
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const action = keys[event.key] || keys[event.key.toLowerCase()];
    if (action) {
      event.preventDefault();
      action();
    }
  });

  scrubber.addEventListener("input", function () {
    goTo(Number(scrubber.value) - 1);
  });

  speedSelect.addEventListener("change", function () {
    setSpeed(Number(speedSelect.value));
  });

  document.getElementById("thumbs").addEventListener("click", function (event) {
    const button = event.target.closest(".thumb");
    if (button) {
      show(Number(button.dataset.index));
    }
  });

  for (const kind of ["jpeg", "png"]) {
    const link = document.getElementById("download-" + kind);
    if (link) {
      link.addEventListener("click", function () {
        link.href = state.item[kind] + "?frame=" + (state.frame + 1);
      });
    }
  }

  new ResizeObserver(function () {
    resizeCanvas();
    draw();
  }).observe(stage);

  window.requestAnimationFrame(tick);
  if (items.length) {
    show(0);
  } else {
    showMessage("This study has no stored objects.");
  }
})();
