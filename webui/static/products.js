// The map of a task's orthophoto: its own tiles (served from the task's all.zip by this box) and its
// footprint, with no background map, so the page sends no request outside the passel.
// Without tiles in the zip, the preview picture is laid on the footprint instead.
(function () {
  "use strict";
  var EXTRA_ZOOM = 3; // how far past the finest tiles a responder may zoom (the tiles are stretched)

  function showMap(box) {
    var corners = JSON.parse(box.getAttribute("data-footprint"));
    var outline = L.polygon(corners, { color: "#d9480f", weight: 2, fill: false, interactive: false });
    var bounds = outline.getBounds();
    var tiles = box.getAttribute("data-tiles");
    var finest = parseInt(box.getAttribute("data-max-zoom"), 10) || 18;
    var map = L.map(box, { maxZoom: finest + EXTRA_ZOOM, zoomSnap: 0.5 });
    map.attributionControl.setPrefix("Leaflet");
    if (tiles) {
      L.tileLayer(tiles, {
        minNativeZoom: parseInt(box.getAttribute("data-min-zoom"), 10) || 0,
        maxNativeZoom: finest, maxZoom: finest + EXTRA_ZOOM, bounds: bounds.pad(0.05),
        attribution: "Orthophoto of this task"
      }).addTo(map);
    } else {
      L.imageOverlay(box.getAttribute("data-overlay"), bounds, { alt: "The orthophoto" }).addTo(map);
    }
    outline.addTo(map);
    map.fitBounds(bounds, { padding: [12, 12] });
    box.setAttribute("data-ready", "true");
  }

  function hideBrokenPreview() {
    var picture = document.getElementById("products-preview");
    if (!picture) return;
    picture.addEventListener("error", function () {
      var note = document.createElement("p");
      note.className = "muted";
      note.textContent = "No preview of the orthophoto could be drawn.";
      picture.parentNode.replaceWith(note);
    });
  }

  function start() {
    hideBrokenPreview();
    var box = document.getElementById("products-map");
    if (box && window.L) showMap(box);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
