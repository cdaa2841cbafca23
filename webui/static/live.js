// Refresh the overview every few seconds without a full reload; the page works without this.
(function () {
  async function refresh() {
    try {
      const reply = await fetch(location.pathname, { headers: { Accept: "text/html" } });
      if (!reply.ok) return;
      const page = new DOMParser().parseFromString(await reply.text(), "text/html");
      for (const id of ["nodes", "tasks"]) {
        const fresh = page.getElementById(id);
        if (fresh) document.getElementById(id).replaceWith(fresh);
      }
    } catch (e) { /* the box may be restarting; try again next tick */ }
  }
  setInterval(refresh, 3000);
})();
