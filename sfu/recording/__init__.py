"""Recording without transcoding: RTP in, WebM/Matroska out (issue 14).

:class:`Recorder` is sans-IO: it takes RTP packets and sender reports with
their arrival times from any packet source.
"""

from sfu.recording.recorder import Recorder, RecordingError, Track, TrackStats

__all__ = ["Recorder", "RecordingError", "Track", "TrackStats"]
