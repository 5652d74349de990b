// Kinema's page: the same OpenAI-style Videos API an SDK calls, driven with fetch and FormData.
"use strict";

const POLL_MS = 300;
const GALLERY_POLL_MS = 1500; // while a video in the gallery is queued or in progress
const GALLERY_RETRY_MS = 3000; // while the server cannot be reached
const GALLERY_PAGE = 48;
const FOLLOWING = "kinema-following"; // sessionStorage: this tab's video, followed until it is shown
const $ = (id) => document.getElementById(id);
const form = $("create-form");
const keyInput = $("api-key");
const mediaCache = new Map(); // "id/variant" -> object URL, only used when an API key is set
let followRun = 0; // raised when the key changes: what was followed or fetched for the old key is dropped

keyInput.value = localStorage.getItem("kinema-api-key") || "";

// Another key is another user: nothing of the old key's stays on screen, and its video is no longer followed.
function keyChanged() {
  followRun += 1;
  $("generate").disabled = false; // the old key's follow no longer holds it
  for (const url of mediaCache.values()) URL.revokeObjectURL(url); // fetched with the old key
  mediaCache.clear();
  clearPlayer();
  hideProgress();
  clearErrors();
  gallerySignature = "";
  $("gallery").replaceChildren();
  fillChoices([]);
  refreshGallery(); // back on the key that made this tab's video, the listing follows it again (resume)
}
keyInput.addEventListener("change", () => {
  localStorage.setItem("kinema-api-key", keyInput.value.trim());
  keyChanged();
});
$("forget-key").addEventListener("click", () => {
  localStorage.removeItem("kinema-api-key");
  keyInput.value = "";
  keyChanged();
});

// The key as last given (Enter, leaving the box, Forget), not as it is being typed or pasted: a half-changed key
// would make the video being followed answer 404, as if it were deleted.
const savedKey = () => localStorage.getItem("kinema-api-key") || "";

function authHeaders() {
  const key = savedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// fetch, with a server that cannot be reached named as such (fetch itself says only "Failed to fetch").
async function request(url, options) {
  try {
    return await fetch(url, options);
  } catch {
    throw Object.assign(new Error(`can't reach the server at ${location.origin}; check that kinema serve is running`),
                        { unreachable: true });
  }
}

async function api(path, options = {}) {
  const response = await request(`/v1${path}`, { ...options, headers: { ...authHeaders(), ...options.headers } });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    document.querySelector("details.key").open = true; // where the key goes
    keyInput.focus();
    throw Object.assign(new Error(savedKey() ? "this API key is not one the server accepts: check the API "
      + "key box at the top" : "this server needs an API key: enter it in the API key box at the top"), { status: 401 });
  }
  const message = body.error?.message || `${response.status} ${response.statusText}`;
  if (!response.ok) throw Object.assign(new Error(message), { status: response.status, param: body.error?.param });
  return body;
}

function contentPath(id, variant) {
  return `/v1/videos/${id}/content?variant=${variant}`;
}

// A <video> or <img> cannot send an Authorization header: with a key, media is fetched into an object URL.
async function mediaUrl(id, variant) {
  if (!savedKey()) return contentPath(id, variant);
  const cacheKey = `${id}/${variant}`;
  if (!mediaCache.has(cacheKey)) {
    const response = await request(contentPath(id, variant), { headers: authHeaders() });
    if (!response.ok) throw new Error(`download failed: ${response.status}`);
    mediaCache.set(cacheKey, URL.createObjectURL(await response.blob()));
  }
  return mediaCache.get(cacheKey);
}

// ---- composing ------------------------------------------------------------------------------

function currentMode() {
  return form.querySelector('input[name="mode"]:checked').value;
}

const SECONDS_LABEL = { extend: "Add", blend: "Bridge", storyboard: "Whole video" };

form.addEventListener("change", (event) => {
  if (event.target.name !== "mode") return;
  clearErrors(); // they were about the other mode's fields
  const mode = currentMode();
  form.dataset.mode = mode;
  $("seconds-label").textContent = SECONDS_LABEL[mode] || "Duration";
  $("prompt").required = mode !== "storyboard"; // a storyboard's prompts are its lines
  offerStill(mode);
});

// A still is one frame: modes that must make new frames (or, in a storyboard, several moments) cannot give one.
const NO_STILL = new Set(["extend", "loop", "blend", "storyboard"]);
function offerStill(mode) {
  const still = $("seconds").querySelector('option[value="0"]');
  still.disabled = still.hidden = NO_STILL.has(mode);
  if (still.disabled && still.selected) $("seconds").value = "1";
}

// A prompt over the API's limit is named with its length, not cut short as maxlength would cut a paste. Lengths
// count characters as the server does (code points, not UTF-16 units).
const charCount = (text) => [...text].length;
const overLimit = (text, max) =>
  (charCount(text) > max ? `${charCount(text)} characters; the limit is ${max}, so shorten it` : "");

// The page's own words for a value it cannot send, naming the format and range (the browser's stock messages name
// neither). Set as the field's custom validity, so validationMessage is always one of these.
function problemOf(field) {
  field.setCustomValidity(""); // the built-in checks, read without the last message over them
  const max = Number(field.dataset.maxChars); // a storyboard's limit is per line: storyboard()
  const tooLong = max && field.id !== "storyboard" ? overLimit(field.value, max) : "";
  if (tooLong || field.validity.valid) return tooLong;
  if (field.validity.valueMissing) return field.dataset.missing || "fill this in";
  if (field.dataset.format) return field.dataset.format;
  if (field.type !== "number") return field.validationMessage;
  return `${field.step === "any" ? "a number" : "a whole number"} from ${field.min} to ${field.max}`;
}
function checkField(field) {
  field.setCustomValidity(problemOf(field));
  return field.checkValidity();
}

// ---- errors, named beside the field they are about ----------------------------------------------

// The API's field names -> the page's fields, so a value the server refuses is marked where it was typed.
const FIELD_OF = {
  prompt: "prompt", negative_prompt: "negative-prompt", seed: "seed", steps: "steps", guidance: "guidance",
  fps: "fps", sampler: "sampler", cache: "cache", noise_correlation: "noise-correlation", noise_drift: "noise-drift",
  window_camera: "window-camera", expand: "expand", size: "size", seconds: "seconds", input_reference: "image",
  strength: "strength",
  segments: "storyboard",
};
// A clip's error is about the mode's own clip fields: its finished-video choice, or the file beside it (CLIP_OF).
const CLIP_CHOICE = {
  extend: { video: "extend-source" }, remix: { video: "remix-source", video_id: "remix-source" },
  blend: { video: "blend-from", connect_to: "blend-to" },
};
function fieldOfParam(param, mode) {
  const choice = CLIP_CHOICE[mode]?.[param];
  if (choice) return $(CLIP_OF[choice]).files.length ? CLIP_OF[choice] : choice; // the file was sent if one was chosen
  return FIELD_OF[param] || "";
}
const fieldError = (id, message) => Object.assign(new Error(message), { field: id });
// Notes name the API's fields ("input_reference: resized ..."); the page names what the user sees. The inputs'
// fields depend on the mode, so they have names of their own here.
const NOTE_LABEL = { image: "Start image", video: "The source video", video_b: "The video to end on",
                     connect_to: "The video to end on" };
const labelOf = (field) =>
  field.dataset.label || field.closest("label")?.firstChild?.textContent?.trim() || field.name || field.id;

function clearErrors() {
  $("form-error").textContent = "";
  for (const note of form.querySelectorAll(".field-error")) note.remove();
  for (const field of form.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    field.removeAttribute("aria-describedby");
  }
}

function noteText(note) {
  const [, param, rest] = note.match(/^([a-z_]+): (.*)$/s) || [];
  const label = NOTE_LABEL[param] || (FIELD_OF[param] && labelOf($(FIELD_OF[param])));
  return label ? `${label}: ${rest}` : note;
}

// A message about a field goes beside it (opened, focused and scrolled to), once; under the Generate button only a
// pointer to it, since on a phone the button may be a screen away from the field. Any other message goes there.
function showError(field, message) {
  if (!field || !isShown(field)) {
    $("form-error").textContent = message;
    return;
  }
  $("form-error").textContent = `see the ${labelOf(field).replace(/^the /i, "")} field`;
  field.closest("details")?.setAttribute("open", "");
  const note = Object.assign(document.createElement("span"), { id: `${field.id}-error`, className: "field-error",
                                                               textContent: message });
  field.after(note);
  field.setAttribute("aria-invalid", "true");
  field.setAttribute("aria-describedby", note.id);
  field.focus();
}

form.addEventListener("input", (event) => { // a corrected field loses its note
  $(`${event.target.id}-error`)?.remove();
  event.target.removeAttribute("aria-invalid");
  checkField(event.target); // its validity follows what is typed, as checkValidity() is read anywhere
});

// Fields of other modes are not sent, so they are not checked either.
function isShown(field) {
  const only = field.closest(".mode-only");
  return !only || only.dataset.mode.split(" ").includes(currentMode());
}

function chosen(id, what) {
  const value = $(id).value;
  if (!value) throw fieldError(id, `choose a finished video ${what}, or a clip from this computer`);
  return value;
}

// The chosen file of a file field, refused before it is uploaded when it is over the server's limit.
function chosenFile(id, what) {
  const file = $(id).files[0];
  const limit = Number($(id).dataset.maxBytes);
  if (file && file.size > limit) {
    throw fieldError(id, `${what} is ${(file.size / 2 ** 20).toFixed(0)} MiB; the limit is ${limit / 2 ** 20} MiB, `
      + "so choose a smaller file");
  }
  return file || null;
}

// A video the API takes as an upload or as a finished video's id (field[id]): a chosen file wins.
function appendVideo(data, name, fileId, selectId, what) {
  const file = chosenFile(fileId, `the clip ${what}`);
  if (file) data.append(name, file);
  else data.append(`${name}[id]`, chosen(selectId, what));
}

// "0: a red ball\n2: a blue ball" -> [{start: 0, prompt: "a red ball"}, {start: 2, prompt: "a blue ball"}]
function storyboard() {
  const lines = $("storyboard").value.split("\n").map((line) => line.trim()).filter(Boolean);
  const fail = (message) => { throw fieldError("storyboard", message); };
  if (!lines.length) fail('write the storyboard: a line for each moment, e.g. "2: the ball turns blue"');
  const end = Number($("seconds").value);
  const segments = lines.map((line, i) => {
    const match = line.match(/^(\d+(?:\.\d+)?)\s*s?\s*:\s*(\S.*)$/);
    if (!match) fail(`storyboard line ${i + 1}: write it as "seconds: prompt", e.g. "2: the ball turns blue"`);
    const tooLong = overLimit(match[2], Number($("storyboard").dataset.maxChars));
    if (tooLong) fail(`storyboard line ${i + 1}: its prompt is ${tooLong}`);
    return { start: Number(match[1]), prompt: match[2] };
  });
  segments.forEach((segment, i) => {
    if (i && segment.start <= segments[i - 1].start) {
      fail(`storyboard line ${i + 1}: ${segment.start} s is not after line ${i}'s ${segments[i - 1].start} s;`
        + " put the lines in time order");
    }
    if (segment.start >= end) {
      fail(`storyboard line ${i + 1}: ${segment.start} s is at or after the video's end (${end} s); choose a longer `
        + "Whole video or an earlier time");
    }
  });
  return segments;
}

// [API path, form data] for the chosen mode; every mode is one call of the Videos API.
function requestFor(mode) {
  const data = new FormData();
  const segments = mode === "storyboard" ? storyboard() : null;
  const editFile = mode === "remix" ? chosenFile("remix-file", "the clip to edit") : null;
  const remix = mode === "remix" && !editFile; // a remix of a finished video keeps its settings unless changed
  data.append("prompt", segments ? segments[0].prompt : $("prompt").value);
  for (const [id, name] of [["seed", "seed"], ["steps", "steps"], ["guidance", "guidance"],
                            ["sampler", "sampler"], ["cache", "cache"], ["noise-correlation", "noise_correlation"],
                            ["noise-drift", "noise_drift"], ["window-camera", "window_camera"], ["expand", "expand"],
                            ["negative-prompt", "negative_prompt"]]) {
    const field = $(id);
    const untouched = field.value === field.defaultValue;
    if (field.value.trim() !== "" && !(remix && untouched)) data.append(name, field.value.trim());
  }
  if (mode === "remix" && $("strength").value.trim() !== "") data.append("strength", $("strength").value.trim());
  if (remix) return [`/videos/${chosen("remix-source", "to remix")}/remix`, data];
  if ($("size").value.trim()) data.append("size", $("size").value.trim());
  if ($("fps").value.trim() !== "") data.append("fps", $("fps").value.trim());
  if (editFile) { // an edit keeps the clip's length
    data.append("video", editFile);
    return ["/videos/edits", data];
  }
  data.append("seconds", $("seconds").value);
  if (mode === "extend") {
    appendVideo(data, "video", "extend-file", "extend-source", "to extend");
    if ($("extend-backward").checked) data.append("direction", "backward");
    return ["/videos/extensions", data];
  }
  if (mode === "blend") {
    appendVideo(data, "video", "blend-from-file", "blend-from", "to start from");
    appendVideo(data, "connect_to", "blend-to-file", "blend-to", "to end on");
    return ["/videos/extensions", data];
  }
  if (mode === "image") {
    const file = chosenFile("image", "the start image");
    if (!file) throw fieldError("image", "choose a start image");
    data.append("input_reference", file);
  }
  if (mode === "loop") data.append("loop", "true");
  if (segments) data.append("segments", JSON.stringify(segments));
  return ["/videos", data];
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if ($("generate").disabled) return; // one video at a time from this page (Ctrl+Enter submits without the button)
  clearErrors();
  const invalid = [...form.elements].find((field) => isShown(field) && !checkField(field));
  if (invalid) {
    showError(invalid, `${labelOf(invalid)}: ${invalid.validationMessage}`);
    return;
  }
  $("generate").disabled = true;
  const run = followRun; // a key change while this is sent or followed leaves it to that key
  try {
    const [path, data] = requestFor(currentMode());
    const video = await api(path, { method: "POST", body: data });
    for (const id of Object.values(CLIP_OF)) $(id).value = ""; // sent: the next request chooses again
    if (run !== followRun) return; // made under the old key: the new key's page follows nothing of it
    sessionStorage.setItem(FOLLOWING, video.id); // this tab's video, followed again after a reload or key change
    refreshGallery();
    await follow(video, run);
  } catch (error) {
    if (run === followRun) showSubmitError(error);
  } finally {
    if (run === followRun) $("generate").disabled = false;
  }
});

function showSubmitError(error) {
  const field = $(error.field || fieldOfParam(error.param, currentMode()));
  // The API names its fields; the page names what the user sees.
  const named = field && error.param ? error.message.replace(new RegExp(`^${error.param}\\b`), labelOf(field))
    : error.message;
  showError(field, named);
}

form.addEventListener("keydown", (event) => { // Enter makes a new line in a prompt; Ctrl+Enter generates
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.tagName === "TEXTAREA") {
    event.preventDefault();
    form.requestSubmit();
  }
});

// This tab's video, not yet shown when the page is (re)loaded or its key given again, is followed as if it had
// just been submitted (other clients' jobs are not).
function resume(videos) {
  const mine = videos?.find((video) => video.id === sessionStorage.getItem(FOLLOWING));
  if (mine && !$("generate").disabled) track(mine);
}

// Stop following `id` after a reload, unless a newer video of this tab has taken its place.
function forget(id) {
  if (sessionStorage.getItem(FOLLOWING) === id) sessionStorage.removeItem(FOLLOWING);
}

function track(video) {
  const run = followRun;
  $("generate").disabled = true;
  follow(video, run).catch((error) => { if (run === followRun) $("form-error").textContent = error.message; })
    .finally(() => { if (run === followRun) $("generate").disabled = false; });
}

// ---- progress and playback ------------------------------------------------------------------

function hideProgress() {
  $("progress").hidden = true;
  $("progress-fill").style.width = "0%";
}

function showProgress(video) {
  $("progress").hidden = false;
  const percent = video.status === "completed" ? 100 : video.progress;
  $("progress-status").textContent = video.status.replace("_", " ");
  $("progress-percent").textContent = video.status === "failed" ? "" : `${percent}%`;
  $("progress-fill").style.width = `${percent}%`;
  document.querySelector(".bar").setAttribute("aria-valuenow", String(percent));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `video` until it is done, then plays it. Returns quietly once the key changes (run is then stale).
async function follow(video, run = followRun) {
  while (isActive(video)) {
    showProgress(video);
    await sleep(POLL_MS);
    if (run !== followRun) return;
    try {
      video = await api(`/videos/${video.id}`);
    } catch (error) {
      if (run !== followRun) return;
      if (!error.status) { // the server keeps the job: wait for it
        $("progress-status").textContent = "connection lost, retrying…";
        await sleep(2000);
        continue;
      }
      hideProgress(); // no longer followed: a bar left at its last percentage would say it still runs
      if (error.status !== 404) throw error;
      forget(video.id);
      throw new Error("this video is gone: it was deleted before it finished");
    }
    if (run !== followRun) return;
  }
  forget(video.id); // shown: a reload need not show it again
  showProgress(video);
  refreshGallery();
  if (video.status === "failed") throw new Error(video.error?.message || "generation failed");
  await play(video, run);
}

function clearPlayer() {
  $("player").removeAttribute("src");
  $("player").classList.remove("ready");
  $("placeholder").hidden = false;
  $("job-meta").textContent = "";
  $("job-notes").replaceChildren();
}

async function play(video, run = followRun) {
  const player = $("player");
  const url = await mediaUrl(video.id, "video");
  if (run !== followRun) return; // fetched for a key no longer given
  player.src = url;
  player.classList.add("ready");
  $("placeholder").hidden = true;
  const seed = video.seed == null ? "" : ` · seed ${video.seed}`; // none for videos made before seeds were drawn
  $("job-meta").textContent = `${video.size} · ${video.seconds} s · ${video.model}${seed} · ${video.id}`;
  // what the pipeline did to the request (an input resized, an option without effect), as the CLI prints it
  $("job-notes").replaceChildren(...(video.notes || []).map((note) =>
    Object.assign(document.createElement("li"), { textContent: noteText(note) })));
  player.play().catch(() => {}); // autoplay may be refused; the controls still work
  player.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

// ---- gallery --------------------------------------------------------------------------------

function button(label, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.className = className;
  element.addEventListener("click", onClick);
  return element;
}

function tile(video) {
  const card = document.createElement("article");
  card.className = "tile";
  card.dataset.id = video.id;
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (video.status === "completed") {
    const image = document.createElement("img");
    image.alt = video.prompt || video.id;
    mediaUrl(video.id, "thumbnail").then((url) => { image.src = url; }, () => {});
    thumb.append(image);
    Object.assign(thumb, { tabIndex: 0, role: "button" });
    thumb.setAttribute("aria-label", `play: ${(video.prompt || video.id).slice(0, 60)}`);
    const show = () => play(video).catch((error) => { $("form-error").textContent = error.message; });
    thumb.addEventListener("click", show);
    thumb.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); show(); }
    });
  } else {
    thumb.textContent = video.status === "failed" ? "failed" : `${video.status.replace("_", " ")} ${video.progress}%`;
  }
  const body = document.createElement("div");
  body.className = "body";
  const prompt = document.createElement("p");
  prompt.className = "prompt";
  prompt.textContent = video.prompt || "";
  prompt.title = video.prompt || "";
  const info = document.createElement("div");
  info.className = "info";
  const badge = document.createElement("span");
  badge.className = `badge ${video.status}`;
  badge.textContent = video.status.replace("_", " ");
  info.append(badge, ` ${video.size} · ${video.seconds} s`);
  const actions = document.createElement("div");
  actions.className = "actions";
  if (video.status === "completed") {
    const download = document.createElement("a");
    download.textContent = "Download";
    download.download = `${video.id}.mp4`;
    download.href = contentPath(video.id, "video");
    download.addEventListener("click", async (event) => {
      if (!savedKey()) return;
      event.preventDefault(); // with a key the plain link would be refused: save the fetched copy
      const url = await mediaUrl(video.id, "video").catch((error) => { $("form-error").textContent = error.message; });
      if (url) Object.assign(document.createElement("a"), { href: url, download: download.download }).click();
    });
    actions.append(download, button("Extend", "ghost", () => startFrom("extend", video.id)),
                   button("Remix", "ghost", () => startFrom("remix", video.id)));
  }
  actions.append(button("Delete", "danger", async () => {
    if (!confirm(`Delete "${(video.prompt || video.id).slice(0, 60)}"? This cannot be undone.`)) return;
    await api(`/videos/${video.id}`, { method: "DELETE" }).catch((error) => alert(error.message));
    if ($("job-meta").textContent.endsWith(video.id)) clearPlayer(); // it was playing
    refreshGallery();
  }));
  for (const action of actions.querySelectorAll("button, a")) {
    action.setAttribute("aria-label", `${action.textContent}: ${(video.prompt || video.id).slice(0, 60)}`);
  }
  body.append(prompt, info);
  if (video.error) { // why it failed, readable without a mouse
    body.append(Object.assign(document.createElement("p"), { className: "tile-error", textContent: video.error.message }));
  }
  body.append(actions);
  card.append(thumb, body);
  return card;
}

// Each finished-video choice has a clip field beside it; choosing one of the videos sets the clip aside.
const CLIP_OF = { "extend-source": "extend-file", "remix-source": "remix-file", "blend-from": "blend-from-file",
                  "blend-to": "blend-to-file" };
form.addEventListener("change", (event) => {
  if (CLIP_OF[event.target.id]) $(CLIP_OF[event.target.id]).value = "";
});

function startFrom(mode, id) {
  form.querySelector(`input[name="mode"][value="${mode}"]`).click();
  $(`${mode}-file`).value = "";
  $(`${mode}-source`).value = id;
  $(`${mode}-source`).dataset.chosen = "1";
  $("prompt").focus();
}

const isActive = (video) => video.status === "queued" || video.status === "in_progress";
let galleryLimit = GALLERY_PAGE; // "Load more" raises it
let galleryTimer = null;
let galleryRun = 0; // the latest refresh: an older one that answers late is dropped
let gallerySignature = ""; // the videos and statuses shown; unchanged, only progress is updated (focus stays put)

// The newest `limit` videos, a page of at most 100 at a time, and whether there are more.
async function listVideos(limit) {
  const videos = [];
  let after = null;
  let more = true;
  while (more && videos.length < limit) {
    const query = new URLSearchParams({ limit: String(Math.min(100, limit - videos.length)), order: "desc" });
    if (after) query.set("after", after);
    const page = await api(`/videos?${query}`);
    videos.push(...page.data);
    [more, after] = [page.has_more, page.last_id];
  }
  return { videos, more };
}

// Lists this key's videos into the gallery and the finished-video choices; a refresh overtaken by a later one
// leaves the page to that one.
async function refreshGallery() {
  clearTimeout(galleryTimer);
  const run = ++galleryRun;
  let listing;
  try {
    listing = await listVideos(galleryLimit);
  } catch (error) {
    if (run === galleryRun) galleryFailed(error);
    return;
  }
  if (run !== galleryRun) return;
  $("gallery-notice").hidden = true;
  resume(listing.videos); // on every listing: a refresh that overtakes the first one at load must not skip it
  const { videos, more } = listing;
  $("load-more").hidden = !more;
  if (videos.some(isActive)) galleryTimer = setTimeout(refreshGallery, GALLERY_POLL_MS);
  const signature = JSON.stringify(videos.map((video) => [video.id, video.status]));
  if (signature === gallerySignature) {
    for (const video of videos.filter(isActive)) { // only the percentages move: update them where they are
      const thumb = document.querySelector(`#gallery .tile[data-id="${video.id}"] .thumb`);
      if (thumb) thumb.textContent = `${video.status.replace("_", " ")} ${video.progress}%`;
    }
    return;
  }
  gallerySignature = signature;
  const gallery = $("gallery");
  gallery.replaceChildren(...videos.map(tile));
  if (!videos.length) gallery.innerHTML = '<p class="empty">No videos yet: write a prompt and press Generate.</p>';
  fillChoices(videos.filter((video) => video.status === "completed"));
}

// A server out of reach has not lost the videos: the last gallery stays, and the page asks again. Any other
// answer (a key refused) is about this key's gallery, so it replaces it.
function galleryFailed(error) {
  if (error.unreachable) {
    $("gallery-notice").textContent = "can't reach the server; your videos are kept there; retrying…";
    $("gallery-notice").hidden = false;
    galleryTimer = setTimeout(refreshGallery, GALLERY_RETRY_MS);
    return;
  }
  gallerySignature = "";
  $("gallery-notice").hidden = true;
  $("gallery").textContent = error.message;
}

// Each finished-video choice keeps the video it holds while that video exists: a new video does not silently
// replace the one the user works from. An empty choice takes the newest.
function fillChoices(finished) {
  for (const select of document.querySelectorAll("select.finished-videos")) {
    const kept = select.value;
    select.replaceChildren(...finished.map((video) => new Option(
      `${video.prompt.slice(0, 60)} (${video.id.slice(-6)})`, video.id)));
    if (!finished.length) {
      select.append(new Option("finish a video first", ""));
      delete select.dataset.chosen;
    } else {
      const keep = finished.some((video) => video.id === kept) && !selfBridge(select, kept);
      select.value = keep ? kept : defaultChoice(select, finished).id;
    }
  }
}
// A blend's end defaults to another video than its start: a bridge back into itself is only ever chosen.
const selfBridge = (select, id) => select.id === "blend-to" && !select.dataset.chosen && id === $("blend-from").value;
const defaultChoice = (select, finished) =>
  (select.id === "blend-to" && finished.find((video) => video.id !== $("blend-from").value)) || finished[0];

for (const select of document.querySelectorAll("select.finished-videos")) {
  select.addEventListener("change", () => { select.dataset.chosen = "1"; });
}
$("refresh").addEventListener("click", refreshGallery);
$("load-more").addEventListener("click", () => {
  galleryLimit += GALLERY_PAGE;
  refreshGallery();
});
for (const origin of document.querySelectorAll(".origin")) origin.textContent = location.origin; // as served
refreshGallery();

// ---- provenance -----------------------------------------------------------------------------

$("verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const list = $("verify-result");
  list.replaceChildren(Object.assign(document.createElement("li"), { textContent: "checking…" }));
  const data = new FormData();
  data.append("file", $("verify-file").files[0]);
  try {
    const result = await api("/provenance", { method: "POST", body: data });
    list.dataset.found = result.watermark.detected;
    list.replaceChildren(...result.summary.map((line) => Object.assign(document.createElement("li"), { textContent: line })));
  } catch (error) {
    list.replaceChildren(Object.assign(document.createElement("li"), { textContent: error.message, className: "error" }));
  }
});
