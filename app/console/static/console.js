// The medvoice browser console: sign in, pick a consultation and a language, talk over the OpenAI Realtime
// protocol (/v1/realtime), see the transcript and the cited answer as they stream, hear the answer, interrupt it.
// Plain ES module, no dependencies. The token lives in memory only: reloading the page signs out.

const RATE = 24000; // PCM16 mono, both ways
const PROTOCOL = ["realtime", "openai-beta.realtime-v1"];
const KEY_PREFIX = "openai-insecure-api-key.";

const $ = (id) => document.getElementById(id);
const ui = {
  body: document.body,
  signIn: $("sign-in"),
  form: $("sign-in-form"),
  signInError: $("sign-in-error"),
  signInButton: $("sign-in-button"),
  workspace: $("workspace"),
  who: $("who"),
  signOut: $("sign-out"),
  consultation: $("consultation"),
  language: $("language"),
  talk: $("talk"),
  ask: $("ask"),
  question: $("question"),
  stop: $("stop-answer"),
  status: $("status"),
  error: $("error"),
  transcript: $("transcript"),
  answer: $("answer"),
  citations: $("citations"),
  disclaimer: $("disclaimer"),
  played: $("played"),
  history: $("history"),
  historyEmpty: $("history-empty"),
};

// Relative to the page (/console/), so a reverse proxy may serve everything under a path prefix.
const apiUrl = (path) => new URL(`../${path}`, location.href);

const state = {
  token: null,
  ws: null,
  closing: false, // the page closed the socket itself
  ctx: null,
  mic: null,
  source: null,
  worklet: null,
  opened: null, // the session's promise (see connect)
  sessionReady: null,
  response: null, // {id, itemId, turnId, done}
  speechItem: null,
  playedS: 0,
};

// ---- HTTP ------------------------------------------------------------------------------------------------
async function api(path, { method = "GET", json, form } = {}) {
  const headers = {};
  let body;
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = new URLSearchParams(form);
  }
  const r = await fetch(apiUrl(path), { method, headers, body });
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    const detail = data && data.detail;
    const message = typeof detail === "string" ? detail : (detail && detail.message) || `HTTP ${r.status}`;
    const err = new Error(message);
    err.status = r.status;
    throw err;
  }
  return data;
}

function setState(name, text) {
  ui.body.dataset.state = name;
  if (text) ui.status.textContent = text;
}

function showError(message) {
  ui.error.textContent = message || "";
}

// ---- sign in ---------------------------------------------------------------------------------------------
ui.form.addEventListener("submit", async (e) => {
  e.preventDefault();
  ui.signInError.textContent = "";
  ui.signInButton.disabled = true;
  const username = ui.form.username.value.trim();
  try {
    const out = await api("v1/auth/token", { method: "POST", form: { username, password: ui.form.password.value } });
    state.token = out.access_token;
    ui.form.password.value = "";
    ui.who.textContent = `${username} (${out.role})`;
    ui.who.hidden = false;
    ui.signOut.hidden = false;
    ui.signIn.hidden = true;
    ui.workspace.hidden = false;
    setState("idle", "Not connected.");
    await loadConsultations();
    ui.talk.focus();
  } catch (err) {
    ui.signInError.textContent = err.message;
  } finally {
    ui.signInButton.disabled = false;
  }
});

ui.signOut.addEventListener("click", () => signOut(""));

function signOut(message) {
  stopTalking();
  state.token = null;
  ui.workspace.hidden = true;
  ui.signIn.hidden = false;
  ui.who.hidden = true;
  ui.signOut.hidden = true;
  ui.signInError.textContent = message;
  setState("signed-out", "Not connected.");
  ui.form.username.focus();
}

async function guarded(fn) {
  try {
    await fn();
  } catch (err) {
    if (err.status === 401) signOut("Your session has ended: sign in again.");
    else showError(err.message);
  }
}

// ---- consultations ---------------------------------------------------------------------------------------
function consultationLabel(c) {
  const when = new Date(c.created_at).toLocaleString();
  const turns = `${c.turn_count} turn${c.turn_count === 1 ? "" : "s"}`;
  return `${c.title || "Consultation"} · ${when} · ${turns}`;
}

async function loadConsultations(selected) {
  const list = await api("v1/consultations");
  const keep = selected ?? ui.consultation.value;
  ui.consultation.replaceChildren(new Option("New consultation", ""));
  for (const c of list) ui.consultation.add(new Option(consultationLabel(c), c.id));
  ui.consultation.value = list.some((c) => c.id === keep) ? keep : "";
  await loadHistory();
}

async function loadHistory() {
  const id = ui.consultation.value;
  ui.history.replaceChildren();
  ui.historyEmpty.hidden = false;
  if (!id) return;
  const c = await api(`v1/consultations/${encodeURIComponent(id)}`);
  for (const t of c.turns) ui.history.append(turnItem(t));
  ui.historyEmpty.hidden = c.turns.length > 0;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function turnItem(t) {
  const li = el("li");
  li.dataset.turnId = t.id;
  li.append(el("p", "q", t.transcript || t.question || "(no transcript)"));
  li.append(el("p", "a", t.answer || (t.status === "error" ? `Error: ${t.error || "failed"}` : `(${t.status})`)));
  const cited = t.citations.filter((c) => c.cited);
  if (cited.length) li.append(citationList(cited));
  const meta = [new Date(t.created_at).toLocaleTimeString(), t.input_kind === "audio" ? "spoken" : "typed"];
  if (t.language) meta.push(t.language);
  if (t.interrupted) meta.push("interrupted");
  li.append(el("p", "meta", meta.join(" · ")));
  return li;
}

function citationList(citations) {
  const ol = el("ol", "citations");
  for (const c of citations) {
    const li = el("li");
    li.dataset.n = c.n;
    li.append(el("span", "n", `[${c.n}]`), el("span", "title", c.title || "untitled"));
    if (c.source) li.append(document.createTextNode(" — "), el("span", "source", c.source));
    ol.append(li);
  }
  return ol;
}

ui.consultation.addEventListener("change", () => {
  if (state.ws) stopTalking();
  guarded(loadHistory);
});

async function ensureConsultation() {
  if (ui.consultation.value) return ui.consultation.value;
  const c = await api("v1/consultations", { method: "POST", json: {} });
  await loadConsultations(c.id);
  return c.id;
}

ui.language.addEventListener("change", () => {
  send({ type: "session.update", session: { input_audio_transcription: transcription() } });
});

function transcription() {
  return { model: "whisper-1", language: ui.language.value || null }; // null: detected per utterance
}

// ---- talking ---------------------------------------------------------------------------------------------
ui.talk.addEventListener("click", () => {
  if (state.mic) stopTalking();
  else guarded(startTalking);
});

async function audioContext() {
  if (!state.ctx) {
    state.ctx = new AudioContext({ sampleRate: RATE });
    await state.ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
  }
  await state.ctx.resume(); // inside the click's user gesture, so autoplay rules allow playback
  return state.ctx;
}

async function startTalking() {
  showError("");
  ui.talk.disabled = true;
  setState("connecting", "Starting the microphone…");
  try {
    let ctx = await audioContext();
    state.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
    });
    try {
      state.source = ctx.createMediaStreamSource(state.mic);
    } catch {
      // Some browsers cannot join a microphone to a context at another rate: run at theirs, resample in the worklet.
      stopPlayback();
      await ctx.close();
      state.ctx = new AudioContext();
      await state.ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
      ctx = state.ctx;
      state.source = ctx.createMediaStreamSource(state.mic);
    }
    ui.talk.textContent = "Stop talking";
    ui.talk.setAttribute("aria-pressed", "true");
    await connect();
    state.worklet = new AudioWorkletNode(ctx, "medvoice-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
    state.worklet.port.onmessage = (e) => send({ type: "input_audio_buffer.append", audio: toBase64(e.data) });
    state.source.connect(state.worklet);
    state.worklet.connect(ctx.destination); // silent: keeps the node pulled by the graph
    setState("listening", "Listening: ask your question.");
  } catch (err) {
    stopTalking();
    throw err;
  } finally {
    ui.talk.disabled = false;
  }
}

// The live session (also for typed questions): resolves once the server has sent session.created.
async function connect() {
  if (state.ws) return state.opened;
  setState("connecting", "Connecting…");
  const consultationId = await ensureConsultation();
  const ticket = await api("v1/realtime/sessions", {
    method: "POST",
    json: {
      session: { input_audio_transcription: transcription(), turn_detection: { type: "server_vad" } },
      consultation_id: consultationId,
    },
  });
  const url = apiUrl("v1/realtime");
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, [PROTOCOL[0], KEY_PREFIX + ticket.client_secret.value, PROTOCOL[1]]);
  state.ws = ws;
  state.closing = false;
  state.opened = new Promise((resolve, reject) => {
    state.sessionReady = resolve;
    ws.addEventListener("close", () => reject(new Error("the live session could not be opened")));
  });
  state.opened.catch(() => {}); // a close before session.created is reported by the close handler below
  ws.addEventListener("message", (e) => {
    let event;
    try {
      event = JSON.parse(e.data);
    } catch {
      return;
    }
    onEvent(event);
  });
  ws.addEventListener("close", (e) => {
    if (state.ws !== ws) return;
    const unexpected = !state.closing;
    stopTalking();
    if (unexpected) showError(`The live session closed (${e.code})${e.reason ? `: ${e.reason}` : ""}.`);
  });
  return state.opened;
}

ui.ask.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.question.value.trim();
  if (!text) return;
  guarded(async () => {
    showError("");
    await audioContext(); // the answer is spoken too
    await connect();
    ui.question.value = "";
    ui.transcript.textContent = text;
    ui.transcript.dataset.final = "true";
    send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
    send({ type: "response.create" });
  });
});

function stopTalking() {
  const ws = state.ws;
  state.ws = null;
  if (ws) {
    state.closing = true;
    ws.close(1000, "the clinician stopped");
  }
  if (state.worklet) {
    state.worklet.port.onmessage = null;
    state.worklet.disconnect();
    state.worklet = null;
  }
  if (state.source) state.source.disconnect();
  state.source = null;
  if (state.mic) for (const track of state.mic.getTracks()) track.stop();
  state.mic = null;
  stopPlayback();
  state.response = null;
  state.opened = null;
  ui.stop.disabled = true;
  ui.talk.textContent = "Start talking";
  ui.talk.setAttribute("aria-pressed", "false");
  if (state.token) setState("idle", "Not connected.");
}

function send(event) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(event));
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// ---- server events ---------------------------------------------------------------------------------------
function onEvent(ev) {
  switch (ev.type) {
    case "session.created":
      if (state.sessionReady) state.sessionReady();
      setState("listening", state.mic ? "Listening: ask your question." : "Connected.");
      break;
    case "input_audio_buffer.speech_started":
      interruptPlayback(); // barge-in: the clinician speaks over the answer, so it stops here at once
      state.speechItem = ev.item_id;
      ui.transcript.textContent = "";
      ui.transcript.dataset.final = "false";
      setState("hearing", "Hearing you…");
      break;
    case "conversation.item.input_audio_transcription.delta":
      if (ev.item_id === state.speechItem) ui.transcript.textContent += ev.delta;
      break;
    case "conversation.item.input_audio_transcription.completed":
      ui.transcript.textContent = ev.transcript;
      ui.transcript.dataset.final = "true";
      break;
    case "input_audio_buffer.speech_stopped":
      setState("thinking", "Looking it up…");
      break;
    case "response.created":
      state.response = { id: ev.response.id, itemId: null, turnId: ev.response.metadata?.turn_id, done: false };
      ui.answer.textContent = "";
      ui.answer.dataset.turnId = state.response.turnId || "";
      ui.answer.dataset.status = "in_progress";
      ui.citations.replaceChildren();
      ui.disclaimer.textContent = "";
      ui.stop.disabled = false;
      setState("answering", "Answering…");
      break;
    case "response.output_item.added":
      if (state.response && ev.response_id === state.response.id) state.response.itemId = ev.item.id;
      break;
    case "response.audio_transcript.delta":
    case "response.text.delta":
      if (state.response && ev.response_id === state.response.id) ui.answer.textContent += ev.delta;
      break;
    case "response.audio.delta":
      if (state.response && ev.response_id === state.response.id) play(ev.delta, ev.item_id);
      break;
    case "response.done":
      responseDone(ev.response);
      break;
    case "error":
      // A cancel racing the answer's own end is harmless: the answer had already finished.
      if (ev.error?.code !== "response_cancel_not_active") showError(ev.error?.message || "error");
      break;
    default:
      break;
  }
}

function responseDone(response) {
  const mine = state.response && state.response.id === response.id;
  if (mine) state.response.done = true;
  const extras = response.medvoice || {};
  let citations = extras.citations;
  if (!citations && response.metadata?.citations) {
    try {
      citations = JSON.parse(response.metadata.citations);
    } catch {
      citations = [];
    }
  }
  const cited = (citations || []).filter((c) => c.cited);
  if (mine) {
    ui.answer.dataset.status = response.status;
    ui.citations.replaceChildren(...citationList(cited).children);
    ui.disclaimer.textContent = extras.disclaimer || "";
    if (response.status === "cancelled") ui.answer.append(el("span", "source", " (interrupted)"));
    if (response.status === "failed") showError(response.status_details?.error?.message || "the answer failed");
    if (!playback.sources.size) ui.stop.disabled = true;
  }
  if (state.ws) setState("listening", state.mic ? "Listening: ask your question." : "Connected.");
  guarded(() => loadConsultations(ui.consultation.value));
}

ui.stop.addEventListener("click", () => {
  const r = state.response;
  const heardMs = stopPlayback();
  if (r && !r.done) send({ type: "response.cancel" });
  if (r && r.itemId) send({ type: "conversation.item.truncate", item_id: r.itemId, content_index: 0, audio_end_ms: heardMs });
  ui.stop.disabled = true;
});

// ---- playback --------------------------------------------------------------------------------------------
const playback = {
  sources: new Map(), // AudioBufferSourceNode → {at, duration}
  next: 0, // when the next delta starts, on the context's clock
  itemId: null,
  heardS: 0, // of playback.itemId's audio
  truncated: false,
};

function play(b64, itemId) {
  const ctx = state.ctx;
  if (!ctx) return;
  if (playback.itemId !== itemId) {
    playback.itemId = itemId;
    playback.heardS = 0;
    playback.truncated = false;
  }
  const bin = atob(b64);
  const n = bin.length >> 1;
  const samples = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    samples[i] = (v >= 0x8000 ? v - 0x10000 : v) / 0x8000;
  }
  if (!n) return;
  const buffer = ctx.createBuffer(1, n, RATE);
  buffer.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  const at = Math.max(playback.next, ctx.currentTime + 0.05);
  src.start(at);
  playback.next = at + buffer.duration;
  playback.sources.set(src, { at, duration: buffer.duration });
  ui.played.dataset.playing = "true";
  src.addEventListener("ended", () => {
    if (!playback.sources.delete(src)) return;
    heard(buffer.duration);
    if (playback.sources.size) return;
    ui.played.dataset.playing = "false";
    if (!state.response || state.response.done) ui.stop.disabled = true;
  });
}

function heard(seconds) {
  playback.heardS += seconds;
  state.playedS += seconds;
  ui.played.dataset.playedSeconds = state.playedS.toFixed(2);
  ui.played.textContent = `${state.playedS.toFixed(1)} s`;
}

// Stops whatever is scheduled; returns how many ms of the current answer item were heard.
function stopPlayback() {
  const now = state.ctx ? state.ctx.currentTime : 0;
  for (const [src, { at, duration }] of playback.sources) {
    heard(Math.max(0, Math.min(duration, now - at)));
    src.stop();
  }
  playback.sources.clear();
  playback.next = 0;
  ui.played.dataset.playing = "false";
  return Math.round(playback.heardS * 1000);
}

function interruptPlayback() {
  if (!playback.sources.size) return;
  const heardMs = stopPlayback();
  // The server cancels a reply still streaming by itself; this tells it how much was actually heard.
  if (playback.itemId && !playback.truncated) {
    playback.truncated = true;
    send({ type: "conversation.item.truncate", item_id: playback.itemId, content_index: 0, audio_end_ms: heardMs });
  }
}
