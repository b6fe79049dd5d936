"""Encoder registry: raw texts / image files / audio files -> feature vectors."""

from .base import (
    KINDS,
    Encoder,
    EncoderError,
    check_item_file,
    check_spec,
    encoder_from_meta,
    load_encoder,
    register_encoder,
    resolve_device,
)

__all__ = [
    "KINDS",
    "Encoder",
    "check_item_file",
    "check_spec",
    "EncoderError",
    "encoder_from_meta",
    "load_encoder",
    "register_encoder",
    "resolve_device",
]
