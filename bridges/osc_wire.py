"""OSC 1.0 encoding shared by the OSC outputs (native /hop/..., VMC) and the OSC control input.

Messages are built with explicit type tags, never guessed from Python types, so
what goes on the wire is exactly what the caller names.
"""

from __future__ import annotations

from collections.abc import Iterable

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder


def osc_message(address: str, types: str, values: Iterable) -> OscMessage:
    """One OSC message with explicit type tags (no guessing from Python types)."""
    builder = OscMessageBuilder(address)
    for type_tag, value in zip(types, values, strict=True):
        builder.add_arg(value, type_tag)
    return builder.build()


def osc_bundle(messages: Iterable[OscMessage]) -> bytes:
    """One bundle, timetag 1 ("immediately"), holding the messages in order."""
    builder = OscBundleBuilder(IMMEDIATELY)
    for message in messages:
        builder.add_content(message)
    return builder.build().dgram
