from locustfiles.sse import SSEDecoder

STREAM = (b'data: {"a": 1}\n\n'
          b': a comment\n\n'
          b'event: message\nid: 7\nretry: 10\ndata: {"b": 2}\n\n'
          b'data: first line\ndata: second line\n\n'
          b'data: [DONE]\n\n')
EXPECTED = [b'{"a": 1}', b'{"b": 2}', b"first line\nsecond line", b"[DONE]"]


def test_whole_stream_in_one_read_gives_every_event():
    decoder = SSEDecoder()
    assert decoder.feed(STREAM) == EXPECTED
    assert decoder.close() is None


def test_events_split_at_every_byte_boundary():
    for cut in range(1, len(STREAM)):
        decoder = SSEDecoder()
        events = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert events == EXPECTED, cut


def test_byte_by_byte_feed():
    decoder = SSEDecoder()
    events = []
    for i in range(len(STREAM)):
        events += decoder.feed(STREAM[i:i + 1])
    assert events == EXPECTED


def test_crlf_line_endings_and_no_space_after_colon():
    decoder = SSEDecoder()
    assert decoder.feed(b'data:{"x":1}\r\n\r\ndata: [DONE]\r\n\r\n') == [b'{"x":1}', b"[DONE]"]


def test_non_data_lines_are_ignored():
    decoder = SSEDecoder()
    assert decoder.feed(b"garbage without colon\nretry: 5\n\n") == []


def test_event_missing_final_blank_line_is_delivered_at_close():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: [DONE]') == [b'{"a": 1}']
    assert decoder.close() == b"[DONE]"


def test_feed_line_interface_matches_feed():
    decoder = SSEDecoder()
    out = [decoder.feed_line(line) for line in STREAM.split(b"\n")]
    assert [e for e in out if e is not None] == EXPECTED


def test_whole_events_with_blank_line_runs_and_comments():
    decoder = SSEDecoder()
    chunk = b'data: {"a": 1}\n\n\n\n: ping\n\ndata: x\ndata: y\n\ndata:[DONE]\n\n'
    assert decoder.feed(chunk) == [b'{"a": 1}', b"x\ny", b"[DONE]"]


def test_reads_that_almost_look_like_one_event_are_not_cut_short():
    # one-event reads take a shortcut; these look like one event but are not
    cases = [
        ([b"data: a\nb\n\n"], [b"a"]),                       # "b" is an unknown field line
        ([b"data: a\ndata: b\n\n"], [b"a\nb"]),               # two data lines, one event
        ([b"data: a\n\n", b"data: b\r\n\r\n"], [b"a", b"b"]),
        ([b"data: a\nX", b"\n\n"], [b"a"]),                    # ends mid-line
        ([b"data: a\n", b"\ndata: b\n\n"], [b"a", b"b"]),
    ]
    for reads, expected in cases:
        decoder = SSEDecoder()
        events = [e for read in reads for e in decoder.feed(read)]
        assert events == expected, reads
        assert decoder.close() is None, reads
