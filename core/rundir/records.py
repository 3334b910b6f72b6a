"""The per-request record: ONE table of its columns, from which everything else derives.

``RequestRecord`` is the table. Each line is one column of records.csv, in file order: its name,
its Python type, its default (what a new record holds, and what a reader assumes for a blank
cell or a column an older file lacks, unless ``read_default`` says otherwise), whether it is
categorical (few distinct values: Arrow reads it dictionary-encoded), and its definition (the
docs and the report print it). ``RECORD_FIELDS``, ``RECORD_DEFAULTS``, ``FIELD_DEFINITIONS``,
``RECORD_COLUMNS`` and the Arrow types (``record_arrow_types``) are all derived from it.

Times are in seconds (base units); wall-clock instants are Unix seconds. A value that was not
reached (no first token, no usage) is NaN, never 0 or -1.

``ErrorCategory`` holds the stable failure categories a record's ``error_category`` can take.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

NAN = float("nan")


class ErrorCategory(StrEnum):
    """Stable failure categories. They appear in Locust's failure stats ("<category>: <short>"),
    in the records' ``error_category`` and in the report. Never rename one: reports compare runs.
    A member is its string (``ErrorCategory.STREAM_ERROR == "stream_error"``); ``definition``
    says what it means."""

    definition: str

    def __new__(cls, value: str, definition: str) -> "ErrorCategory":
        member = str.__new__(cls, value)
        member._value_ = value
        member.definition = definition
        return member

    CONNECTION_REFUSED = (
        'connection_refused',
        "TCP connect refused: nothing listens at the endpoint's host:port.")
    CONNECTION_RESET = (
        'connection_reset',
        'The connection was reset or closed by the server before a response.')
    CONNECT_FAILED = (
        'connect_failed',
        'No TCP connection for another reason (name not resolved, host unreachable).')
    CONNECT_TIMEOUT = (
        'connect_timeout',
        'No TCP connection within the connect timeout.')
    READ_TIMEOUT = (
        'read_timeout',
        'No bytes from the server within the read timeout (before or during the stream).')
    HTTP_4XX = (
        'http_4xx',
        "The server answered with HTTP 4xx; the body's message is kept.")
    HTTP_5XX = (
        'http_5xx',
        "The server answered with HTTP 5xx; the body's message is kept.")
    NOT_EVENT_STREAM = (
        'not_event_stream',
        'HTTP 200 but the response was not a server-sent event stream (Content-Type not '
        'text/event-stream): the server ignored stream=true or a proxy buffered it. The '
        'message keeps the Content-Type and the start of the body.')
    STREAM_ERROR = (
        'stream_error',
        'HTTP 200, then the stream carried an error event (vLLM: data: {"error": ...}).')
    MALFORMED_CHUNK = (
        'malformed_chunk',
        'A data: event that is not valid JSON or not a chat-completion chunk.')
    STREAM_TRUNCATED = (
        'stream_truncated',
        'The stream ended (connection closed) before data: [DONE].')
    EMPTY_ANSWER = (
        'empty_answer',
        'The stream finished (data: [DONE]) without a single token: no content or '
        'reasoning delta, and usage.completion_tokens 0 or absent (unless max_tokens was '
        '0).')
    INTERRUPTED = (
        'interrupted',
        'The request was still streaming when its stage or the run was stopped.')
    CLIENT_ERROR = (
        'client_error',
        'An unexpected error inside the load generator itself (a bug: please report).')

    @classmethod
    def for_http_status(cls, status: int) -> "ErrorCategory":
        """The category of an HTTP error status: http_4xx or http_5xx."""
        return cls.HTTP_4XX if 400 <= status < 500 else cls.HTTP_5XX


# category -> definition, in declaration order (the docs' table)
ERROR_CATEGORIES: dict[str, str] = {c.value: c.definition for c in ErrorCategory}

_SAME = object()


def column(default: Any, *, doc: str, categorical: bool = False,
           read_default: Any = _SAME) -> Any:
    """One column of the record table (a dataclass field with its metadata)."""
    return field(default=default, metadata={
        "doc": doc, "categorical": categorical,
        "read_default": default if read_default is _SAME else read_default})


@dataclass(slots=True)
class RequestRecord:
    """One streamed chat completion, as the load generator saw it: one row of records.csv."""

    run_id: str = column('', categorical=True, doc=(
        "The run directory's name: one Locust run against one or more endpoints."))
    endpoint: str = column('', categorical=True, doc=(
        "The endpoint's label from the endpoints config (e.g. A, B)."))
    model: str = column('', categorical=True, doc='The model name sent in the request.')
    repetition: int = column(0, doc=(
        'Repetition number of the sweep (1-based; 0 when run by hand in the web UI).'))
    stage: int = column(-1, doc=(
        'Index of the load stage (0-based) at request start; -1 outside a load shape.'))
    stage_users: int = column(0, doc=(
        "The stage's target concurrency (closed loop) or the user count (manual)."))
    phase: str = column('manual', categorical=True, doc=(
        'Phase of the stage at request start: ramp, warmup, steady, drain (or manual). Only '
        'steady requests enter the results.'))
    worker: str = column('', categorical=True, doc=(
        'Which load-generator process sent the request (host:pid).'))
    client: str = column('', categorical=True, doc=(
        'The HTTP client used: fast (geventhttpclient) or openai (the SDK).'))
    request_id: str = column('', doc=(
        'Unique id of the request, sent as its X-Request-Id header: joins the record to server '
        'logs and to a packet capture.'))
    request_key: str = column('', doc=(
        "The request's place in the seeded request stream, <stage>/<stream>/<n>: the n-th request "
        'of user stream <stream> in stage <stage>. Within a repetition every endpoint gets the '
        'same prompt and requested output length (and in open loop the same arrival offset) for '
        'the same key: the report pairs the arms on it. Trace replay: <stage>/trace/<line>. Blank '
        'in older runs.'))
    session: str = column('', doc=(
        "Multi-turn conversations ([load] turns > 1): the conversation's id, the request key of "
        'its first turn. Blank for single requests.'))
    turn: int = column(0, doc=(
        'The turn within its conversation (1 = the first, sent without history); 0 for single '
        'requests.'))
    dataset_item: int = column(-1, doc=(
        'The item (1-based) of the prompts file or trace file this request came from: its line '
        'in JSONL, its position in a JSON array; -1 for synthetic prompts.'))
    shared_prefix: bool = column(False, doc=(
        'True when the request began with the shared system prompt ([load] prefix_share, '
        'prefix_tokens).'))
    start_unix: float = column(NAN, doc=(
        "Wall-clock time the request left the host (Unix seconds): the kernel's transmit stamp "
        "when send_stamp is kernel, else the client's clock just before sending. Every interval "
        'below (TTFT, TTFAT, E2E) starts here.'))
    send_stamp: str = column('client', categorical=True, doc=(
        "Where start_unix came from: kernel (the transmit stamp of the request's first write; "
        "fast client on Linux) or client (the load generator's clock)."))
    presend_s: float = column(NAN, doc=(
        'Pre-send delay: from the client starting the request (connection from the pool, HTTP '
        'framing) to its bytes leaving the host; NaN without a kernel stamp.'))
    scheduled_unix: float = column(NAN, doc=(
        'When the request was due. Open loop: its Poisson arrival time. Trace replay: its arrival '
        "in the trace. Closed loop: when the user's previous stream ended (or its start spread "
        'elapsed, for its first request).'))
    send_lag_s: float = column(NAN, doc=(
        'start_unix - scheduled_unix: how late the load generator sent the request. Grows when '
        'the generator falls behind.'))
    requested_tokens: int = column(0, doc=(
        'max_tokens sent with the request (drawn per request from [max_tokens_min, max_tokens] '
        'when [request] max_tokens_min is set).'))
    ttft_s: float = column(NAN, doc=(
        'TTFT: request sent -> first streamed token of any kind (reasoning or answer). '
        'Role-only and empty chunks do not count. Chunk times are when the bytes reached the '
        "host (the kernel's receive stamp, fast client on Linux), not when the client read "
        'them.'))
    ttfat_s: float = column(NAN, doc=(
        'TTFAT: request sent -> first answer token (delta.content), after any reasoning.'))
    e2e_s: float = column(NAN, doc=(
        'E2E: request sent -> stream finished (data: [DONE], or the last byte).'))
    tpot_s: float = column(NAN, doc=(
        'TPOT: (E2E - TTFT) / (output_tokens - 1); NaN with fewer than 2 output tokens.'))
    chunks: int = column(0, doc='Streamed chunks that carried reasoning or answer text.')
    reasoning_chunks: int = column(0, doc=(
        'Chunks that carried reasoning text (delta.reasoning / reasoning_content).'))
    answer_chunks: int = column(0, doc='Chunks that carried answer text (delta.content).')
    prompt_tokens: float = column(NAN, doc="Prompt tokens from the server's usage.")
    output_tokens: float = column(NAN, doc=(
        'Output tokens: usage.completion_tokens, or the chunk count when the server sent no '
        'usage (see tokens_from_usage).'))
    reasoning_tokens: float = column(NAN, doc=(
        'usage.completion_tokens_details.reasoning_tokens; chunk count as fallback.'))
    answer_tokens: float = column(NAN, doc='output_tokens - reasoning_tokens.')
    tokens_from_usage: bool = column(False, read_default=True, doc=(
        "True when token counts came from the server's usage; False when they were counted from "
        'chunks (one chunk can carry several tokens).'))
    itl_mean_s: float = column(NAN, doc=(
        'Mean gap between successive content chunks (inter-token latency).'))
    itl_p50_s: float = column(NAN, doc='Median gap between successive content chunks.')
    itl_p99_s: float = column(NAN, doc='99th percentile gap between successive content chunks.')
    itl_max_s: float = column(NAN, doc='Longest gap between successive content chunks.')
    http_status: int = column(0, doc=(
        'HTTP status of the response; 0 when none arrived. Failures after the headers keep it '
        '(200 for stream failures).'))
    ok: bool = column(False, doc=(
        'True when the stream finished with data: [DONE], carried at least one token (or '
        'max_tokens was 0), and no error.'))
    error_category: str = column('', categorical=True, doc=(
        'Stable failure category (see ERROR_CATEGORIES); empty on success.'))
    error_message: str = column('', doc=(
        "The failure's message (server body text kept, secrets removed, <= 500 chars)."))


class Column(NamedTuple):
    """One column of records.csv, as the table declares it."""

    name: str
    type: type                 # str, int, float or bool
    default: Any               # a new record's value
    read_default: Any          # what a reader assumes for a blank cell or a missing column
    categorical: bool          # few distinct values (dictionary-encoded when read)
    definition: str

    @property
    def arrow_type_name(self) -> str:
        """The Arrow type this column is read as (see ``record_arrow_types``)."""
        if self.type is str:
            return "dictionary<string>" if self.categorical else "string"
        return {int: "int64", float: "float64", bool: "bool"}[self.type]


def _columns() -> tuple[Column, ...]:
    hints = typing.get_type_hints(RequestRecord)
    return tuple(Column(f.name, hints[f.name], f.default, f.metadata["read_default"],
                        f.metadata["categorical"], f.metadata["doc"])
                 for f in dataclasses.fields(RequestRecord))


RECORD_COLUMNS: tuple[Column, ...] = _columns()
RECORD_FIELDS: tuple[str, ...] = tuple(c.name for c in RECORD_COLUMNS)
RECORD_DEFAULTS: dict[str, Any] = {c.name: c.default for c in RECORD_COLUMNS}
FIELD_DEFINITIONS: dict[str, str] = {c.name: c.definition for c in RECORD_COLUMNS}
COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in RECORD_COLUMNS}


def record_arrow_types(names: typing.Iterable[str] | None = None) -> dict[str, Any]:
    """{column: pyarrow type} for the given columns (all, in file order, by default).
    pyarrow is imported here, not at module import: the load generator never needs it."""
    import pyarrow as pa

    dictionary = pa.dictionary(pa.int32(), pa.string())
    by_name = {"dictionary<string>": dictionary, "string": pa.string(), "int64": pa.int64(),
               "float64": pa.float64(), "bool": pa.bool_()}
    return {n: by_name[COLUMN_BY_NAME[n].arrow_type_name]
            for n in (RECORD_FIELDS if names is None else names)}


def record_arrow_schema() -> Any:
    """records.csv as a pyarrow schema (every column, file order)."""
    import pyarrow as pa

    return pa.schema(list(record_arrow_types().items()))


def record_values(record: RequestRecord) -> list[Any]:
    """A record's values in RECORD_FIELDS order (the batch message's row format)."""
    return [getattr(record, name) for name in RECORD_FIELDS]
