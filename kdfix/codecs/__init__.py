"""Page codecs, chosen by the per-page flag (kdump-format.md §5)."""

from __future__ import annotations

from kdfix.codecs.base import CODECS, CODECS_BY_NAME, Codec, codec_for_flags, codec_named, decode_page

__all__ = ["CODECS", "CODECS_BY_NAME", "Codec", "codec_for_flags", "codec_named", "decode_page"]
