// sfu call demo: a call that runs peer-to-peer with two participants and
// through the SFU (WHIP to publish, WHEP to view each other participant) from
// three, switching make-before-break: media stays on the old path until the
// new one decodes video, then the old path is closed. Plain JS, no bundler;
// signaling over socket.io-client (vendor/socket.io.min.js), which
// reconnects by itself: the page then re-attaches to its place in the call,
// or joins the call again when the server lost it (a restart).
//
// URL: /call?call=ID&token=JWT[&role=both|publisher|subscriber]. Without
// `call` a new call is made. For tests the page exposes window.callState and
// window.callStats() (switch durations, longest gap in decoded video).
"use strict";

// ------------------------------------------------------------------ state

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const wantedRole = params.get("role") || undefined;
const auth = token ? { Authorization: `Bearer ${token}` } : {};
const POLL_MS = 50;
const STEADY_POLLS = 3;

const state = {
  callId: params.get("call"),
  participantId: null,
  role: null,
  mode: null,
  peers: new Map(),         // participantId -> {participantId, userId, name, role}
  remotes: new Map(),       // participantId -> Remote (what we receive from it)
  producers: new Map(),     // participantId -> Set(producerId) known to be video
  sfu: null,                // {roomId, whip, whep}
  publisher: null,          // {pc, location}
  p2p: null,                // {pc, peer, remoteSet, candidates}
  local: null,              // MediaStream
  pending: null,            // the switch (or first connection) in progress on this page
  switches: [],             // finished and current: {mode, kind, switchId, startedAt, doneAt, durationMs, gaps}
  recoveries: [],           // SFU rooms lost and replaced: {reason, lostAt, replacedAt, doneAt, ...}
  p2pInitiator: false,      // this page makes the direct connection's offers
  fallback: null,           // the direct path broke: {since, reason, offeredAt}; the SFU standby carries media
  fallbacks: [],            // {reason, at, sfuShownMs, p2pBackMs}
  rejoins: [],              // joined again after the server lost the call: {startedAt, joinedAt, reason}
  iceRestart: { lastAt: null, intervalMs: 2000, pendingSince: null },
  iceRestarts: [],          // {reason, at, doneMs}: doneMs when every remote decoded again
  ended: null,              // the call ended with the server (shutdown): rejoin when it is back
  events: [],
  left: false,
};
window.callState = state;

// ------------------------------------------------------------- signaling

// the call id in the connection's query lets a node of a cluster hand the
// connection to the node that holds the call (signaling/cluster.py)
const socket = window.io({ auth: { token }, query: state.callId ? { call: state.callId } : {},
                           transports: ["websocket"], autoConnect: false,
                           reconnectionDelay: 250, reconnectionDelayMax: 1000, randomizationFactor: 0.2 });
// Every client event is acknowledged by the server with {ok, ...} or {error, status}.
const sig = {
  emit(name, data) {
    return socket.timeout(5000).emitWithAck(name, data).catch((err) => ({ error: err.message, status: 0 }));
  },
  on(name, fn) { socket.on(name, fn); },
};

const $ = (id) => document.getElementById(id);
const setStatus = (text) => { $("status").textContent = text; state.status = text; };
function log(text) {
  state.events.push(`${Math.round(performance.now())} ${text}`);
  if (state.events.length > 300) state.events.shift();
  const el = $("log");
  el.textContent = state.events.slice(-30).join("\n");
  el.scrollTop = el.scrollHeight;
}

function api(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...auth },
    body: JSON.stringify(body || {}),
  }).then(async (resp) => {
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw Object.assign(new Error(`${path}: ${resp.status} ${data.error || ""}`), { status: resp.status });
    return data;
  });
}

function render() {
  const mode = $("mode");
  mode.textContent = state.mode || "…";
  mode.className = state.mode || "";
  const names = [...state.peers.values()].map((p) => `${p.name || p.userId} (${p.role})`);
  $("people").textContent = `you + ${names.length}: ${names.join(", ") || "waiting for others"}`;
}

// ---------------------------------------------------------------- remotes

function remote(pid) {
  let r = state.remotes.get(pid);
  if (r) return r;
  const peer = state.peers.get(pid) || { userId: pid };
  const figure = document.createElement("figure");
  const mk = (cls) => {
    const v = document.createElement("video");
    v.autoplay = true; v.playsInline = true; v.muted = true;  // autoplay policy: click to unmute
    v.className = cls;
    v.onclick = () => { v.muted = !v.muted; };
    return v;
  };
  const caption = document.createElement("figcaption");
  r = {
    id: pid, figure, caption,
    video: { p2p: mk("standby"), sfu: mk("standby") },
    stream: { p2p: new MediaStream(), sfu: new MediaStream() },
    frames: { p2p: 0, sfu: 0 },
    samples: { p2p: 0, sfu: 0 },  // audio samples received, per path
    lastSamples: 0,          // of the shown path at the last poll
    lastAudioAt: null,       // when the shown path's audio last advanced
    maxAudioGapMs: 0,
    seen: { p2p: 0, sfu: 0 },     // framesDecoded at the previous poll, per path
    streak: { p2p: 0, sfu: 0 },   // consecutive polls in which the path decoded new frames
    active: null,            // the path shown: "p2p" | "sfu"
    lastFrames: 0,           // framesDecoded of the active path at the last poll
    lastIncrementAt: null,   // when the shown video last advanced
    maxGapMs: 0,             // longest gap since the first frame
    sfuView: null,           // {pc, location, producerId}
  };
  r.video.p2p.srcObject = r.stream.p2p;
  r.video.sfu.srcObject = r.stream.sfu;
  figure.append(r.video.p2p, r.video.sfu, caption);
  $("videos").append(figure);
  state.remotes.set(pid, r);
  caption.textContent = `${peer.name || peer.userId} · connecting`;
  return r;
}

function show(r, path) {
  r.active = path;
  r.lastFrames = r.frames[path];
  r.lastSamples = r.samples[path];
  r.video[path].className = "";
  r.video[path === "p2p" ? "sfu" : "p2p"].className = "standby";
  const peer = state.peers.get(r.id) || { userId: r.id };
  r.caption.textContent = `${peer.name || peer.userId} · ${path}`;
  log(`showing ${r.id} over ${path}`);
}

function dropRemote(pid) {
  const r = state.remotes.get(pid);
  if (!r) return;
  closeView(r);
  r.figure.remove();
  state.remotes.delete(pid);
}

// The participants whose video this page must receive in the current mode.
function expectedRemotes() {
  if (state.role === "publisher") {
    return [];  // candidates receive nothing (unless the call allows it: then new-producer events tell)
  }
  return [...state.peers.values()].filter((p) => p.role !== "subscriber").map((p) => p.participantId);
}

// ------------------------------------------------------- WHIP/WHEP (SFU)

// The SFU is an ICE-lite agent that puts its candidate in the answer and
// learns ours from our connectivity checks, so the offer goes at once,
// without waiting for candidate gathering.
// Returns the session: {pc, location, answer}.
async function whipExchange(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp", ...auth },
                                  body: pc.localDescription.sdp });
  if (resp.status !== 201) throw new Error(`${url}: ${resp.status} ${await resp.text()}`);
  const answer = await resp.text();
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  return { location: resp.headers.get("Location"), answer };
}

// ICE restart of a WHIP/WHEP session (RFC 9725 §4.3): new local credentials
// PATCHed as an SDP fragment; the SFU answers with its new ones, which
// replace those of the session's answer. The checks that follow come from
// wherever this browser now is, so a changed address or NAT mapping is
// picked up in one round trip instead of at the next consent check.
const sdpAttr = (sdp, name) => { const m = new RegExp(`a=${name}:(\\S+)`).exec(sdp); return m && m[1]; };

async function restartIce(session, label) {
  if (!session || !session.location || session.restarting || session.pc.signalingState !== "stable") return false;
  session.restarting = true;
  const started = performance.now();
  try {
    session.pc.restartIce();
    await session.pc.setLocalDescription(await session.pc.createOffer({ iceRestart: true }));
    const local = session.pc.localDescription.sdp;
    const resp = await fetch(session.location, {
      method: "PATCH",
      headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*", ...auth },
      body: `a=ice-ufrag:${sdpAttr(local, "ice-ufrag")}\r\na=ice-pwd:${sdpAttr(local, "ice-pwd")}\r\n`,
    });
    if (resp.status !== 200) throw new Error(`PATCH ${resp.status} ${await resp.text()}`);
    const frag = await resp.text();
    session.answer = session.answer
      .replace(/a=ice-ufrag:\S+/g, `a=ice-ufrag:${sdpAttr(frag, "ice-ufrag")}`)
      .replace(/a=ice-pwd:\S+/g, `a=ice-pwd:${sdpAttr(frag, "ice-pwd")}`);
    await session.pc.setRemoteDescription({ type: "answer", sdp: session.answer });
    log(`ICE restarted (${label}) in ${Math.round(performance.now() - started)} ms`);
    return true;
  } catch (err) {
    log(`ICE restart (${label}) failed: ${err.message}`);
    if (session.pc.signalingState === "have-local-offer") {
      await session.pc.setLocalDescription({ type: "rollback" }).catch(() => {});
    }
    return false;
  } finally {
    session.restarting = false;
  }
}

// Every SFU session of this page restarts its ICE: called when a remote's
// video stalls on the SFU path or a session's ICE goes disconnected/failed
// (this page's network changed, most often). At most once per
// state.iceRestart.intervalMs, which doubles while restarts do not help.
const STALL_RESTART_MS = 700;
function restartSfuIce(reason) {
  const ir = state.iceRestart;
  const now = performance.now();
  if (state.mode !== "sfu" || (ir.lastAt !== null && now - ir.lastAt < ir.intervalMs)) return;
  ir.lastAt = now;
  ir.pendingSince = now;
  log(`restarting ICE of the SFU sessions (${reason})`);
  state.iceRestarts.push({ reason, at: now, doneMs: null });
  const sessions = [];
  if (state.publisher) sessions.push([state.publisher, "publisher"]);
  for (const r of state.remotes.values()) if (r.sfuView) sessions.push([r.sfuView, `view of ${r.id}`]);
  for (const [session, label] of sessions) restartIce(session, label);
}

function watchIce(session, label) {
  session.pc.addEventListener("iceconnectionstatechange", () => {
    const st = session.pc.iceConnectionState;
    if (st === "disconnected" || st === "failed") restartSfuIce(`${label}: ICE ${st}`);
  });
}

function deleteSession(location) {
  if (location) fetch(location, { method: "DELETE", headers: auth, keepalive: true }).catch(() => {});
}

// `active`: whether the senders send (off while the SFU is on standby).
async function publishSfu(active = true) {
  if (!state.sfu || state.role === "subscriber") return;
  if (state.publisher) {
    await setSending(state.publisher, active);
    return;
  }
  const pc = new RTCPeerConnection();
  const pub = { pc, location: null, active };
  state.publisher = pub;
  for (const track of state.local.getTracks()) {
    pc.addTransceiver(track, { direction: "sendonly", sendEncodings: [{ active }] });
  }
  try {
    Object.assign(pub, await whipExchange(pc, state.sfu.whip));
    watchIce(pub, "publisher");
    log("publishing to the SFU (WHIP)");
    if (state.publisher !== pub) deleteSession(pub.location);
  } catch (err) {
    log(`WHIP failed: ${err.message}`);
    pc.close();
    if (state.publisher === pub) state.publisher = null;
  }
}

// The standby publisher's senders on or off, without renegotiation; a sender
// turned on starts with a keyframe.
async function setSending(pub, on) {
  if (pub.active === on) return;
  pub.active = on;
  pub.heard = undefined;
  for (const sender of pub.pc.getSenders()) {
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) continue;
    params.encodings.forEach((e) => { e.active = on; });
    await sender.setParameters(params).catch((err) => log(`sender ${on ? "on" : "off"}: ${err.message}`));
  }
  log(`SFU senders ${on ? "on" : "off (standby)"}`);
}

// A P2P call of two: the SFU room is ready (call:sfu-standby, or `standby`
// in call:joined / a switch back to P2P). Connect to it with the senders
// off and view the peer through it, so that a switch only turns senders on.
function prepareStandby(info) {
  if (state.mode !== "p2p" || !info || !info.whip) return;
  state.sfu = { roomId: info.roomId, whip: info.whip, whep: info.whep, standby: true };
  publishSfu(false).catch((err) => log(`standby publish: ${err.message}`));
  for (const p of info.producers || []) {
    if (p.kind === "video") noteProducer(p.participantId, p.producerId);
  }
}

function closePublisher(opts = {}) {
  const pub = state.publisher;
  if (!pub) return;
  state.publisher = null;
  pub.pc.close();
  if (!opts.lost) deleteSession(pub.location);
  log("stopped publishing to the SFU");
}

async function viewSfu(pid, producerId) {
  if (!state.sfu || pid === state.participantId) return;
  const r = remote(pid);
  if (r.sfuView && (r.sfuView.producerId === producerId || !producerId)) return;
  closeView(r);
  const pc = new RTCPeerConnection();
  const view = { pc, location: null, producerId };
  r.sfuView = view;
  r.frames.sfu = 0;
  r.stream.sfu = new MediaStream();
  r.video.sfu.srcObject = r.stream.sfu;
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => r.stream.sfu.addTrack(ev.track);
  try {
    Object.assign(view, await whipExchange(pc, state.sfu.whep + encodeURIComponent(pid)));
    watchIce(view, `view of ${pid}`);
    log(`viewing ${pid} through the SFU (WHEP)`);
    if (r.sfuView !== view) deleteSession(view.location);
  } catch (err) {
    log(`WHEP ${pid} failed: ${err.message}`);
    pc.close();
    if (r.sfuView === view) r.sfuView = null;
  }
}

// `lost`: the session died with its room; the remote's last frame stays
// shown (r.active kept) until a new view decodes.
function closeView(r, opts = {}) {
  const view = r.sfuView;
  if (!view) return;
  r.sfuView = null;
  view.pc.close();
  if (!opts.lost) deleteSession(view.location);
  if (r.active === "sfu") {
    if (opts.lost) r.frames.sfu = 0;
    else r.active = null;
  }
}

// ------------------------------------------------------------ P2P path

function newP2P(peer) {
  closeP2P();
  const pc = new RTCPeerConnection();
  const p2p = { pc, peer, remoteSet: false, candidates: [] };
  state.p2p = p2p;
  const r = remote(peer);
  r.frames.p2p = 0;
  r.stream.p2p = new MediaStream();
  r.video.p2p.srcObject = r.stream.p2p;
  pc.ontrack = (ev) => r.stream.p2p.addTrack(ev.track);
  pc.onicecandidate = (ev) => {
    if (ev.candidate && state.p2p === p2p) sig.emit("webrtc:ice-candidate", { to: peer, candidate: ev.candidate.toJSON() });
  };
  return p2p;
}

async function offerP2P(peer) {
  const p2p = newP2P(peer);
  for (const track of state.local.getTracks()) p2p.pc.addTrack(track, state.local);
  await p2p.pc.setLocalDescription(await p2p.pc.createOffer());
  const ack = await sig.emit("webrtc:offer", { to: peer, offer: { type: "offer", sdp: p2p.pc.localDescription.sdp } });
  if (ack.error) log(`offer refused: ${ack.error}`);
  log(`P2P offer to ${peer}`);
}

async function onOffer(data) {
  if (state.mode !== "p2p") { log(`ignoring an offer in ${state.mode} mode`); return; }
  if (state.p2p && state.p2p.peer === data.from && state.p2p.remoteSet && !state.pending) {
    // a new offer over a running connection: the peer lost the direct path
    p2pBroken("the peer offered a new direct connection", false);
  }
  const p2p = newP2P(data.from);
  await p2p.pc.setRemoteDescription(data.offer);
  p2p.remoteSet = true;
  for (const track of state.local.getTracks()) p2p.pc.addTrack(track, state.local);
  await p2p.pc.setLocalDescription(await p2p.pc.createAnswer());
  for (const c of p2p.candidates) await p2p.pc.addIceCandidate(c).catch(() => {});
  p2p.candidates = [];
  await sig.emit("webrtc:answer", { to: data.from, answer: { type: "answer", sdp: p2p.pc.localDescription.sdp } });
  log(`P2P answer to ${data.from}`);
}

async function onAnswer(data) {
  const p2p = state.p2p;
  if (!p2p || p2p.peer !== data.from || p2p.pc.signalingState !== "have-local-offer") return;
  await p2p.pc.setRemoteDescription(data.answer);
  p2p.remoteSet = true;
  for (const c of p2p.candidates) await p2p.pc.addIceCandidate(c).catch(() => {});
  p2p.candidates = [];
}

async function onCandidate(data) {
  const p2p = state.p2p;
  if (!p2p || p2p.peer !== data.from || !data.candidate) return;
  if (!p2p.remoteSet) { p2p.candidates.push(data.candidate); return; }
  await p2p.pc.addIceCandidate(data.candidate).catch((err) => log(`candidate: ${err.message}`));
}

function closeP2P() {
  const p2p = state.p2p;
  if (!p2p) return;
  state.p2p = null;
  p2p.pc.close();
  const r = state.remotes.get(p2p.peer);
  if (r && r.active === "p2p") r.active = null;
  log(`closed the P2P connection with ${p2p.peer}`);
}

// --------------------------------------------------------- mode switches

// A switch on this page: from the server's event until every expected remote
// decodes on the new path; the old path is closed then (make-before-break).
function beginSwitch(mode, kind, switchId) {
  if (state.pending && !state.pending.doneAt) {
    state.pending.superseded = true;
    state.pending.doneAt = performance.now();
  }
  state.mode = mode;
  const sw = { mode, kind, switchId: switchId || null, startedAt: performance.now(), doneAt: null,
               durationMs: null, gaps: {}, audioGaps: {}, serverMs: null, reported: false };
  state.pending = sw;
  state.switches.push(sw);
  render();
  log(`${kind}: ${mode}${switchId ? " (switch " + switchId + ")" : ""}`);
  return sw;
}

function finishSwitch(sw) {
  sw.doneAt = performance.now();
  sw.durationMs = Math.round(sw.doneAt - sw.startedAt);
  if (sw.mode === "sfu") {
    closeP2P();
  } else if (sw.standby && state.sfu) {
    // the SFU room stays on standby: senders off, the peer's view kept
    if (state.publisher) setSending(state.publisher, false);
    for (const r of state.remotes.values()) if (!state.peers.has(r.id)) closeView(r);
  } else {
    for (const r of state.remotes.values()) closeView(r);
    closePublisher();
    state.sfu = null;
  }
  setStatus(`${sw.mode} · media flowing (${sw.kind} took ${sw.durationMs} ms)`);
  log(`${sw.kind} to ${sw.mode} done in ${sw.durationMs} ms; old path closed`);
  if (!sw.reported) {
    sw.reported = true;
    sig.emit("call:media-ready", { callId: state.callId, mode: sw.mode, switchId: sw.switchId });
  }
}

// ------------------------------------------------ recovery (room lost)

// The SFU room died under the call (its media worker was killed): the server
// says so at once (call:media-lost), then hands out a new room on a live
// worker (call:room-replaced, same shape as call:joined). The page drops the
// dead sessions, publishes again and views every remote again; the remotes'
// last frames stay on screen meanwhile.
function onMediaLost(data) {
  log(`SFU room lost (${data.reason}, worker ${data.workerPid})`);
  for (const r of state.remotes.values()) closeView(r, { lost: true });
  closePublisher({ lost: true });
  state.producers.clear();
  if (state.mode !== "sfu") {  // the standby room: a new one is announced (call:sfu-standby)
    state.sfu = null;
    return;
  }
  state.recoveries.push({ reason: data.reason, workerPid: data.workerPid || null, lostAt: performance.now(),
                          replacedAt: null, doneAt: null, durationMs: null });
  setStatus("sfu · media lost, waiting for a new room");
}

async function onRoomReplaced(data) {
  log(`SFU room replaced: ${data.roomId}`);
  let rec = state.recoveries[state.recoveries.length - 1];
  if (!rec || rec.replacedAt) {  // the media-lost event was missed
    rec = { reason: data.reason, workerPid: null, lostAt: performance.now(), replacedAt: null, doneAt: null,
            durationMs: null };
    state.recoveries.push(rec);
  }
  rec.replacedAt = performance.now();
  if (state.mode !== "sfu") return;
  for (const r of state.remotes.values()) closeView(r, { lost: true });
  closePublisher({ lost: true });
  state.sfu = { roomId: data.roomId, whip: data.whip, whep: data.whep };
  const started = publishSfu();
  for (const p of data.producers || []) {
    if (p.kind === "video") noteProducer(p.participantId, p.producerId);
  }
  await started;
}

// The publisher session hears from the SFU all the time (transport-wide
// feedback, receiver reports): silence means its path is broken even if
// this page still receives everything (the others see its video stall).
async function watchPublisher(pub) {
  if (!pub.location || pub.pc.connectionState !== "connected" || state.mode !== "sfu" || !pub.active) return;
  let received = 0;
  (await pub.pc.getStats()).forEach((x) => { if (x.type === "transport") received += x.packetsReceived || 0; });
  const now = performance.now();
  if (pub.heard === undefined || received > pub.heard) {
    pub.heard = received;
    pub.heardAt = now;
  } else if (now - pub.heardAt > STALL_RESTART_MS && !(state.pending && !state.pending.doneAt)) {
    restartSfuIce("the SFU stopped answering the publisher");
  }
}

// A remote's video stalled on the SFU path (no switch or recovery going on):
// restart ICE; a restart is done when every remote decodes again.
function checkIceRestart(now) {
  const ir = state.iceRestart;
  const last = state.iceRestarts[state.iceRestarts.length - 1];
  const remotes = [...state.remotes.values()].filter((r) => r.active === "sfu" && r.sfuView);
  const stalled = remotes.filter((r) => r.lastIncrementAt !== null && now - r.lastIncrementAt > STALL_RESTART_MS);
  if (last && last.doneMs === null) {
    if (!stalled.length && remotes.every((r) => r.lastIncrementAt !== null && r.lastIncrementAt > last.at)) {
      last.doneMs = Math.round(now - last.at);
      ir.intervalMs = 2000;
      log(`media back ${last.doneMs} ms after the ICE restart`);
    } else if (now - last.at > ir.intervalMs) {
      ir.intervalMs = Math.min(ir.intervalMs * 2, 30000);  // it did not help (a remote stopped sending?)
    }
  }
  const busy = (state.pending && !state.pending.doneAt) ||
               state.recoveries.some((x) => !x.doneAt) || state.ended;
  if (stalled.length && !busy) restartSfuIce(`video of ${stalled.map((r) => r.id).join(", ")} stalled`);
}

// ------------------------------------------- the direct path breaks (P2P)

// In a P2P call the page watches the direct path: when the peer's video
// stalls for P2P_STALL_MS, or the connection fails or closes, it turns on
// its senders on the standby SFU session and shows the peer through the SFU
// as soon as that decodes, while the initiator makes a new direct
// connection (a new offer, at most every P2P_REOFFER_MS; the peer takes the
// new offer as its own sign that the path broke). Once the direct path
// decodes steadily again the page shows it and turns the SFU senders off.
const P2P_STALL_MS = 1000;
const P2P_REOFFER_MS = 3000;

function p2pBroken(reason, offer = true) {
  const now = performance.now();
  if (!state.fallback) {
    state.fallback = { since: now, reason, offeredAt: null };
    state.fallbacks.push({ reason, at: now, sfuShownMs: null, p2pBackMs: null });
    log(`direct path broken (${reason}): media over the SFU meanwhile`);
    if (state.publisher) setSending(state.publisher, true);
  }
  const fb = state.fallback;
  const peer = [...state.peers.keys()][0];
  // the initiator offers; the other page too once the initiator has stayed
  // silent (a path broken in one direction only: the initiator sees nothing wrong)
  const mayOffer = state.p2pInitiator || now - fb.since > 2 * P2P_REOFFER_MS;
  if (offer && mayOffer && peer && (fb.offeredAt === null || now - fb.offeredAt > P2P_REOFFER_MS)) {
    fb.offeredAt = now;
    offerP2P(peer).catch((err) => log(`offer: ${err.message}`));
  }
}

function checkP2P(now) {
  if (state.mode !== "p2p" || (state.pending && !state.pending.doneAt) || state.ended) return;
  const peer = [...state.peers.keys()][0];
  const r = peer && state.remotes.get(peer);
  if (!r) return;
  const p2p = state.p2p;
  const failed = p2p && ["failed", "closed"].includes(p2p.pc.connectionState);
  const stalled = r.active === "p2p" && r.lastIncrementAt !== null && now - r.lastIncrementAt > P2P_STALL_MS;
  if ((failed || stalled || (state.fallback && !p2p)) && !(state.fallback && r.active === "sfu" && !failed)) {
    p2pBroken(failed ? `direct connection ${p2p.pc.connectionState}` : stalled ? "video stalled" : "no connection");
  } else if (state.fallback && r.active !== "p2p" && p2p && state.fallback.offeredAt !== null &&
             now - state.fallback.offeredAt > P2P_REOFFER_MS && !(r.streak.p2p > 0)) {
    p2pBroken("the new direct connection does not decode yet");
  }
  const fb = state.fallback;
  const rec = state.fallbacks[state.fallbacks.length - 1];
  // (a new direct connection leaves nothing shown until one path decodes)
  if (fb && r.active !== "sfu" && r.sfuView && r.streak.sfu >= STEADY_POLLS) {
    show(r, "sfu");
    if (rec && rec.sfuShownMs === null) rec.sfuShownMs = Math.round(now - rec.at);
  } else if (fb && r.active !== "p2p" && state.p2p && r.streak.p2p >= STEADY_POLLS * 2) {
    show(r, "p2p");
    if (rec) rec.p2pBackMs = Math.round(now - rec.at);
    state.fallback = null;
    if (state.publisher) setSending(state.publisher, false);
    log("direct path back: SFU senders off");
  }
}

// A recovery is done when every expected remote decodes again over the SFU.
function checkRecovery() {
  const rec = state.recoveries[state.recoveries.length - 1];
  if (!rec || rec.doneAt || !rec.replacedAt || state.mode !== "sfu") return;
  const expected = expectedRemotes();
  if (state.role !== "subscriber" && !state.publisher) return;
  if (expected.every((pid) => { const r = state.remotes.get(pid); return r && r.active === "sfu" && r.sfuView && r.frames.sfu >= 2; })) {
    rec.doneAt = performance.now();
    rec.durationMs = Math.round(rec.doneAt - rec.lostAt);
    setStatus(`sfu · media back (${rec.durationMs} ms after the room was lost)`);
    log(`media back from every remote ${rec.durationMs} ms after the room was lost`);
  }
}

function checkSwitch() {
  const sw = state.pending;
  if (!sw || sw.doneAt) return;
  const expected = expectedRemotes();
  if (expected.every((pid) => { const r = state.remotes.get(pid); return r && r.active === sw.mode; })) {
    finishSwitch(sw);
  }
}

async function enterSfu(info, kind) {
  state.sfu = { roomId: info.roomId, whip: info.whip, whep: info.whep };
  beginSwitch("sfu", kind, info.switchId || (info.switch && info.switch.switchId));
  const started = publishSfu(true);
  for (const p of info.producers || []) {
    if (p.kind === "video") noteProducer(p.participantId, p.producerId);
  }
  await started;
  checkSwitch();
}

function enterP2P(data, kind) {
  const sw = beginSwitch("p2p", kind, data.switchId);
  sw.standby = !!(data.standby && data.standby.whip);
  state.p2pInitiator = !!(data.peer && data.initiator);
  state.fallback = null;
  if (data.peer && data.initiator) offerP2P(data.peer).catch((err) => log(`offer: ${err.message}`));
  checkSwitch();
}

function noteProducer(pid, producerId) {
  if (!state.producers.has(pid)) state.producers.set(pid, new Set());
  state.producers.get(pid).add(producerId);
  if (state.sfu && (state.mode === "sfu" || state.peers.has(pid))) viewSfu(pid, producerId);
}

// ----------------------------------------------------- stats and gaps

// Video frames decoded and audio samples received on one connection.
async function mediaCounts(pc) {
  const out = { frames: 0, samples: 0 };
  if (!pc || pc.connectionState === "closed") return out;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    if (s.kind === "video") out.frames += s.framesDecoded || 0;
    else if (s.kind === "audio") out.samples += s.totalSamplesReceived || 0;
  });
  return out;
}

async function poll() {
  try {
    if (state.p2p) {
      const r = state.remotes.get(state.p2p.peer);
      if (r) ({ frames: r.frames.p2p, samples: r.samples.p2p } = await mediaCounts(state.p2p.pc));
    }
    for (const r of state.remotes.values()) {
      if (r.sfuView) ({ frames: r.frames.sfu, samples: r.samples.sfu } = await mediaCounts(r.sfuView.pc));
    }
    if (state.publisher) await watchPublisher(state.publisher);
    const now = performance.now();
    const sw = state.pending;
    for (const r of state.remotes.values()) {
      for (const path of ["p2p", "sfu"]) {
        r.streak[path] = r.frames[path] > r.seen[path] ? r.streak[path] + 1 : 0;
        r.seen[path] = r.frames[path];
      }
      const target = state.mode;
      const open = target === "p2p" ? state.p2p && state.p2p.peer === r.id : !!r.sfuView;
      // make-before-break: a new path replaces a working one once it decodes
      // steadily (new frames at STEADY_POLLS polls in a row: a path's first
      // frames come irregularly); with nothing shown yet, its first frames do
      const ready = open && (r.active ? r.streak[target] >= STEADY_POLLS : r.frames[target] >= 2);
      // (a P2P call running over the SFU after its direct path broke: checkP2P decides)
      if (r.active !== target && ready && !(target === "p2p" && state.fallback)) show(r, target);
      // after a lost room the new view starts from zero frames on the same path
      if (r.active === target && r.frames[target] < r.lastFrames) r.lastFrames = r.frames[target];
      if (!r.active) continue;
      const frames = r.frames[r.active];
      if (r.lastIncrementAt !== null) {
        const gap = now - r.lastIncrementAt;  // ongoing or just ended
        if (gap > r.maxGapMs) r.maxGapMs = gap;
        if (frames > r.lastFrames && gap > 150) log(`video of ${r.id} (${r.active}) stalled ${Math.round(gap)} ms`);
        for (const s of state.switches) {
          // a switch's window: from its start until 1 s after the old path was closed
          if (s.kind !== "join" && (!s.doneAt || now - s.doneAt < 1000)) {
            s.gaps[r.id] = Math.max(s.gaps[r.id] || 0, Math.round(gap));
          }
        }
      }
      if (frames > r.lastFrames || r.lastIncrementAt === null && frames > 0) r.lastIncrementAt = now;
      r.lastFrames = frames;
      // audio of the shown path: the longest time without new samples
      const samples = r.samples[r.active];
      if (samples > r.lastSamples) {
        if (r.lastAudioAt !== null) {
          const gap = now - r.lastAudioAt;
          if (gap > r.maxAudioGapMs) r.maxAudioGapMs = gap;
          for (const s of state.switches) {
            if (s.kind !== "join" && (!s.doneAt || now - s.doneAt < 1000)) {
              s.audioGaps[r.id] = Math.max(s.audioGaps[r.id] || 0, Math.round(gap));
            }
          }
        }
        r.lastAudioAt = now;
      }
      r.lastSamples = samples;
    }
    checkSwitch();
    checkRecovery();
    checkIceRestart(now);
    checkP2P(now);
    if (sw && !sw.doneAt) setStatus(`${sw.mode} · switching (${Math.round(now - sw.startedAt)} ms)`);
  } catch (err) {
    log(`stats: ${err.message}`);
  }
  if (!state.left) setTimeout(poll, POLL_MS);
}

window.callStats = () => ({
  callId: state.callId,
  participantId: state.participantId,
  mode: state.mode,
  status: state.status,
  peers: [...state.peers.keys()],
  paths: { p2p: !!state.p2p, publisher: !!state.publisher && state.publisher.active !== false,
           standby: !!state.publisher && state.publisher.active === false,
           views: [...state.remotes.values()].filter((r) => r.sfuView).map((r) => r.id) },
  remotes: Object.fromEntries([...state.remotes.values()].map((r) => [r.id, {
    active: r.active, framesP2P: r.frames.p2p, framesSFU: r.frames.sfu, shownFrames: r.lastFrames,
    maxGapMs: Math.round(r.maxGapMs), maxAudioGapMs: Math.round(r.maxAudioGapMs),
    sinceLastFrameMs: r.lastIncrementAt === null ? null : Math.round(performance.now() - r.lastIncrementAt),
  }])),
  switches: state.switches.map((s) => ({ mode: s.mode, kind: s.kind, switchId: s.switchId,
                                          durationMs: s.durationMs, serverMs: s.serverMs, gaps: s.gaps,
                                          audioGaps: s.audioGaps, standby: !!s.standby,
                                          superseded: !!s.superseded })),
  rejoins: state.rejoins.map((x) => ({ reason: x.reason, error: x.error || null,
                                       joinedMs: x.joinedAt ? Math.round(x.joinedAt - x.startedAt) : null })),
  socketConnected: socket.connected,
  iceRestarts: state.iceRestarts.map((x) => ({ reason: x.reason, doneMs: x.doneMs })),
  fallbacks: state.fallbacks.map((x) => ({ reason: x.reason, sfuShownMs: x.sfuShownMs, p2pBackMs: x.p2pBackMs })),
  recoveries: state.recoveries.map((x) => ({ reason: x.reason, workerPid: x.workerPid, durationMs: x.durationMs,
                                             replacedMs: x.replacedAt === null ? null : Math.round(x.replacedAt - x.lostAt) })),
  events: state.events.slice(-80),
});

// ------------------------------------------------------------- the call

function addPeer(p) {
  if (p.participantId === state.participantId) return;
  state.peers.set(p.participantId, p);
  render();
}

function removePeer(pid) {
  state.peers.delete(pid);
  state.producers.delete(pid);
  if (state.p2p && state.p2p.peer === pid) closeP2P();
  dropRemote(pid);
  render();
  checkSwitch();
}

async function leaveCall() {
  if (state.left) return;
  state.left = true;
  closeP2P();
  closePublisher();
  for (const pid of [...state.remotes.keys()]) dropRemote(pid);
  await api(`/api/calls/${encodeURIComponent(state.callId)}/leave`, { participantId: state.participantId })
    .catch((err) => log(`leave: ${err.message}`));
  socket.close();
  setStatus("left the call");
  $("leave").disabled = true;
}
window.leaveCall = leaveCall;

function wireEvents() {
  sig.on("call:joined", (data) => {
    // arrives while the join request is still being answered
    state.participantId = data.participantId;
    state.role = data.role;
    for (const p of data.peers || []) addPeer(p);
    if (data.mode === "sfu") enterSfu(data, "join");
    else {
      enterP2P(data, "join");
      if (data.standby) prepareStandby(data.standby);
    }
  });
  sig.on("call:participant-joined", (data) => { addPeer(data.participant); log(`${data.participant.userId} joined`); });
  sig.on("call:participant-left", (data) => { log(`${data.participantId} left (${data.reason})`); removePeer(data.participantId); });
  sig.on("call:mode-switch", (data) => {
    log(`server: switch to ${data.mode}`);
    if (data.mode === "sfu") enterSfu(data, "switch");
    else enterP2P(data, "switch");
  });
  sig.on("call:mode-switched", (data) => {
    const sw = state.switches.find((s) => s.switchId === data.switchId);
    if (sw) sw.serverMs = data.durationMs;
    log(`server: switch to ${data.mode} ${data.success ? "completed" : "failed"} in ${data.durationMs} ms`);
  });
  sig.on("call:media-lost", (data) => onMediaLost(data));
  sig.on("call:sfu-standby", (data) => prepareStandby(data));
  sig.on("call:room-replaced", (data) => onRoomReplaced(data).catch((err) => log(`room replaced: ${err.message}`)));
  sig.on("call:ended", (data) => onCallEnded(data));
  sig.on("new-producer", (data) => { if (data.kind === "video") noteProducer(data.participantId, data.producerId); });
  sig.on("producer-closed", (data) => {
    const set = state.producers.get(data.participantId);
    if (set) set.delete(data.producerId);
  });
  sig.on("webrtc:offer", (data) => onOffer(data).catch((err) => log(`offer: ${err.message}`)));
  sig.on("webrtc:answer", (data) => onAnswer(data).catch((err) => log(`answer: ${err.message}`)));
  sig.on("webrtc:ice-candidate", (data) => onCandidate(data));
  sig.on("disconnect", (reason) => onDisconnect(reason));
}

// The socket's first connection, or a failure to get one.
function connectSocket() {
  return new Promise((resolve, reject) => {
    const onError = (err) => { socket.off("connect", onConnect); reject(new Error(`signaling: ${err.message}`)); };
    const onConnect = () => { socket.off("connect_error", onError); resolve(socket.id); };
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
    socket.connect();
  });
}

// POST .../participants with this socket, starting the call under its id
// when it does not exist (yet, or any more: a server restart ended it).
async function joinCall() {
  const path = `/api/calls/${encodeURIComponent(state.callId)}/participants`;
  try {
    return await api(path, { socketId: socket.id, role: wantedRole });
  } catch (err) {
    if (err.status !== 404 && err.status !== 409) throw err;
    await api("/api/calls", { callId: state.callId }).catch((e) => { if (e.status !== 409) throw e; });
    return await api(path, { socketId: socket.id, role: wantedRole });
  }
}

// ------------------------------------------------------- reconnection

// The socket is back (socket.io-client reconnects with backoff). Within the
// server's grace period the page re-attaches to its place in the call
// (call:attach; events missed meanwhile are delivered); when the server no
// longer knows it (restarted, or the grace ran out) the page drops every
// path and joins the call again.
async function onReconnected() {
  if (state.left || !state.participantId || !state.callId) return;
  const ack = await sig.emit("call:attach", { callId: state.callId, participantId: state.participantId });
  if (ack && ack.ok && !state.ended) {
    log("signaling reconnected: attached again");
    return;
  }
  log(`joining the call again (${state.ended ? "it ended: " + state.ended : ack && ack.error})`);
  const rejoin = { startedAt: performance.now(), doneAt: null, reason: state.ended || (ack && ack.error) || "" };
  state.rejoins.push(rejoin);
  closeP2P();
  closePublisher({ lost: true });
  for (const r of state.remotes.values()) closeView(r, { lost: true });
  for (const pid of [...state.remotes.keys()]) dropRemote(pid);
  state.peers.clear();
  state.producers.clear();
  state.sfu = null;
  state.mode = null;
  state.ended = null;
  state.pending = null;
  try {
    const joined = await joinCall();
    state.participantId = joined.participantId;
    state.role = joined.role;
    rejoin.joinedAt = performance.now();
  } catch (err) {
    log(`rejoin failed: ${err.message}`);
    rejoin.error = err.message;
  }
  render();
}

function onCallEnded(data) {
  const restart = data.reason === "server-shutdown" || data.reason === "server-restart";
  setStatus(`call ended (${data.reason})${restart ? "; rejoining when the server is back" : ""}`);
  log(`call ended: ${data.reason}`);
  if (restart) state.ended = data.reason;   // the socket's reconnection joins it again
  else state.left = true;
}

// The socket dropped. socket.io-client reconnects by itself, except after
// the server disconnected it on purpose (a shutdown): then the page asks.
function onDisconnect(reason) {
  if (state.left) return;
  setStatus("signaling connection lost; reconnecting");
  log(`signaling disconnected (${reason})`);
  if (reason === "io server disconnect") setTimeout(() => { if (!state.left) socket.connect(); }, 250);
}

async function main() {
  if (!token) throw new Error("no token: open this page with ?token=<JWT> (sfu-server --dev-auth prints URLs)");
  state.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  $("local").srcObject = state.local;
  wireEvents();
  await connectSocket();
  socket.on("connect", () => onReconnected().catch((err) => log(`reconnect: ${err.message}`)));
  if (!state.callId) {
    state.callId = (await api("/api/calls", {})).callId;
  }
  const joined = await joinCall();
  state.participantId = joined.participantId;
  state.role = joined.role;
  $("call").textContent = state.callId;
  const share = new URL(location.href);
  share.searchParams.set("call", state.callId);
  share.searchParams.delete("token");
  $("share").href = share.toString();
  history.replaceState(null, "", `?call=${encodeURIComponent(state.callId)}&token=${encodeURIComponent(token)}` +
                                 (wantedRole ? `&role=${encodeURIComponent(wantedRole)}` : ""));
  $("leave").disabled = false;
  $("leave").onclick = leaveCall;
  window.addEventListener("pagehide", () => {
    if (state.left) return;
    fetch(`/api/calls/${encodeURIComponent(state.callId)}/leave`, {
      method: "POST", keepalive: true, headers: { "Content-Type": "application/json", ...auth },
      body: JSON.stringify({ participantId: state.participantId }),
    });
  });
  render();
  setTimeout(poll, POLL_MS);
}

main().catch((err) => { console.error(err); setStatus(`error: ${err.message || err}`); });
