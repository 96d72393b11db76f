"""A WHIP publisher made of GStreamer's webrtcbin, driven through PyGObject.

Runs with Debian's /usr/bin/python3 (python3-gi, gir1.2-gstreamer-1.0,
gir1.2-gst-plugins-base-1.0, gir1.2-gst-plugins-bad-1.0, gir1.2-nice-0.1;
the elements come
from gstreamer1.0-plugins-{base,good,bad,ugly} and gstreamer1.0-nice).
GStreamer 1.22 has no whipsink (that element lives in gst-plugins-rs), so
this script does what a WHIP client does and nothing more: webrtcbin makes
the offer, it is POSTed to the WHIP URL as application/sdp, and the 201
answer is set as the remote description. The answer carries the server's
ICE-lite candidate, so no trickle is needed.

Usage: /usr/bin/python3 gst_whip.py WHIP_URL vp8|h264 SECONDS [BUNDLE_POLICY]

Prints one line per event as JSON on stdout (``offer``, ``answer``,
``state``, ``renegotiation-needed``, ``error``, ``done``) and exits 0 when it published for SECONDS
with ICE connected, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

VIDEO = {
    "vp8": "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
           "! videoconvert ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay ! "
           "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! webrtc.",
    "h264": "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
            "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 "
            "! video/x-h264,profile=constrained-baseline ! h264parse ! rtph264pay config-interval=-1 ! "
            "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000 ! webrtc.",
}
AUDIO = ("audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay ! "
         "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc.")


def say(event: str, **data: object) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


class Publisher:
    def __init__(self, url: str, codec: str, seconds: float, bundle_policy: str) -> None:
        self.url = url
        self.seconds = seconds
        self.ok = False
        self.loop = GLib.MainLoop()
        desc = f"webrtcbin name=webrtc bundle-policy={bundle_policy} {VIDEO[codec]} {AUDIO}"
        self.pipe = Gst.parse_launch(desc)
        self.webrtc = self.pipe.get_by_name("webrtc")
        self._allow_loopback()
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::ice-connection-state", self._on_state)
        self.webrtc.connect("notify::connection-state", self._on_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)
        self.started_at: float | None = None
        self.offered = False

    def _allow_loopback(self) -> None:
        """libnice leaves loopback interfaces out when it lists the host's
        addresses, so in a namespace with only `lo` webrtcbin would gather no
        candidate at all. Naming 127.0.0.1 as the agent's local address
        (libnice's own API, what an application on a loopback-only host
        does) makes it gather a host candidate there."""
        # PyGObject sinks the ICE object's floating reference and drops it
        # with the wrapper: keep the wrappers for the publisher's lifetime.
        self._ice = self.webrtc.get_property("ice-agent")
        self._agent = self._ice.get_property("agent")
        addr = Nice.Address.new()
        addr.set_from_string("127.0.0.1")
        self._agent.add_local_address(addr)

    def run(self) -> bool:
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add_seconds(max(30, int(self.seconds) + 30), self._give_up)
        self.loop.run()
        self.pipe.set_state(Gst.State.NULL)
        return self.ok

    def _give_up(self) -> bool:
        say("error", message="timed out before ICE connected")
        self.loop.quit()
        return False

    def _on_error(self, _bus: Gst.Bus, msg: Gst.Message) -> None:
        err, dbg = msg.parse_error()
        say("error", message=f"{err.message} ({dbg})")
        self.loop.quit()

    def _on_state(self, webrtc: Gst.Element, _pspec: object) -> None:
        ice = webrtc.get_property("ice-connection-state").value_nick
        conn = webrtc.get_property("connection-state").value_nick
        say("state", ice=ice, connection=conn)
        if conn == "connected" and self.started_at is None:
            self.started_at = 0.0
            GLib.timeout_add(int(self.seconds * 1000), self._done)
        elif conn == "failed":
            say("error", message="connection failed")
            self.loop.quit()

    def _done(self) -> bool:
        self.ok = True
        say("done")
        self.loop.quit()
        return False

    def _on_negotiation_needed(self, webrtc: Gst.Element) -> None:
        # WHIP is one offer/answer exchange; webrtcbin asks again when the
        # answer leaves a section unused, which WHIP has no way to redo.
        if self.offered:
            say("renegotiation-needed")
            return
        self.offered = True
        promise = Gst.Promise.new_with_change_func(self._on_offer, webrtc, None)
        webrtc.emit("create-offer", None, promise)

    def _on_offer(self, promise: Gst.Promise, webrtc: Gst.Element, _data: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, Gst.Promise.new())
        sdp = offer.sdp.as_text()
        say("offer", sdp=sdp)
        # The HTTP round trip happens off the streaming thread.
        threading.Thread(target=self._post, args=(sdp,), daemon=True).start()

    def _post(self, sdp: str) -> None:
        req = urllib.request.Request(self.url, data=sdp.encode(), method="POST",
                                     headers={"Content-Type": "application/sdp"})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                status, body, location = resp.status, resp.read().decode(), resp.headers.get("Location")
        except urllib.error.HTTPError as exc:
            say("error", message=f"WHIP POST: HTTP {exc.code}", body=exc.read().decode(errors="replace"))
            GLib.idle_add(self.loop.quit)
            return
        except OSError as exc:
            say("error", message=f"WHIP POST: {exc}")
            GLib.idle_add(self.loop.quit)
            return
        say("answer", status=status, location=location, sdp=body)
        if status != 201:
            say("error", message=f"WHIP POST: status {status}, expected 201")
            GLib.idle_add(self.loop.quit)
            return
        GLib.idle_add(self._set_answer, body)

    def _set_answer(self, text: str) -> bool:
        res, msg = GstSdp.SDPMessage.new_from_text(text)
        if res != GstSdp.SDPResult.OK:
            say("error", message="the answer does not parse as SDP")
            self.loop.quit()
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        return False


def main() -> int:
    url, codec, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    bundle_policy = sys.argv[4] if len(sys.argv) > 4 else "max-bundle"
    Gst.init(None)
    return 0 if Publisher(url, codec, seconds, bundle_policy).run() else 1


if __name__ == "__main__":
    sys.exit(main())
