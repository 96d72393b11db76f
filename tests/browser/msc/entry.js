// A room participant written the way mediasoup-client's documentation says
// to use it, against sfu-server's REST API (signaling/server.py):
//
//   create room / join -> Device.load({routerRtpCapabilities})
//   -> createSendTransport / createRecvTransport with the server's
//      {id, iceParameters, iceCandidates, dtlsParameters}
//   -> transport.on('connect')  -> POST .../transports/{id}/connect
//   -> sendTransport.on('produce') -> POST .../transports/{id}/produce -> {id}
//   -> sendTransport.produce({track}) for a microphone and a camera track
//   -> for every other participant's producer (the room's list, then each
//      WebSocket 'new-producer' event, at once): POST .../consume ->
//      recvTransport.consume({id, producerId, kind, rtpParameters}) ->
//      POST .../consumers/{id}/resume
//
// Query parameters: room, token (a JWT; omitted when the server runs without
// authentication), codec (a video mimeType such as video/H264; the router's
// first video codec when absent), order=video-first (produce the camera
// before the microphone; audio first otherwise), simulcast=1 (three
// encodings, only to see what the server answers), publish=0 (consume only:
// no send transport, nothing produced), relay=1 (the receive transport goes
// through a relay the test runner starts: for each UDP candidate of the
// server the page calls window.relayFor(port), a function the runner exposes,
// and uses the address 127.0.0.1:<answered port> instead; TCP candidates are
// left out).
//
// State for the test runner: window.msc (status, errors, ...), and
// window.mscStats() / window.mscLeave().

import { Device } from 'mediasoup-client';

const query = new URLSearchParams(location.search);
const roomId = query.get('room') || 'msc';
const token = query.get('token') || '';
const wantedCodec = (query.get('codec') || '').toLowerCase();
const simulcast = query.get('simulcast') === '1';
// svc=L3T3_KEY (or another scalabilityMode): one encoding with spatial and
// temporal layers (VP9 SVC), instead of simulcast
const svcMode = query.get('svc') || '';
const videoFirst = query.get('order') === 'video-first';
const publish = query.get('publish') !== '0';
const viaRelay = query.get('relay') === '1';
// server=http://host:port: the SFU to use when it is not the page's own origin
// (a cluster node; the node allows the page's origin with --cors-origin)
const server = (query.get('server') || '').replace(/\/$/, '');
const base = `${server}/api/rooms/${encodeURIComponent(roomId)}`;

const state = {
  status: 'starting',
  errors: [],
  participantId: null,
  handlerName: null,
  produced: {},          // kind -> {id, codec, ssrc, mid, error}
  produceErrors: [],     // answers of the server to refused produce requests
  remotes: new Map(),    // producerId -> record (see consumeProducer)
  events: [],            // WebSocket events, in arrival order
  sendCodecs: [],        // the device's video codecs for sending
  relayed: [],           // relay=1: [{from: server port, to: relay port}]
};
window.msc = state;

let device;
let sendTransport;
let recvTransport;
let bearer = token;      // JWT, or the participant token without authentication

function fail(where, err) {
  const text = `${where}: ${err && err.message ? err.message : String(err)}`;
  state.errors.push(text);
  console.error(text);
}

async function api(path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (state.participantId) headers['X-Participant-Id'] = state.participantId;
  const res = await fetch(base + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data;
  try { data = JSON.parse(text); } catch (e) { data = { error: text }; }
  if (!res.ok) {
    const err = new Error(`${res.status} ${data.error || text}`);
    err.status = res.status;
    err.body = data;
    throw err;
  }
  return data;
}

function remoteView(participantId) {
  let view = document.getElementById(`p-${participantId}`);
  if (!view) {
    view = document.createElement('video');
    view.id = `p-${participantId}`;
    view.autoplay = true;
    view.muted = true;
    view.playsInline = true;
    view.width = 160;
    view.srcObject = new MediaStream();
    document.getElementById('remotes').appendChild(view);
  }
  return view;
}

async function consumeProducer({ producerId, participantId, kind }) {
  if (participantId === state.participantId || state.remotes.has(producerId)) return;
  const rec = { producerId, participantId, kind, state: 'consuming' };
  state.remotes.set(producerId, rec);
  try {
    const answer = await api('/consume', {
      transportId: recvTransport.id,
      producerId,
      rtpCapabilities: device.recvRtpCapabilities,
    });
    rec.consumerId = answer.id;
    rec.rtpParameters = answer.rtpParameters;
    const consumer = await recvTransport.consume({
      id: answer.id,
      producerId: answer.producerId,
      kind: answer.kind,
      rtpParameters: answer.rtpParameters,
    });
    rec.consumer = consumer;
    rec.mid = consumer.rtpParameters.mid;
    remoteView(participantId).srcObject.addTrack(consumer.track);
    await api(`/consumers/${answer.id}/resume`, {});
    rec.state = 'resumed';
  } catch (err) {
    rec.state = 'failed';
    rec.error = String(err && err.message ? err.message : err);
    fail(`consume ${kind} of ${participantId}`, err);
  }
}

function closeRemote(producerId) {
  const rec = state.remotes.get(producerId);
  if (!rec) return;
  rec.state = 'closed';
  if (rec.consumer && !rec.consumer.closed) rec.consumer.close();
}

function openEvents() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const wsBase = server ? server.replace(/^http/, 'ws') + base.slice(server.length)
      : `${scheme}://${location.host}${base}`;
    const ws = new WebSocket(`${wsBase}/ws?token=${encodeURIComponent(bearer)}`
                          + `&participantId=${encodeURIComponent(state.participantId)}`);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error('WebSocket failed'));
    ws.onmessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      state.events.push(ev.event);
      if (ev.event === 'new-producer') consumeProducer(ev.data);
      else if (ev.event === 'producer-closed') closeRemote(ev.data.producerId);
    };
  });
}

function wireTransport(transport) {
  transport.on('connect', ({ dtlsParameters }, callback, errback) => {
    api(`/transports/${transport.id}/connect`, { dtlsParameters }).then(() => callback(), errback);
  });
  transport.on('connectionstatechange', (s) => { state[`${transport.direction}State`] = s; });
}

// relay=1: the server's UDP candidates rewritten to the relay the runner
// starts toward each of them (window.relayFor(port) -> the relay's port)
async function relayCandidates(candidates) {
  if (typeof window.relayFor !== 'function') throw new Error('relay=1 but the runner exposed no relayFor');
  const out = [];
  for (const c of candidates) {
    if ((c.protocol || 'udp').toLowerCase() !== 'udp') continue;
    const port = await window.relayFor(c.port);
    state.relayed.push({ from: c.port, to: port });
    const copy = Object.assign({}, c, { port });
    if ('ip' in copy) copy.ip = '127.0.0.1';
    if ('address' in copy) copy.address = '127.0.0.1';
    out.push(copy);
  }
  return out;
}

async function makeTransport(direction) {
  const t = await api('/transports', { direction });
  const options = {
    id: t.id,
    iceParameters: t.iceParameters,
    iceCandidates: direction === 'recv' && viaRelay ? await relayCandidates(t.iceCandidates) : t.iceCandidates,
    dtlsParameters: t.dtlsParameters,
  };
  const transport = direction === 'send' ? device.createSendTransport(options) : device.createRecvTransport(options);
  wireTransport(transport);
  return transport;
}

async function produceAll() {
  // libwebrtc sends as many simulcast encodings as the resolution allows:
  // three from 960x540 up (one at 320x240)
  const size = query.get('layers') === '1' ? { width: 960, height: 540 } : { width: 320, height: 240 };
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: { ideal: size.width }, height: { ideal: size.height }, frameRate: { ideal: 15 } },
  });
  document.getElementById('local').srcObject = stream;
  const videoCodecs = device.sendRtpCapabilities.codecs.filter((c) => c.kind === 'video');
  state.sendCodecs = videoCodecs.map((c) => ({ mimeType: c.mimeType, parameters: c.parameters }));
  let codec;
  if (wantedCodec) {
    codec = videoCodecs.find((c) => c.mimeType.toLowerCase() === wantedCodec);
    if (!codec) throw new Error(`the device cannot send ${wantedCodec}`);
  }
  const jobs = [
    ['audio', { track: stream.getAudioTracks()[0] }],
    ['video', Object.assign(
      { track: stream.getVideoTracks()[0] },
      codec ? { codec } : {},
      simulcast ? { encodings: [
        // three temporal layers in each (L1T3, as most mediasoup-client apps publish)
        { rid: 'r0', scaleResolutionDownBy: 4, maxBitrate: 100000, scalabilityMode: 'L1T3' },
        { rid: 'r1', scaleResolutionDownBy: 2, maxBitrate: 300000, scalabilityMode: 'L1T3' },
        { rid: 'r2', maxBitrate: 900000, scalabilityMode: 'L1T3' },
      ] } : {},
      svcMode ? { encodings: [{ scalabilityMode: svcMode, maxBitrate: 1300000 }] } : {},
    )],
  ];
  if (videoFirst) jobs.reverse();
  for (const [kind, options] of jobs) {
    try {
      const producer = await sendTransport.produce(options);
      const enc = producer.rtpParameters.encodings[0] || {};
      state.produced[kind] = {
        id: producer.id,
        codec: producer.rtpParameters.codecs[0].mimeType,
        ssrc: enc.ssrc,
        mid: producer.rtpParameters.mid,
        rtcp: producer.rtpParameters.rtcp,
        encodings: producer.rtpParameters.encodings,
      };
      window[`msc_${kind}Producer`] = producer;
    } catch (err) {
      state.produced[kind] = { error: String(err && err.message ? err.message : err) };
      fail(`produce ${kind}`, err);
    }
  }
}

async function main() {
  state.status = 'joining';
  await api('/create', {});
  const joined = await api('/participants', {});
  state.participantId = joined.participantId;
  if (!token) bearer = joined.token;

  device = await Device.factory();
  state.handlerName = device.handlerName;
  await device.load({ routerRtpCapabilities: joined.rtpCapabilities });
  if (!device.canProduce('audio') || !device.canProduce('video')) throw new Error('the device cannot produce');

  if (publish) sendTransport = await makeTransport('send');
  if (sendTransport) sendTransport.on('produce', ({ kind, rtpParameters }, callback, errback) => {
    api(`/transports/${sendTransport.id}/produce`, { kind, rtpParameters }).then(
      (data) => callback({ id: data.id }),
      (err) => {
        state.produceErrors.push({ kind, status: err.status, error: err.body ? err.body.error : String(err),
                                   encodings: rtpParameters.encodings });
        errback(err);
      });
  });
  recvTransport = await makeTransport('recv');

  // Events first, then the list: nothing published in between is missed
  // (consumeProducer ignores a producer it already has).
  state.status = 'subscribing';
  await openEvents();
  const publishing = publish ? produceAll() : Promise.resolve();
  const { producers } = await api('/producers');
  for (const p of producers) consumeProducer(p);
  await publishing;
  state.status = state.errors.length ? 'error' : 'ready';
}

function counters(report) {
  const out = [];
  const codecs = new Map();
  report.forEach((r) => { if (r.type === 'codec') codecs.set(r.id, r.mimeType); });
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    out.push({
      ssrc: r.ssrc,
      kind: r.kind,
      mid: r.mid,
      packetsReceived: r.packetsReceived || 0,
      bytesReceived: r.bytesReceived || 0,
      framesDecoded: r.framesDecoded || 0,
      keyFramesDecoded: r.keyFramesDecoded || 0,
      frameWidth: r.frameWidth || 0,
      frameHeight: r.frameHeight || 0,
      pliCount: r.pliCount || 0,
      nackCount: r.nackCount || 0,
      packetsLost: r.packetsLost || 0,
      jitterBufferDelay: r.jitterBufferDelay || 0,
      jitterBufferEmittedCount: r.jitterBufferEmittedCount || 0,
      freezeCount: r.freezeCount || 0,
      totalFreezesDuration: r.totalFreezesDuration || 0,
      framesPerSecond: r.framesPerSecond || 0,
      codec: codecs.get(r.codecId) || null,
    });
  });
  return out;
}

window.mscStats = async () => {
  const remotes = [];
  for (const rec of state.remotes.values()) {
    const item = {
      producerId: rec.producerId,
      participantId: rec.participantId,
      kind: rec.kind,
      state: rec.state,
      error: rec.error || null,
      consumerId: rec.consumerId || null,
      mid: rec.mid || null,
      expectedSsrc: rec.rtpParameters ? rec.rtpParameters.encodings[0].ssrc : null,
      codec: rec.rtpParameters ? rec.rtpParameters.codecs[0].mimeType : null,
      rtcp: rec.rtpParameters ? rec.rtpParameters.rtcp : null,
      inbound: [],
    };
    if (rec.consumer && !rec.consumer.closed) item.inbound = counters(await rec.consumer.getStats());
    remotes.push(item);
  }
  let transport = [];
  let recvPair = null;
  if (recvTransport && !recvTransport.closed) {
    const report = await recvTransport.getStats();
    transport = counters(report);
    report.forEach((r) => {   // the selected pair (its RTT grows with a relay's queue)
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
        recvPair = { currentRoundTripTime: r.currentRoundTripTime ?? null, bytesReceived: r.bytesReceived || 0,
                     availableIncomingBitrate: r.availableIncomingBitrate ?? null };
      }
    });
  }
  return {
    status: state.status,
    errors: state.errors,
    participantId: state.participantId,
    handlerName: state.handlerName,
    produced: state.produced,
    produceErrors: state.produceErrors,
    sendCodecs: state.sendCodecs,
    sendState: state.sendState || null,
    recvState: state.recvState || null,
    events: state.events,
    remotes,
    transportInbound: transport,
    recvPair,
    relayed: state.relayed,
  };
};

// what the page sends, per encoding (a publisher's simulcast: which
// encodings go out, at what size, and why libwebrtc limits them)
window.mscOutbound = async () => {
  if (!sendTransport || sendTransport.closed) return [];
  const out = [];
  (await sendTransport.getStats()).forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
    out.push({
      rid: r.rid || null,
      ssrc: r.ssrc,
      bytesSent: r.bytesSent || 0,
      framesEncoded: r.framesEncoded || 0,
      frameWidth: r.frameWidth || 0,
      framesPerSecond: r.framesPerSecond || 0,
      targetBitrate: r.targetBitrate || 0,
      qualityLimitationReason: r.qualityLimitationReason || null,
      active: r.active ?? null,
      scalabilityMode: r.scalabilityMode || null,
    });
  });
  return out;
};

window.mscLeave = async () => {
  if (!state.participantId) return;
  await api(`/participants/${state.participantId}/leave`, {});
  if (sendTransport) sendTransport.close();
  if (recvTransport) recvTransport.close();
  state.status = 'left';
};

main().catch((err) => {
  fail('main', err);
  state.status = 'error';
});
