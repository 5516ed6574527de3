// musicops web page: Generate (POST /v1/generate, plays the WAV) and Stream (WS /v1/stream, plays PCM16 chunks
// as they arrive by scheduling Web Audio buffers back to back). No build step, no dependencies.
"use strict";

// The test hook: what a browser test (or a curious person in the console) can check.
const state = (window.musicops = {
  ready: false,
  info: null,
  busy: false,
  mode: null, // "stream" or "generate"
  chunksReceived: 0,
  bytesReceived: 0,
  playerStarted: false,
  scheduledSeconds: 0,
  header: null,
  stats: null,
  clientFirstChunkMs: null,
  error: null,
  history: [],
});

const $ = (id) => document.getElementById(id);
const form = $("form");
const inputs = {
  prompt: $("prompt"),
  duration: $("duration"),
  guidance: $("guidance"),
  seed: $("seed"),
  temperature: $("temperature"),
  topK: $("top_k"),
  topP: $("top_p"),
  apiKey: $("api-key"),
};

// ---------------------------------------------------------------------------------------------- audio

let audioContext = null;

async function getAudioContext() {
  // Created on a click: browsers only let audio start from a user gesture.
  audioContext = audioContext || new AudioContext();
  if (audioContext.state === "suspended") await audioContext.resume();
  return audioContext;
}

// Plays chunks gaplessly: each AudioBufferSource starts where the previous one ends. When the network or the
// model falls behind (an underrun), playback restarts a little ahead of "now" instead of in the past.
class StreamPlayer {
  constructor(ctx, sampleRate) {
    this.ctx = ctx;
    this.sampleRate = sampleRate;
    this.lead = 0.12; // seconds of slack before the first chunk plays
    this.next = 0;
    this.startedAt = null;
    this.sources = [];
  }

  push(samples) {
    const buffer = this.ctx.createBuffer(1, samples.length, this.sampleRate);
    buffer.copyToChannel(samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.next < now + 0.01) this.next = now + this.lead;
    if (this.startedAt === null) this.startedAt = this.next;
    source.start(this.next);
    this.next += buffer.duration;
    this.sources.push(source);
    source.onended = () => this.sources.splice(this.sources.indexOf(source), 1);
    state.playerStarted = true;
    state.scheduledSeconds += buffer.duration;
  }

  position() {
    return this.startedAt === null ? 0 : Math.max(0, this.ctx.currentTime - this.startedAt);
  }

  stop() {
    for (const source of this.sources) source.stop();
    this.sources = [];
  }
}

function int16ToFloat(pcm) {
  const out = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  return out;
}

// A 16-bit mono WAV file from PCM chunks: how a streamed clip becomes downloadable.
function wavBlob(chunks, sampleRate) {
  const samples = chunks.reduce((n, chunk) => n + chunk.length, 0);
  const view = new DataView(new ArrayBuffer(44 + samples * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples * 2, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++, offset += 2) view.setInt16(offset, chunk[i], true);
  }
  return new Blob([view], { type: "audio/wav" });
}

// ---------------------------------------------------------------------------------------------- waveform

// Min/max per pixel column, filled as chunks arrive; redrawn every frame with a playhead.
class Waveform {
  constructor(canvas) {
    this.canvas = canvas;
    this.columns = [];
    this.total = 1;
    this.filled = 0;
    this.position = () => null; // seconds played, or null
    this.sampleRate = 1;
    requestAnimationFrame(() => this.draw());
  }

  reset(totalSamples, sampleRate) {
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(this.canvas.clientWidth * ratio);
    this.canvas.height = Math.round(this.canvas.clientHeight * ratio);
    this.columns = Array.from({ length: this.canvas.width }, () => [0, 0]);
    this.total = Math.max(1, totalSamples);
    this.sampleRate = sampleRate;
    this.filled = 0;
    this.position = () => null;
  }

  add(samples) {
    const width = this.columns.length;
    for (let i = 0; i < samples.length; i++) {
      const column = Math.min(width - 1, Math.floor(((this.filled + i) / this.total) * width));
      const bounds = this.columns[column];
      if (samples[i] < bounds[0]) bounds[0] = samples[i];
      if (samples[i] > bounds[1]) bounds[1] = samples[i];
    }
    this.filled += samples.length;
  }

  draw() {
    const { canvas } = this;
    const g = canvas.getContext("2d");
    const style = getComputedStyle(document.documentElement);
    const mid = canvas.height / 2;
    g.clearRect(0, 0, canvas.width, canvas.height);
    const played = this.position();
    const playedColumn = played === null ? -1 : (played * this.sampleRate * this.columns.length) / this.total;
    const filledColumn = (this.filled / this.total) * this.columns.length;
    for (let x = 0; x < this.columns.length && x < filledColumn; x++) {
      const [low, high] = this.columns[x];
      g.fillStyle = x < playedColumn ? style.getPropertyValue("--wave-played") : style.getPropertyValue("--wave");
      const top = mid - Math.max(high, 0.004) * mid * 0.95;
      const bottom = mid - Math.min(low, -0.004) * mid * 0.95;
      g.fillRect(x, top, 1, bottom - top);
    }
    if (played !== null && playedColumn >= 0 && playedColumn <= this.columns.length) {
      g.fillStyle = style.getPropertyValue("--text");
      g.fillRect(Math.round(playedColumn), 0, 1, canvas.height);
    }
    requestAnimationFrame(() => this.draw());
  }
}

const wave = new Waveform($("wave"));

// ---------------------------------------------------------------------------------------------- form and display

function requestBody() {
  const body = {
    prompt: inputs.prompt.value.trim(),
    duration: Number(inputs.duration.value),
    guidance: Number(inputs.guidance.value),
    temperature: Number(inputs.temperature.value),
    top_k: Number(inputs.topK.value || 0),
    top_p: Number(inputs.topP.value || 0),
  };
  if (inputs.seed.value !== "") body.seed = Number(inputs.seed.value);
  return body;
}

function apiKey() {
  return inputs.apiKey.value.trim();
}

function showOutputs() {
  $("duration-out").textContent = `${Number(inputs.duration.value).toFixed(1)} s`;
  $("guidance-out").textContent = Number(inputs.guidance.value).toFixed(1);
  $("temperature-out").textContent = Number(inputs.temperature.value).toFixed(2);
  const limit = state.info ? state.info.max_prompt_chars : null;
  $("prompt-count").textContent = limit ? `${inputs.prompt.value.length} / ${limit}` : "";
}

function setStatus(text, live = false) {
  $("status").textContent = text;
  $("status").classList.toggle("live", live);
}

function showError(message) {
  state.error = message;
  $("error").textContent = message;
  $("error").hidden = !message;
}

function showStats(stats, chunks) {
  $("stat-seed").textContent = stats.seed ?? "–";
  $("stat-first").textContent = stats.first_chunk_ms != null ? `${Math.round(stats.first_chunk_ms)} ms` : "–";
  $("stat-rtf").textContent = stats.real_time_factor ? `${Number(stats.real_time_factor).toFixed(1)}×` : "–";
  $("stat-audio").textContent = stats.audio_seconds != null ? `${Number(stats.audio_seconds).toFixed(1)} s` : "–";
  $("stat-chunks").textContent = chunks ?? "–";
}

function setBusy(busy, mode = null) {
  state.busy = busy;
  state.mode = mode;
  $("stream").disabled = busy;
  $("generate").disabled = busy;
  $("stop").disabled = !busy || mode !== "stream";
}

// An error answer's message: FastAPI's 422 lists fields; other errors carry one detail.
async function errorText(response) {
  try {
    const body = await response.json();
    if (Array.isArray(body.detail)) {
      return body.detail.map((e) => `${e.loc.filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
    }
    return body.detail || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function addHistory(entry) {
  state.history.unshift(entry);
  const item = $("history-item").content.firstElementChild.cloneNode(true);
  item.querySelector(".item-prompt").textContent = entry.prompt || "(no prompt: unconditional)";
  const rtf = entry.stats.real_time_factor ? ` · ${Number(entry.stats.real_time_factor).toFixed(1)}× real time` : "";
  item.querySelector(".item-meta").textContent =
    `${entry.mode} · ${Number(entry.stats.audio_seconds).toFixed(1)} s · seed ${entry.stats.seed}${rtf}`;
  const url = URL.createObjectURL(entry.blob);
  item.querySelector(".play").addEventListener("click", () => playBlob(url, entry));
  item.querySelector(".reuse").addEventListener("click", () => {
    inputs.prompt.value = entry.prompt;
    inputs.seed.value = entry.stats.seed;
    showOutputs();
  });
  const download = item.querySelector(".download");
  download.href = url;
  download.download = `musicops-${entry.stats.seed}.wav`;
  $("history").prepend(item);
  $("history-empty").hidden = true;
  return url;
}

async function drawBlob(blob) {
  const ctx = await getAudioContext();
  const decoded = await ctx.decodeAudioData(await blob.arrayBuffer());
  const samples = decoded.getChannelData(0);
  wave.reset(samples.length, decoded.sampleRate);
  wave.add(samples);
  return decoded;
}

async function playBlob(url, entry) {
  stopPlayback();
  const audio = $("audio");
  audio.src = url;
  await drawBlob(entry.blob);
  wave.position = () => (audio.paused && audio.currentTime === 0 ? null : audio.currentTime);
  showStats(entry.stats, entry.chunks);
  await audio.play().catch(() => {}); // a blocked autoplay leaves the controls to the user
}

let player = null;
let socket = null;

function stopPlayback() {
  if (player) player.stop();
  player = null;
  $("audio").pause();
}

// ---------------------------------------------------------------------------------------------- Stream (WebSocket)

async function stream() {
  const body = requestBody();
  const ctx = await getAudioContext();
  stopPlayback();
  showError("");
  Object.assign(state, { chunksReceived: 0, bytesReceived: 0, playerStarted: false, scheduledSeconds: 0 });
  Object.assign(state, { header: null, stats: null, clientFirstChunkMs: null });
  showStats({}, 0);
  setBusy(true, "stream");
  setStatus("waiting for the first chunk…", true);

  const url = new URL("v1/stream", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (apiKey()) url.searchParams.set("api_key", apiKey());
  const ws = (socket = new WebSocket(url));
  ws.binaryType = "arraybuffer";
  const pcmChunks = [];
  const clicked = performance.now();
  let finished = false;

  ws.onopen = () => ws.send(JSON.stringify({ type: "generate", ...body }));
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      const pcm = new Int16Array(event.data);
      const samples = int16ToFloat(pcm);
      if (state.clientFirstChunkMs === null) state.clientFirstChunkMs = performance.now() - clicked;
      pcmChunks.push(pcm);
      state.chunksReceived += 1;
      state.bytesReceived += event.data.byteLength;
      player.push(samples);
      wave.add(samples);
      $("stat-chunks").textContent = state.chunksReceived;
      setStatus(`streaming · ${state.scheduledSeconds.toFixed(1)} s received`, true);
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "header") {
      state.header = message;
      player = new StreamPlayer(ctx, message.sample_rate);
      wave.reset(Math.round(body.duration * message.sample_rate), message.sample_rate);
      const current = player;
      wave.position = () => current.position();
    } else if (message.type === "stats") {
      finished = true;
      state.stats = message;
      showStats(message, state.chunksReceived);
      setStatus(message.cancelled ? "stopped" : "done");
      if (pcmChunks.length) {
        const blob = wavBlob(pcmChunks, state.header.sample_rate);
        addHistory({ mode: "streamed", prompt: body.prompt, stats: message, blob, chunks: state.chunksReceived });
      }
    } else if (message.type === "error") {
      finished = true;
      showError(message.message);
      setStatus("failed");
    }
  };
  ws.onclose = (event) => {
    if (!finished) {
      showError(`the connection closed (${event.code}) before the clip was complete`);
      setStatus("failed");
    }
    if (socket === ws) socket = null;
    setBusy(false);
  };
}

function stop() {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "cancel" }));
  stopPlayback();
}

// ---------------------------------------------------------------------------------------------- Generate (POST)

async function generate() {
  const body = requestBody();
  await getAudioContext();
  stopPlayback();
  showError("");
  setBusy(true, "generate");
  setStatus("generating…", true);
  try {
    const headers = { "Content-Type": "application/json" };
    if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
    const response = await fetch("v1/generate", { method: "POST", headers, body: JSON.stringify(body) });
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      throw new Error((await errorText(response)) + (retry ? ` (retry in ${retry} s)` : ""));
    }
    const number = (name) => Number(response.headers.get(name));
    const stats = {
      seed: response.headers.get("X-Seed"),
      first_chunk_ms: number("X-First-Chunk-Ms"),
      real_time_factor: number("X-Real-Time-Factor"),
      audio_seconds: number("X-Audio-Seconds"),
    };
    const blob = await response.blob();
    state.stats = stats;
    const entry = { mode: "generated", prompt: body.prompt, stats, blob, chunks: null };
    const url = addHistory(entry);
    setStatus("playing");
    await playBlob(url, entry);
  } catch (error) {
    showError(error.message);
    setStatus("failed");
  } finally {
    setBusy(false);
  }
}

// ---------------------------------------------------------------------------------------------- start-up

async function loadInfo() {
  try {
    const info = (state.info = await (await fetch("v1/info")).json());
    inputs.duration.max = info.max_duration;
    inputs.duration.value = Math.min(Number(inputs.duration.value), info.default_duration);
    inputs.prompt.maxLength = info.max_prompt_chars;
    if (info.auth_required) {
      $("more").open = true;
      inputs.apiKey.placeholder = "required by this server";
    }
  } catch {
    showError("could not reach the server's /v1/info");
  }
  const ready = await fetch("readyz").then((r) => r.ok).catch(() => false);
  $("ready").textContent = ready ? "model ready" : "model not ready";
  $("ready").className = `pill ${ready ? "ok" : "bad"}`;
  showOutputs();
  state.ready = true;
}

inputs.apiKey.value = localStorage.getItem("musicops.apiKey") || "";
inputs.apiKey.addEventListener("change", () => localStorage.setItem("musicops.apiKey", apiKey()));
for (const input of [inputs.prompt, inputs.duration, inputs.guidance, inputs.temperature]) {
  input.addEventListener("input", showOutputs);
}
form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.busy) stream();
});
inputs.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
$("generate").addEventListener("click", () => generate());
$("stop").addEventListener("click", stop);
loadInfo();
