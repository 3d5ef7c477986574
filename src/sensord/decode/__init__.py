"""Decode stage: raw MQTT messages → validated numpy columns per family."""

from sensord.decode._batch import FamilyBatch
from sensord.decode._decoder import ELSEWHERE, Decoder, DecodeResult, shown
from sensord.decode._schemas import SCHEMAS, FieldSpec, field_specs
from sensord.decode._topic import TopicParts, TopicTemplate, filter_matches

__all__ = [
    "ELSEWHERE",
    "SCHEMAS",
    "DecodeResult",
    "Decoder",
    "FamilyBatch",
    "FieldSpec",
    "TopicParts",
    "TopicTemplate",
    "field_specs",
    "filter_matches",
    "shown",
]
