"""Encoder registry: raw texts / image files / audio files -> feature vectors."""

from .base import (
    KINDS,
    Encoder,
    EncoderError,
    check_item_file,
    check_spec,
    device_name,
    encoder_from_meta,
    load_encoder,
    register_encoder,
)

__all__ = [
    "KINDS",
    "Encoder",
    "check_item_file",
    "check_spec",
    "device_name",
    "EncoderError",
    "encoder_from_meta",
    "load_encoder",
    "register_encoder",
]
