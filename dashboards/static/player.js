// Camera players: the cursor on the timeline under each video follows the step on screen
// (one frame per step: step = time x fps), a click on the timeline seeks to that step, and a
// plot named by data-plot gets a vertical line at the same step. "Play together" starts the
// videos of a pair (a candidate and its champion on the same seed) from the same frame.
"use strict";

function setUpPlayer(figure) {
  const video = figure.querySelector("video");
  const timeline = figure.querySelector(".timeline");
  const cursor = figure.querySelector(".cursor");
  const shown = figure.querySelector("output.step");
  const steps = Number(figure.dataset.steps);
  const fps = Number(figure.dataset.fps);
  const plot = figure.dataset.plot ? document.getElementById(figure.dataset.plot) : null;
  let baseShapes = null;
  let last = -1;

  function show() {
    const step = Math.min(steps - 1, Math.floor(video.currentTime * fps + 1e-6));
    if (step !== last) {
      last = step;
      cursor.style.left = `${(100 * (step + 0.5)) / steps}%`;
      shown.textContent = String(step);
      timeline.setAttribute("aria-valuenow", String(step));
      figure.dataset.step = String(step);
      if (plot && plot.layout && window.Plotly) {
        if (baseShapes === null) baseShapes = (plot.layout.shapes || []).slice();
        const line = { type: "line", xref: "x", yref: "paper", x0: step, x1: step, y0: 0, y1: 1,
                       line: { color: "#222", width: 1 } };
        Plotly.relayout(plot, { shapes: [...baseShapes, line] });
      }
    }
    if (!video.paused && !video.ended) requestAnimationFrame(show);
  }

  video.addEventListener("play", () => requestAnimationFrame(show));
  video.addEventListener("seeked", show);
  video.addEventListener("timeupdate", show);
  timeline.addEventListener("click", (event) => {
    const box = timeline.getBoundingClientRect();
    const step = Math.floor((steps * (event.clientX - box.left)) / box.width);
    video.currentTime = (Math.max(0, Math.min(steps - 1, step)) + 0.5) / fps;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const figure of document.querySelectorAll("figure.player")) setUpPlayer(figure);
  for (const button of document.querySelectorAll("button.play-together")) {
    button.addEventListener("click", () => {
      const videos = button.closest(".pair").querySelectorAll("video");
      for (const video of videos) video.currentTime = 0;
      for (const video of videos) video.play();
    });
  }
});
