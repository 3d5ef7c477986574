"""Recordings, offline replay through the rule set, live record/play, rule-set comparison."""

from sensord.replay._compare import Comparison, compare, intervals
from sensord.replay._live import Limits, Outgoing, play, publish_stream, record
from sensord.replay._offline import ReplayResult, replay
from sensord.replay._progress import Progress
from sensord.replay._recording import RecordingWriter, read_recording, write_recording

__all__ = [
    "Comparison",
    "Limits",
    "Outgoing",
    "Progress",
    "RecordingWriter",
    "ReplayResult",
    "compare",
    "intervals",
    "play",
    "publish_stream",
    "read_recording",
    "record",
    "replay",
    "write_recording",
]
