// redirect-auditor's Datasette plugin: draw every [data-ra-dot] figure with Graphviz
// (the vendored viz.js, loaded only on pages that have one). Labels come from recorded
// traffic: Graphviz escapes them in its SVG, and errors are shown as text only.
const figures = [...document.querySelectorAll("[data-ra-dot]")];

async function draw() {
  if (!figures.length) return;
  const { instance } = await import(new URL("viz.js", import.meta.url).href);
  const viz = await instance();
  for (const figure of figures) {
    try {
      const svg = viz.renderSVGElement(figure.dataset.raDot);
      svg.classList.add("ra-svg");
      figure.replaceChildren(svg);
      figure.dataset.raDrawn = "yes";
    } catch (error) {
      figure.classList.add("ra-graph-error");
      figure.textContent = "Could not draw this picture: " + error.message;
      figure.dataset.raDrawn = "error";
    }
  }
}

draw()
  .catch((error) => {
    for (const figure of figures) {
      figure.classList.add("ra-graph-error");
      figure.textContent = "Could not load the graph engine: " + error.message;
    }
  })
  .finally(() => {
    document.documentElement.dataset.raPictures = "done";
  });
