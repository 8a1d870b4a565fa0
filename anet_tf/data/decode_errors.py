"""What a TensorFlow image-decoding error says, without TensorFlow: the decoders'
messages come wrapped in graph-execution text (``Graph execution error:``,
``Detected at node ...``, Python frames); :func:`decoder_reason` finds the line
that says what the decoder found."""

from __future__ import annotations

import re


def decoder_reason(message: str) -> str | None:
    """The line of a TensorFlow error message that says what the decoder found
    (e.g. ``jpeg::Uncompress failed. Invalid JPEG data or crop window.``), or None."""
    for line in message.splitlines():
        text = re.sub(r"\{\{[^}]*\}\}", "", line).strip()
        if (
            not text
            or text.startswith(
                ("Graph execution error", "Detected at node", "File ", "[[", "<stack traces")
            )
            or text.endswith(" in <module>")
        ):
            continue
        return text[:200]
    return None
