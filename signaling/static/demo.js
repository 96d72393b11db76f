// sfu demo: publish with WHIP (video in three simulcast encodings unless
// ?simulcast=0), view every other participant with WHEP, follow arrivals
// and departures over the room's WebSocket. Each tile shows the layer the
// SFU forwards to us, the decoded size and the SFU's estimate of our link.
// When the room goes away under us (its media worker died: `room-closed`,
// or the WebSocket dropped) the page posts its sessions again: the room is
// made anew, we publish and view everyone again. Plain JS.
"use strict";

const params = new URLSearchParams(location.search);
const room = params.get("room") || "demo-room";
// A server that authenticates (sfu-server always does) needs a JWT: ?token=...
const jwt = params.get("token");
const jwtAuth = jwt ? { Authorization: `Bearer ${jwt}` } : {};
const simulcast = params.get("simulcast") !== "0";
document.getElementById("room").textContent = room;
const statusEl = document.getElementById("status");
const setStatus = (text) => { statusEl.textContent = text; window.sfuStatus = text; };

let token = null;            // our WHIP session's participant token
let myId = null;             // our participant id
let publisher = null;        // {pc, location}
let ws = null;
let stream = null;
window.sfuRecoveries = [];   // {reason, at, publishedAt} (performance.now() ms)
const viewers = new Map();   // participantId -> {pc, figure}
window.sfuViewers = viewers;

function waitIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 1000);  // the SFU is ICE-lite: host candidates are enough
  });
}

async function exchange(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitIceGathering(pc);
  const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp", ...jwtAuth },
                                  body: pc.localDescription.sdp });
  if (resp.status !== 201) throw new Error(`${url}: ${resp.status} ${await resp.text()}`);
  await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  return resp;
}

async function publish(stream) {
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    const init = { direction: "sendonly" };
    if (simulcast && track.kind === "video") {
      // RFC 8853: the SFU forwards each viewer the encoding its link carries
      init.sendEncodings = [{ rid: "l", scaleResolutionDownBy: 4 }, { rid: "m", scaleResolutionDownBy: 2 },
                            { rid: "h" }];
    }
    pc.addTransceiver(track, init);
  }
  publisher = { pc, location: null };
  const resp = await exchange(pc, `/whip/${encodeURIComponent(room)}`);
  publisher.location = resp.headers.get("Location");
  token = publisher.location.split("/").pop();
  myId = resp.headers.get("X-Sfu-Participant-Id");
}

window.addEventListener("beforeunload", () => {
  if (publisher && publisher.location) {
    fetch(publisher.location, { method: "DELETE", keepalive: true, headers: jwtAuth });
  }
});

async function view(participantId) {
  if (viewers.has(participantId) || participantId === myId) return;
  const figure = document.createElement("figure");
  const video = document.createElement("video");
  video.autoplay = true; video.playsInline = true; video.muted = true;  // autoplay policy; unmute by click
  video.onclick = () => { video.muted = !video.muted; };
  const caption = document.createElement("figcaption");
  caption.textContent = participantId;
  figure.append(video, caption);
  const pc = new RTCPeerConnection();
  viewers.set(participantId, { pc, figure });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => { stream.addTrack(ev.track); video.srcObject = stream; };
  document.getElementById("videos").append(figure);
  try {
    const resp = await exchange(pc, `/whep/${encodeURIComponent(room)}?participant=${encodeURIComponent(participantId)}`);
    watchLayers(participantId, pc, resp, caption);
  } catch (err) {
    console.warn(err);
    drop(participantId);
  }
}

// The tile's caption: the simulcast layer the SFU forwards, what we decode
// and the SFU's bandwidth estimate toward us (REST stats of our consumer).
function watchLayers(participantId, pc, resp, caption) {
  const viewerToken = resp.headers.get("Location").split("/").pop();
  const viewerId = resp.headers.get("X-Sfu-Participant-Id");
  const consumers = Object.fromEntries((resp.headers.get("X-Sfu-Consumers") || "").split(",")
    .filter(Boolean).map((kv) => kv.split("=")));
  const video = pc.getTransceivers().find((t) => t.receiver.track.kind === "video");
  const consumerId = video && consumers[video.mid];
  if (!consumerId) return;
  const headers = jwt ? { ...jwtAuth, "X-Participant-Id": viewerId } : { Authorization: `Bearer ${viewerToken}` };
  const timer = setInterval(async () => {
    if (!viewers.has(participantId)) { clearInterval(timer); return; }
    try {
      const r = await fetch(`/api/rooms/${encodeURIComponent(room)}/consumers/${consumerId}/stats`, { headers });
      if (!r.ok) return;
      const { consumer, transport } = await r.json();
      let size = "";
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video" && s.frameWidth) size = `${s.frameWidth}x${s.frameHeight}`;
      });
      const link = transport.availableOutgoingBitrate ? ` · link ~${Math.round(transport.availableOutgoingBitrate / 1000)} kbit/s` : "";
      caption.textContent = `${participantId} · layer ${consumer.spatialLayer}${size ? ` · ${size}` : ""}${link}`;
      viewers.get(participantId).layers = { consumer, transport, size };
    } catch (err) { /* the next tick tries again */ }
  }, 1000);
}

function drop(participantId) {
  const v = viewers.get(participantId);
  if (!v) return;
  v.pc.close();
  v.figure.remove();
  viewers.delete(participantId);
}

const pendingViews = new Map();
function viewSoon(participantId) {
  // wait a moment so that both audio and video of a newcomer exist
  clearTimeout(pendingViews.get(participantId));
  pendingViews.set(participantId, setTimeout(() => view(participantId), 400));
}

// One go at the room: create it, publish, follow it over its WebSocket and
// view everyone in it.
async function session() {
  await fetch(`/api/rooms/${encodeURIComponent(room)}/create`, { method: "POST", headers: jwtAuth });
  await publish(stream);
  // with a JWT the server knows us by it, and our participant is named; without, the session token is the key
  const auth = { headers: jwt ? { ...jwtAuth, "X-Participant-Id": myId } : { Authorization: `Bearer ${token}` } };
  const wsAuth = jwt ? `token=${encodeURIComponent(jwt)}&participantId=${encodeURIComponent(myId)}`
                     : `token=${encodeURIComponent(token)}`;
  const socket = new WebSocket(`${location.origin.replace(/^http/, "ws")}/api/rooms/${encodeURIComponent(room)}/ws?${wsAuth}`);
  ws = socket;
  socket.onmessage = (msg) => {
    const { event, data } = JSON.parse(msg.data);
    if (event === "new-producer") viewSoon(data.participantId);
    if (event === "participant-left") drop(data.participantId);
    if (event === "room-closed") recover(`room closed: ${data.reason || "?"}`);
  };
  socket.onclose = () => { if (ws === socket) recover("room WebSocket closed"); };
  const { producers } = await (await fetch(`/api/rooms/${encodeURIComponent(room)}/producers`, auth)).json();
  for (const id of new Set(producers.map((p) => p.participantId))) view(id);
  setStatus(`publishing as ${myId}`);
}

// The room went away: drop what we had and post everything again, retrying
// with backoff (250 ms to 4 s) until the server takes it.
let recovering = false;
async function recover(reason) {
  if (recovering) return;
  recovering = true;
  const rec = { reason, at: performance.now(), publishedAt: null };
  window.sfuRecoveries.push(rec);
  console.warn(`sfu demo: ${reason}; posting the sessions again`);
  setStatus(`reconnecting (${reason})`);
  const old = ws;
  ws = null;
  if (old) old.close();
  for (const id of [...viewers.keys()]) drop(id);
  for (const t of pendingViews.values()) clearTimeout(t);
  pendingViews.clear();
  if (publisher) publisher.pc.close();
  publisher = null;
  for (let wait = 250; ; wait = Math.min(wait * 2, 4000)) {
    try {
      await session();
      rec.publishedAt = performance.now();
      break;
    } catch (err) {
      console.warn(`sfu demo: ${err.message}; again in ${wait} ms`);
      if (publisher) publisher.pc.close();
      publisher = null;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  recovering = false;
}

async function main() {
  // 960x540: browsers send three simulcast encodings from this size up
  stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: simulcast ? { width: { ideal: 960 }, height: { ideal: 540 } } : true });
  document.getElementById("local").srcObject = stream;
  await session();
}

main().catch((err) => { console.error(err); setStatus(`error: ${err.message || err}`); });
