"""Multi-turn conversations (``[load] turns`` > 1): which turn of which conversation a request
key is, and what a turn sends.

A closed-loop user's requests in a stage are numbered n = 1, 2, ... (their keys
``<stage>/<stream>/<n>``, ``locustfiles.prompts.request_key``). With N turns, requests 1..N are
conversation 1, N+1..2N conversation 2, and so on: a request's conversation (``session``, the
key of its first turn) and ``turn`` (1..N) follow from its key alone, so every arm sends the
same turn of the same conversation under the same key. A turn after the first sends the whole
history, every earlier message and the answers this endpoint actually gave (content only, no
reasoning: what a chat client sends back), then what the user adds in this turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from locustfiles.prompts import PlannedRequest, request_key

Messages = list[dict[str, Any]]


def conversation_place(stage: int, stream: str, n: int, turns: int) -> tuple[str, int]:
    """(session, turn) of the n-th request (from 1) of user stream ``stream`` in ``stage``: the
    conversation's first key and the turn within it (1..turns)."""
    turn = (n - 1) % turns + 1
    return request_key(stage, stream, n - turn + 1), turn


def last_of_conversation(n: int, turns: int) -> int:
    """The number of the last turn's request of the conversation request n belongs to."""
    return ((n - 1) // turns + 1) * turns


@dataclass
class Turn:
    """One turn as sent: where it is, what it asks for, the messages sent (history first), and
    the answer's content text as it streams in (pieces)."""

    session: str
    number: int                    # 1..turns
    planned: PlannedRequest        # this turn's own part (turn 1: the whole first request)
    messages: Messages             # what is sent: the history, then this turn's messages
    answer: list[str] = field(default_factory=list)

    def history_after(self) -> Messages:
        """The history the next turn sends: these messages and this turn's answer."""
        return [*self.messages, {"role": "assistant", "content": "".join(self.answer)}]
