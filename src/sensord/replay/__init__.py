"""Recordings and offline replay through the rule set."""

from sensord.replay._offline import ReplayResult, replay
from sensord.replay._recording import read_recording, write_recording

__all__ = ["ReplayResult", "read_recording", "replay", "write_recording"]
