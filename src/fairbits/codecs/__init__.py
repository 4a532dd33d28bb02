"""Codecs under audit: the protocol, the registry and the rate search."""

from fairbits.codecs.base import Codec, Coded, available_codecs, codec_names, get_codec, register

__all__ = ["Codec", "Coded", "available_codecs", "codec_names", "get_codec", "register"]
