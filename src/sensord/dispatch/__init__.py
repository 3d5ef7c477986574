"""Dispatch: which receivers an alert reaches (routing tree), and who they are."""

from sensord.dispatch._check import alert_shapes, check_dispatch
from sensord.dispatch._handover import merge_state, state_by_community
from sensord.dispatch._notify import AckSeen, Dispatcher, message_id
from sensord.dispatch._routing import FIXED_LABELS, Routed, RouteNode, Router, alert_labels
from sensord.dispatch._silence import DEFAULT_MAX_SILENCE, SilenceTerms, max_silence, silence_terms
from sensord.dispatch._spec import DispatchSpec, LoadedDispatch, Matcher, Receiver, read_dispatch, spec_from

__all__ = [
    "DEFAULT_MAX_SILENCE",
    "FIXED_LABELS",
    "AckSeen",
    "DispatchSpec",
    "Dispatcher",
    "LoadedDispatch",
    "Matcher",
    "Receiver",
    "RouteNode",
    "Routed",
    "Router",
    "SilenceTerms",
    "alert_labels",
    "alert_shapes",
    "check_dispatch",
    "max_silence",
    "merge_state",
    "message_id",
    "read_dispatch",
    "silence_terms",
    "spec_from",
    "state_by_community",
]
