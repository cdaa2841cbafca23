// The New job page: choose images, options and a name, then upload through NodeODM's chunked API
// (init, upload, commit: the calls PyODM makes) and open the task's page.
// The upload survives the field: a few files travel at once, a failed file is retried with a
// bounded backoff, a dropped network pauses the upload and resumes it, and a closed or reloaded
// page picks up the same upload when the same images are chosen again. Each time, the passel is
// asked which files it already holds (GET /task/{uuid}/files), so only what is missing is sent,
// and nothing is committed until every file has arrived.
(function () {
  "use strict";
  const PARALLEL = 5; // of the 6 connections a browser opens to one host, one is left for the page (3 measured 1.22x PyODM, 5: 1.15x)
  const MAX_ATTEMPTS = 6; // per file, not counting attempts made while the network was down
  const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
  const PROBE_MS = 2000; // while paused, how often to ask whether the passel answers again
  const ARRIVING_WAIT_MS = 75000; // a half-sent file is dropped by the passel after 60 s of silence
  const SPEED_WINDOW_MS = 5000;
  const DRAW_MS = 250;
  const STALL_MS = 30000; // a send with no progress for this long is cut and tried again (a Wi-Fi gone quiet)
  const SPLIT_FROM = 200; // below this, one node is quick enough: no split is proposed
  const COMFORT_MB_PER_IMAGE = 32; // memory for a part to run without strain (twice the scheduler's minimum)
  const MERGE_SHARE = 1.15; // a split job's merge adds about this much to the parallel time
  const STORE_PREFIX = "passel-upload:";
  const IMAGE = /\.(jpe?g|tiff?|png|dng|raw)$/i;

  const plan = JSON.parse(document.getElementById("plan").textContent);
  const $ = (id) => document.getElementById(id);
  let images = []; // [{file, name}] in upload-name order
  let gcp = null;
  let specs = []; // GET /options
  let info = null; // GET /info
  let current = null; // the upload under way

  // -- small helpers ---------------------------------------------------------------------------
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  function megabytes(bytes) { return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB"; }
  function size(bytes) { return bytes >= 1073741824 ? (bytes / 1073741824).toFixed(2) + " GB" : megabytes(bytes); }
  function duration(seconds) {
    if (!isFinite(seconds)) return "unknown";
    if (seconds < 90) return Math.max(1, Math.round(seconds)) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }
  function token() { const field = $("token"); return field ? field.value.trim() : ""; }
  function api(path) { return token() ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token()) : path; }
  async function getJson(path) {
    const reply = await fetch(api(path), { cache: "no-store" });
    return reply.json();
  }
  function say(text) { $("upload-state").textContent = text; }
  function problems(lines) {
    const box = $("problems");
    box.textContent = "";
    lines.forEach((line) => { const p = document.createElement("span"); p.textContent = line; box.append(p, document.createElement("br")); });
    box.hidden = lines.length === 0;
  }

  // -- choosing images ---------------------------------------------------------------------------
  function uploadNames(files) {
    // Files from several folders may share a name; like NodeODM, the later one becomes name_.ext.
    // Decided here, in a fixed order, so a resumed upload finds each file under the same name.
    const where = (f) => f.webkitRelativePath || f.droppedPath || f.name;
    const sorted = files.slice().sort((a, b) => where(a).localeCompare(where(b)));
    const taken = new Set();
    return sorted.map((file) => {
      let name = file.name;
      while (taken.has(name)) { const dot = name.lastIndexOf("."); name = dot > 0 ? name.slice(0, dot) + "_" + name.slice(dot) : name + "_"; }
      taken.add(name);
      return { file: file, name: name };
    });
  }
  function choose(files) {
    const kept = files.filter((f) => IMAGE.test(f.name));
    images = uploadNames(kept);
    const skipped = files.length - kept.length;
    $("chosen").textContent = images.length ? images.length + " images chosen" + (skipped ? " (" + skipped + " other files left out)" : "") + "." : "No images among the chosen files.";
    refresh();
  }
  async function entries(entry) { // a dropped folder, read in full
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      file.droppedPath = entry.fullPath; // a dropped folder's files have no webkitRelativePath
      return [file];
    }
    const reader = entry.createReader();
    let all = [], batch;
    do {
      batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      for (const child of batch) all = all.concat(await entries(child));
    } while (batch.length);
    return all;
  }
  function setupPicking() {
    $("pick-files").addEventListener("change", (e) => choose(Array.from(e.target.files)));
    $("pick-folder").addEventListener("change", (e) => choose(Array.from(e.target.files)));
    $("pick-gcp").addEventListener("change", (e) => { gcp = e.target.files[0] || null; refresh(); });
    const drop = $("drop");
    ["dragenter", "dragover"].forEach((kind) => drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach((kind) => drop.addEventListener(kind, () => drop.classList.remove("over")));
    drop.addEventListener("drop", async (e) => {
      e.preventDefault();
      const items = Array.from(e.dataTransfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
      let files = [];
      if (items.length) for (const entry of items) files = files.concat(await entries(entry));
      else files = Array.from(e.dataTransfer.files);
      choose(files);
    });
  }

  // -- options ------------------------------------------------------------------------------------
  // The same rules as the passel's own check (appliance/nodeodm/options.py), so a mistake is shown
  // here, next to its field, before anything is uploaded; the passel checks again at init.
  function convert(spec, raw) {
    const text = String(raw).trim();
    if (spec.type === "bool") {
      if (raw === true || text === "true" || text === "1") return true;
      if (raw === false || text === "false" || text === "0") return false;
      throw new Error("must be true or false");
    }
    if (spec.type === "int" || spec.type === "float") {
      const number = typeof raw === "number" ? raw : (text === "" ? NaN : Number(text));
      if (!isFinite(number)) throw new Error("must be a number");
      if (spec.type === "int" && !Number.isInteger(number)) throw new Error("must be a whole number");
      return number;
    }
    return typeof raw === "string" ? raw : JSON.stringify(raw);
  }
  function checkDomain(domain, value) {
    if (Array.isArray(domain)) { if (!domain.includes(value)) throw new Error("must be one of " + domain.join(", ")); return; }
    let m;
    if ((m = /^(positive |negative )?(integer|float)$/.exec(domain))) {
      if (m[1] === "positive " && value < 0) throw new Error("must be 0 or more");
      if (m[1] === "negative " && value > 0) throw new Error("must be 0 or less");
    } else if (domain === "percent") {
      if (value < 0 || value > 100) throw new Error("must be between 0 and 100");
    } else if ((m = /^(float|integer): ([-+.\d]+) <= x <= ([-+.\d]+)$/.exec(domain))) {
      if (value < Number(m[2]) || value > Number(m[3])) throw new Error("must be between " + m[2] + " and " + m[3]);
    } else if ((m = /^(float|integer) (>=|>|<|<=) ([-+.\d]+)$/.exec(domain))) {
      const bound = Number(m[3]);
      const ok = { ">=": value >= bound, ">": value > bound, "<": value < bound, "<=": value <= bound }[m[2]];
      if (!ok) throw new Error("must be " + m[2] + " " + m[3]);
    } else if (domain === "json") {
      try { JSON.parse(value); } catch (err) { throw new Error("must be valid JSON"); }
    }
  }
  function field(spec) {
    const wrap = document.createElement("div");
    wrap.className = "option";
    const label = document.createElement("label");
    label.textContent = spec.name;
    let input;
    if (Array.isArray(spec.domain) || spec.type === "bool") {
      input = document.createElement("select");
      const choices = spec.type === "bool" ? ["true", "false"] : spec.domain;
      input.append(new Option("default (" + spec.value + ")", ""));
      choices.forEach((c) => input.append(new Option(c, c)));
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.placeholder = "default: " + (spec.value === "" ? "none" : spec.value);
    }
    input.dataset.option = spec.name;
    label.append(input);
    const help = document.createElement("span");
    help.className = "help";
    help.textContent = spec.help + (spec.domain && !Array.isArray(spec.domain) ? " (" + spec.domain + ")" : "");
    const bad = document.createElement("span");
    bad.className = "bad";
    bad.setAttribute("role", "alert");
    wrap.append(label, help, bad);
    input.addEventListener("change", refresh);
    return wrap;
  }
  async function loadOptions() {
    try {
      const [options, node] = await Promise.all([getJson("/options"), getJson("/info")]);
      if (!Array.isArray(options)) throw new Error(options.error || "no options");
      specs = options;
      info = node;
    } catch (err) {
      $("options").textContent = "The options could not be read (" + err.message + ")" + ($("token") ? "; check the API token." : ".");
      return;
    }
    const list = $("options");
    list.textContent = "";
    specs.forEach((spec) => list.append(field(spec)));
    refresh();
  }
  function chosenOptions() {
    // The preset, then the split, then every advanced field that was filled in (which wins).
    const byName = new Map();
    const preset = document.querySelector("input[name=preset]:checked");
    (plan.presets[preset ? preset.value : "standard"] || []).forEach((o) => byName.set(o.name, o.value));
    if (!$("split-box").hidden && $("split-on").checked) {
      byName.set("split", $("split-size").value);
      byName.set("split-overlap", $("split-overlap").value);
      byName.set("sm-cluster", plan.smCluster);
    }
    document.querySelectorAll("[data-option]").forEach((input) => { if (input.value.trim() !== "") byName.set(input.dataset.option, input.value); });
    const errors = [], options = [];
    const known = new Map(specs.map((s) => [s.name, s]));
    byName.forEach((raw, name) => {
      const spec = known.get(name);
      const input = document.querySelector("[data-option='" + name + "']");
      const bad = input ? input.closest(".option").querySelector(".bad") : null;
      if (bad) { bad.textContent = ""; input.removeAttribute("aria-invalid"); }
      if (!spec) return; // the nodes do not know it: left out, as the passel would
      try {
        const value = convert(spec, raw);
        checkDomain(spec.domain, value);
        options.push({ name: name, value: value });
      } catch (err) {
        errors.push(name + ": " + err.message);
        if (bad) { bad.textContent = err.message; input.setAttribute("aria-invalid", "true"); }
      }
    });
    return { options: options, errors: errors };
  }

  // -- the plan: split and expected time ---------------------------------------------------------
  function capacity(node) {
    const byMemory = node.memoryMb ? Math.floor(node.memoryMb / COMFORT_MB_PER_IMAGE) : Infinity;
    return Math.min(node.maxImages == null ? Infinity : node.maxImages, byMemory);
  }
  function proposeSplit(count) {
    const nodes = plan.nodes;
    if (!nodes.length || count < SPLIT_FROM) return null;
    const comfortable = Math.max.apply(null, nodes.map(capacity));
    if (nodes.length < 2 && count <= comfortable) return null;
    const per = Math.min(Math.ceil(count / Math.max(2, nodes.length)), Math.min.apply(null, nodes.map(capacity)));
    const parts = Math.ceil(count / per);
    const why = count > comfortable
      ? count + " images are more than one node handles comfortably"
      : count + " images on " + nodes.length + " nodes finish sooner in parallel";
    return { size: Math.max(1, per), text: why + ": split into about " + parts + " parts of " + per +
      " images, which overlap by the distance below so they merge cleanly." };
  }
  function expectedSeconds(count, split) {
    const nodes = plan.nodes.filter((n) => n.msPerImage > 0 && (n.maxImages == null || n.maxImages >= count));
    if (!nodes.length || !count) return NaN;
    if (split) { // the parts run side by side on every node, then merge
      const rate = plan.nodes.reduce((sum, n) => sum + (n.msPerImage > 0 ? 1 / n.msPerImage : 0), 0);
      return count / rate * MERGE_SHARE / 1000;
    }
    return Math.min.apply(null, nodes.map((n) => n.msPerImage * count)) / 1000;
  }
  function refresh() {
    const count = images.length;
    const split = proposeSplit(count);
    const box = $("split-box");
    if (split && box.hidden) $("split-size").value = split.size;
    box.hidden = !split;
    $("split-why").textContent = split ? split.text : "";
    const chosen = chosenOptions();
    const lines = chosen.errors.slice();
    const largest = info && info.maxImages;
    if (largest != null && count > largest) lines.push(count + " images, but no node of this passel takes more than " + largest + ".");
    if (!plan.nodes.length && count) lines.push("No node is online to run the job; it will wait until one is.");
    const bytes = images.reduce((sum, i) => sum + i.file.size, 0) + (gcp ? gcp.size : 0);
    const splitting = split && $("split-on").checked;
    $("summary").textContent = count
      ? count + " images, " + size(bytes) + (gcp ? ", with ground control points" : "") + (splitting ? ", in parts" : "") +
        ". Expected processing time: about " + duration(expectedSeconds(count, splitting)) +
        (plan.nodes.length ? ", from this passel's learned speeds." : ".")
      : "Choose images to see how long the job should take.";
    problems(lines);
    $("start").disabled = !count || chosen.errors.length > 0 || (largest != null && count > largest) || !specs.length;
  }

  // -- the upload ---------------------------------------------------------------------------------
  function fingerprint(files) {
    // The same images chosen again: the same names and sizes, whatever order the browser lists them in.
    const text = files.map((f) => f.name + "\u0000" + f.file.size).sort().join("\u0001");
    let h1 = 0x811c9dc5, h2 = 0;
    for (let i = 0; i < text.length; i++) {
      h1 = Math.imul(h1 ^ text.charCodeAt(i), 16777619) >>> 0;
      h2 = (Math.imul(h2, 31) + text.charCodeAt(i)) >>> 0;
    }
    return files.length + "-" + h1.toString(16) + h2.toString(16);
  }

  class Upload {
    constructor(files, fields) {
      this.files = files; // [{file, name}]
      this.fields = fields;
      this.key = STORE_PREFIX + fingerprint(files);
      this.total = files.reduce((sum, f) => sum + f.file.size, 0);
      this.done = new Set(); // names the passel holds whole
      this.inFlight = new Map(); // name -> {xhr, loaded}
      this.paused = false;
      this.samples = [];
      this.failed = null;
      this.attempts = new Map(); // name -> failed sends, those made while the network was down aside
      this.dropped = new Set(); // names whose connection broke in this round
      this.outage = false; // whether the passel stopped answering since the last round
    }
    get sentBytes() {
      let bytes = 0;
      this.files.forEach((f) => { if (this.done.has(f.name)) bytes += f.file.size; });
      this.inFlight.forEach((flight) => { bytes += flight.loaded; });
      return bytes;
    }
    async run() {
      this.uuid = await this.resumeOrInit();
      if (!this.uuid) return;
      const watch = setInterval(() => this.cutStalled(), 1000);
      try {
        while (true) {
          await this.sendMissing();
          if (this.failed) throw this.failed;
          this.outage = false;
          const held = await this.held(); // nothing is committed until every file has arrived
          if (!this.outage) this.dropped.forEach((name) => this.count(name)); // the passel answered at once: not the network
          this.dropped.clear();
          if (this.failed) throw this.failed;
          this.resume();
          if (held === "gone") { this.forget(); throw new Error("The passel no longer has this upload; choose the images again to start afresh."); }
          if (this.files.every((f) => this.done.has(f.name))) break;
        }
      } finally {
        clearInterval(watch);
      }
      say("All " + this.files.length + " files arrived; starting the job…");
      const reply = await this.post("/task/new/commit/" + this.uuid, new FormData());
      // a commit whose answer was lost and was sent again is refused: the task is there all the same
      if (reply.error && await this.held() !== "committed") throw new Error(reply.error);
      this.forget();
      window.location.assign("/ui/tasks/" + this.uuid);
    }
    forget() { localStorage.removeItem(this.key); }
    async resumeOrInit() {
      const saved = localStorage.getItem(this.key);
      if (saved) {
        this.uuid = saved;
        const held = await this.held();
        if (held === "committed") { this.forget(); window.location.assign("/ui/tasks/" + saved); return null; }
        if (held === "held") { say("Resuming the earlier upload of these images: " + this.done.size + " of " + this.files.length + " files are already on the passel."); return saved; }
        this.forget(); // gone: start afresh
      }
      const form = new FormData();
      Object.keys(this.fields).forEach((k) => form.append(k, this.fields[k]));
      const reply = await this.post("/task/new/init", form);
      if (reply.error) throw new Error(reply.error);
      localStorage.setItem(this.key, reply.uuid);
      return reply.uuid;
    }
    async held() {
      // Which files the passel holds; waits while one we still need is half-arrived from a dropped send.
      const deadline = Date.now() + ARRIVING_WAIT_MS;
      while (true) {
        const reply = await this.until(() => getJson("/task/" + this.uuid + "/files"));
        if (reply.error) return "gone";
        if (reply.committed) return "committed";
        const sizes = new Map(reply.files.map((f) => [f.name, f.size]));
        this.files.forEach((f) => { if (sizes.get(f.name) === f.file.size) this.done.add(f.name); });
        const waiting = reply.arriving.filter((name) => !this.done.has(name) && !this.inFlight.has(name));
        if (!waiting.length || Date.now() > deadline) return "held";
        say("Waiting for the passel to drop " + waiting.length + " half-sent files before sending them again…");
        await sleep(PROBE_MS);
      }
    }
    async until(call) {
      // A call that is repeated while the network is down: the upload pauses, then goes on.
      while (true) {
        if (navigator.onLine) {
          try { return await call(); } catch (err) { /* no answer: paused below */ }
        }
        this.outage = true;
        this.pause();
        await sleep(PROBE_MS);
      }
    }
    pause() {
      if (this.paused) return;
      this.paused = true;
      this.inFlight.forEach((flight) => flight.xhr.abort());
      say("Paused: the passel cannot be reached. The upload goes on by itself when the network is back (" +
        this.done.size + " of " + this.files.length + " files are there).");
    }
    async sendMissing() {
      // Until every missing file is sent, a file is refused, or the network drops (then the caller
      // asks the passel what it holds once it answers again, and calls this for the rest).
      const queue = this.files.filter((f) => !this.done.has(f.name));
      const worker = async () => {
        while (queue.length && !this.failed && !this.paused) {
          const item = queue.shift();
          // a send that failed may have arrived all the same (only its answer was lost): ask first
          if (this.attempts.has(item.name) && (await this.held(), this.done.has(item.name))) continue;
          const outcome = await this.sendOne(item);
          if (outcome === true || outcome === "fatal") continue;
          if (outcome === "paused") return;
          if (outcome === "dropped") { this.dropped.add(item.name); this.pause(); return; }
          const n = this.count(item.name);
          if (this.failed) return;
          await sleep(BACKOFF_MS[Math.min(n - 1, BACKOFF_MS.length - 1)]);
          queue.push(item);
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
    }
    count(name) {
      // One more failed send of a file; past MAX_ATTEMPTS the upload stops and says which file.
      const n = (this.attempts.get(name) || 0) + 1;
      this.attempts.set(name, n);
      if (n >= MAX_ATTEMPTS) this.failed = new Error(name + " could not be sent after " + n + " tries; check the connection and press the button again.");
      return n;
    }
    resume() {
      if (!this.paused) return;
      this.paused = false;
      say("The network is back: sending the files that are missing.");
    }
    sendOne(item) {
      // true: it arrived; "retry": the passel answered with an error, or the send stalled; "dropped": the
      // connection broke; "paused": cut because the upload paused; "fatal": the passel refuses the file.
      return new Promise((resolve) => {
        if (this.paused || !navigator.onLine) { this.pause(); resolve("paused"); return; }
        const xhr = new XMLHttpRequest();
        const flight = { xhr: xhr, loaded: 0, moved: Date.now(), stalled: false };
        this.inFlight.set(item.name, flight);
        const end = (outcome) => { this.inFlight.delete(item.name); this.tick(); resolve(outcome); };
        xhr.open("POST", api("/task/new/upload/" + this.uuid));
        xhr.responseType = "json";
        xhr.upload.onprogress = (e) => { flight.loaded = e.loaded * item.file.size / (e.total || 1); flight.moved = Date.now(); this.tick(); };
        xhr.onload = () => {
          const reply = xhr.response || {};
          if (xhr.status === 200 && reply.success) { this.done.add(item.name); end(true); return; }
          if (reply.noRetry) { this.failed = new Error(item.name + ": " + (reply.error || "refused")); end("fatal"); return; }
          end("retry");
        };
        xhr.onerror = () => end(this.paused ? "paused" : "dropped");
        xhr.onabort = () => end(flight.stalled ? "retry" : "paused");
        const form = new FormData();
        form.append("images", item.file, item.name);
        xhr.send(form);
      });
    }
    cutStalled() {
      this.inFlight.forEach((flight) => {
        if (Date.now() - flight.moved > STALL_MS) { flight.stalled = true; flight.xhr.abort(); }
      });
    }
    tick() {
      // Drawn a few times a second at most: progress events come far more often, and a phone's CPU
      // is better spent sending.
      const now = Date.now();
      if (now - (this.drawn || 0) < DRAW_MS) return;
      this.drawn = now;
      const sent = this.sentBytes;
      this.samples.push([now, sent]);
      while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) this.samples.shift();
      const [t0, b0] = this.samples[0];
      const rate = now > t0 ? (sent - b0) / ((now - t0) / 1000) : 0;
      $("bar").value = this.total ? sent / this.total : 0;
      if (this.paused) return;
      say(size(sent) + " of " + size(this.total) + " sent (" + this.done.size + " of " + this.files.length + " files) · " +
        (rate / 1048576).toFixed(1) + " MB/s · " + (rate > 0 ? duration((this.total - sent) / rate) + " left" : "measuring…"));
    }
    post(path, form) {
      return this.until(async () => {
        const reply = await fetch(api(path), { method: "POST", body: form });
        return reply.json();
      });
    }
  }

  async function start(event) {
    event.preventDefault();
    const chosen = chosenOptions();
    if (chosen.errors.length || !images.length) { refresh(); return; }
    const files = images.slice();
    if (gcp) files.push({ file: gcp, name: "gcp_list.txt" });
    const name = $("job-name").value.trim();
    const fields = { name: name, options: JSON.stringify(chosen.options) };
    $("start").disabled = true;
    $("upload").hidden = false;
    problems([]);
    current = new Upload(files, fields);
    try {
      await current.run();
    } catch (err) {
      let message = err.message;
      try { // the passel's option check answers a JSON list of {name, error}
        const list = JSON.parse(message);
        if (Array.isArray(list)) message = list.map((e) => e.name + ": " + e.error).join("; ");
      } catch (notJson) { /* a sentence already */ }
      problems([message]);
      say("Stopped. Press the button again to go on: the files already sent stay on the passel.");
      $("start").disabled = false;
    }
  }

  setupPicking();
  document.querySelectorAll("input[name=preset], #split-on, #split-size, #split-overlap").forEach((el) => el.addEventListener("change", refresh));
  if ($("token")) $("token").addEventListener("change", loadOptions);
  $("new-job").addEventListener("submit", start);
  window.addEventListener("offline", () => { if (current) current.pause(); });
  window.addEventListener("online", () => { if (current && current.paused) say("The network is back: checking what the passel holds…"); });
  loadOptions();
})();
