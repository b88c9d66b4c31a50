// Live captions: the microphone, as 24 kHz PCM16, to a Realtime transcription session of this server.
// The page holds no API key: it asks the server for a one-session client secret (POST /v1/realtime/client_secrets,
// through the same authentication as the page) and opens the WebSocket with it as a subprotocol.
"use strict";
(() => {
  const RATE = 24000;
  const SEND_EVERY = RATE / 10;   // one append per 100 ms of audio
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const state = { status: "idle", items: [], errors: [] };   // read by tests
  window.liveCaptions = state;
  let ws = null, audio = null, stream = null;
  const byId = new Map();

  if (params.has("language")) $("language").value = params.get("language");

  function status(text, error) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
    if (error) state.errors.push(text);
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("apikey").value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  async function loadModels() {
    let ids = [], def = null;
    try {
      const r = await fetch(new URL("v1/models", document.baseURI), { headers: headers(), credentials: "same-origin" });
      if (r.status === 401) { $("keyrow").style.display = "flex"; return; }
      const list = (await r.json()).data || [];
      ids = list.map((m) => m.id).filter((id) => id !== "whisper-1");
      def = (list.find((m) => m.default && m.id !== "whisper-1") || {}).id || null;
    } catch (e) { /* the select keeps the server's default */ }
    const select = $("model");
    select.innerHTML = "";
    for (const id of new Set(ids)) select.add(new Option(id, id));
    // an English-only model (*.en) cannot caption French: prefer a multilingual one for another language
    const lang = $("language").value;
    let pick = params.get("model") || def;
    if (!params.get("model") && lang !== "en" && pick && pick.endsWith(".en")) pick = ids.find((id) => !id.endsWith(".en")) || pick;
    if (pick && !ids.includes(pick)) select.add(new Option(pick, pick));
    if (pick) select.value = pick;
  }

  function itemElement(id) {
    let el = byId.get(id);
    if (!el) {
      el = document.createElement("p");
      el.className = "interim";
      el.dataset.itemId = id;
      $("captions").appendChild(el);
      byId.set(id, el);
      state.items.push({ id, text: "", final: false });
    }
    return el;
  }

  function itemState(id) { return state.items.find((i) => i.id === id); }

  function scroll() { const c = $("captions"); c.scrollTop = c.scrollHeight; }

  function onEvent(ev) {
    switch (ev.type) {
      case "session.created": case "session.updated":
        state.status = "listening"; status("À l'écoute · listening (" + ev.session.audio.input.transcription.model + ")"); break;
      case "input_audio_buffer.speech_started": itemElement(ev.item_id); break;
      case "conversation.item.input_audio_transcription.delta": {
        const el = itemElement(ev.item_id), it = itemState(ev.item_id);
        if (!it.final) { it.text += ev.delta; el.textContent = it.text; scroll(); }
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const el = itemElement(ev.item_id), it = itemState(ev.item_id);
        it.text = ev.transcript; it.final = true;
        el.textContent = ev.transcript; el.className = "";
        if (!ev.transcript) el.remove();
        scroll(); break;
      }
      case "conversation.item.input_audio_transcription.failed": {
        const el = itemElement(ev.item_id);
        el.className = "failed"; el.textContent = "(" + (ev.error && ev.error.message) + ")"; break;
      }
      case "error": status("Erreur · error: " + ev.error.message, true); break;
    }
  }

  async function mintSecret(model, language) {
    const transcription = { model };
    if (language) transcription.language = language;
    const r = await fetch(new URL("v1/realtime/client_secrets", document.baseURI), {
      method: "POST", headers: headers(), credentials: "same-origin",
      body: JSON.stringify({ session: { type: "transcription", audio: { input: {
        format: { type: "audio/pcm", rate: RATE }, transcription,
        turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 } } } } }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) $("keyrow").style.display = "flex";
    if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
    return body.value;
  }

  function toBase64(int16) {
    const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  async function startAudio(socket) {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    audio = new AudioContext({ sampleRate: RATE });
    await audio.audioWorklet.addModule(new URL("live/pcm-worklet.js", document.baseURI));
    const node = new AudioWorkletNode(audio, "pcm-capture");
    const mute = audio.createGain();
    mute.gain.value = 0;
    audio.createMediaStreamSource(stream).connect(node).connect(mute).connect(audio.destination);
    let pending = new Int16Array(SEND_EVERY), filled = 0;
    node.port.onmessage = (msg) => {
      const f = msg.data;
      for (let i = 0; i < f.length; i++) {
        pending[filled++] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
        if (filled === SEND_EVERY) {
          if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: toBase64(pending) }));
          pending = new Int16Array(SEND_EVERY); filled = 0;
        }
      }
    };
  }

  function stop(message) {
    if (ws) { try { ws.close(1000); } catch (e) { /* closed */ } ws = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    if (audio) { audio.close(); audio = null; }
    state.status = "stopped";
    $("start").textContent = "Démarrer · Start";
    if (message) status(message);
  }

  async function start() {
    $("start").disabled = true;
    try {
      status("Connexion · connecting…");
      const model = $("model").value, language = $("language").value;
      const secret = await mintSecret(model, language);
      const url = new URL("v1/realtime?intent=transcription", document.baseURI);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      const socket = ws = new WebSocket(url, ["realtime", "openai-insecure-api-key." + secret]);
      socket.onmessage = (m) => onEvent(JSON.parse(m.data));
      socket.onclose = (e) => { if (ws === socket) stop("Session terminée · session ended" + (e.reason ? " (" + e.reason + ")" : "")); };
      await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = () => reject(new Error("WebSocket")); });
      await startAudio(socket);
      state.status = "listening";
      $("start").textContent = "Arrêter · Stop";
    } catch (e) {
      stop();
      status("Erreur · error: " + e.message, true);
    } finally {
      $("start").disabled = false;
    }
  }

  $("start").addEventListener("click", () => (ws ? stop("Arrêté · stopped") : start()));
  $("language").addEventListener("change", loadModels);
  $("apikey").addEventListener("change", loadModels);
  loadModels().then(() => { state.ready = true; if (params.get("autostart") === "1") start(); });
})();
