// sfu demo: publish with WHIP, view every other participant with WHEP,
// follow arrivals and departures over the room's WebSocket. Plain JS.
"use strict";

const params = new URLSearchParams(location.search);
const room = params.get("room") || "demo-room";
// A server that authenticates (sfu-server always does) needs a JWT: ?token=...
const jwt = params.get("token");
const jwtAuth = jwt ? { Authorization: `Bearer ${jwt}` } : {};
document.getElementById("room").textContent = room;
const statusEl = document.getElementById("status");
const setStatus = (text) => { statusEl.textContent = text; window.sfuStatus = text; };

let token = null;            // our WHIP session's participant token
let myId = null;             // our participant id
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
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  const resp = await exchange(pc, `/whip/${encodeURIComponent(room)}`);
  token = resp.headers.get("Location").split("/").pop();
  myId = resp.headers.get("X-Sfu-Participant-Id");
  window.addEventListener("beforeunload", () => {
    fetch(resp.headers.get("Location"), { method: "DELETE", keepalive: true, headers: jwtAuth });
  });
}

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
    await exchange(pc, `/whep/${encodeURIComponent(room)}?participant=${encodeURIComponent(participantId)}`);
  } catch (err) {
    console.warn(err);
    drop(participantId);
  }
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

async function main() {
  await fetch(`/api/rooms/${encodeURIComponent(room)}/create`, { method: "POST", headers: jwtAuth });
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  document.getElementById("local").srcObject = stream;
  await publish(stream);
  // with a JWT the server knows us by it, and our participant is named; without, the session token is the key
  const auth = { headers: jwt ? { ...jwtAuth, "X-Participant-Id": myId } : { Authorization: `Bearer ${token}` } };
  const wsAuth = jwt ? `token=${encodeURIComponent(jwt)}&participantId=${encodeURIComponent(myId)}`
                     : `token=${encodeURIComponent(token)}`;
  const ws = new WebSocket(`${location.origin.replace(/^http/, "ws")}/api/rooms/${encodeURIComponent(room)}/ws?${wsAuth}`);
  ws.onmessage = (msg) => {
    const { event, data } = JSON.parse(msg.data);
    if (event === "new-producer") viewSoon(data.participantId);
    if (event === "participant-left") drop(data.participantId);
  };
  const { producers } = await (await fetch(`/api/rooms/${encodeURIComponent(room)}/producers`, auth)).json();
  for (const id of new Set(producers.map((p) => p.participantId))) view(id);
  setStatus(`publishing as ${myId}`);
}

main().catch((err) => { console.error(err); setStatus(`error: ${err.message || err}`); });
