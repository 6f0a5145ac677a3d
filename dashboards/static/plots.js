// Draw every Plotly figure on the page from the JSON the server put beside it, and keep the
// live part of a page (data-live) fresh by fetching it again every data-every seconds.
"use strict";

function drawPlots(root) {
  for (const div of root.querySelectorAll(".plot[data-figure]")) {
    const source = document.getElementById(div.dataset.figure);
    if (!source) continue;
    const figure = JSON.parse(source.textContent);
    Plotly.react(div, figure.data, figure.layout, { responsive: true, displaylogo: false });
  }
}

function keepLive(section) {
  const every = 1000 * Number(section.dataset.every || 10);
  setInterval(async () => {
    if (document.hidden) return;
    const answer = await fetch(section.dataset.live, { credentials: "same-origin" });
    if (!answer.ok || answer.redirected) return;
    section.innerHTML = await answer.text();
    drawPlots(section);
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  drawPlots(document);
  for (const section of document.querySelectorAll("[data-live]")) keepLive(section);
});
