"""Server-sent events, decoded incrementally from lines or from arbitrary byte chunks.

Only the ``data`` field matters for chat completions; comments (``:``), ``event``, ``id``,
``retry`` and unknown fields are ignored, as the SSE specification says. An event is dispatched
at a blank line; several ``data`` lines in one event are joined with ``\\n``.
"""

from __future__ import annotations


class SSEDecoder:
    """Turns lines (or byte chunks split anywhere) into event payloads (the joined data)."""

    __slots__ = ("_data", "_partial")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._partial = b""

    def feed_line(self, line: bytes) -> bytes | None:
        """Feed one line (with or without its line ending); returns a payload at event end."""
        line = line.rstrip(b"\r\n")
        if not line:
            if not self._data:
                return None
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            self._data = []
            return data
        if line.startswith(b"data:"):
            value = line[5:]
            if value[:1] == b" ":
                value = value[1:]
            self._data.append(value)
        # comments (":...") and other fields (event, id, retry, unknown) are ignored
        return None

    def feed(self, chunk: bytes) -> list[bytes]:
        """Feed bytes split at any point; returns the payloads of the events completed."""
        if (not self._partial and not self._data and chunk.startswith(b"data: ")
                and chunk.endswith(b"\n\n") and chunk.find(b"\n") == len(chunk) - 2
                and b"\r" not in chunk):
            return [chunk[6:-2]]  # the commonest read of all: exactly one one-line event
        if not self._partial and not self._data and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            # The common case, whole "data: {...}\n\n" events: no line-by-line work.
            events = []
            for block in chunk[:-2].split(b"\n\n"):
                if block.startswith(b"data: ") and b"\n" not in block:
                    events.append(block[6:])
                    continue
                for line in block.split(b"\n"):
                    self.feed_line(line)
                payload = self.feed_line(b"")
                if payload is not None:
                    events.append(payload)
            return events
        buffer = self._partial + chunk
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            payload = self.feed_line(line)
            if payload is not None:
                events.append(payload)
        return events

    def close(self) -> bytes | None:
        """End of stream: an event that lacked its final blank line is still delivered."""
        if self._partial:
            self.feed_line(self._partial)
            self._partial = b""
        return self.feed_line(b"")
