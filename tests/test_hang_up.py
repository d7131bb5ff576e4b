"""Hanging up a stream, in both modes: over HTTP or a WebSocket, while waiting for a slot or mid
stream, the job is let go of, and asking again at once speaks the whole text; a stream that joins
a stored job in flight hears it whole."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from websockets.sync.client import connect

from .conftest import unique
from .servers import Server, wait_until
from .speaking import PARAGRAPH, speech, stored

_MISSES = "ttsd_cache_requests_total"


def _submitted(server: Server, misses: float) -> None:
    """The request's job is submitted: a client that leaves sooner (a loaded server may take that
    long to read its request) leaves nothing to let go of."""
    wait_until(lambda: server.metric(_MISSES, result="miss") > misses, 10.0, "the request's job")


def _hang_up_over_http(server: Server, text: str) -> None:
    """A streaming request whose client leaves while it waits for a slot: nothing was sent yet."""
    body = json.dumps({"input": text, "voice": "en-joe", "response_format": "pcm"}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    head = f"POST /v1/audio/speech HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    misses = server.metric(_MISSES, result="miss")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        _submitted(server, misses)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # queued behind the slots' streams: no headers until its first audio


def _hang_up_over_websocket(server: Server, text: str) -> None:
    """The same on ``/v1/stream``: the socket closes while its request waits for a slot."""
    misses = server.metric(_MISSES, result="miss")
    with connect(server.url.replace("http://", "ws://") + "/v1/stream", open_timeout=10) as ws:
        ws.send(json.dumps({"text": text, "voice": "en-joe", "format": "pcm"}))
        _submitted(server, misses)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def _hang_up_over_websocket_mid_stream(server: Server, text: str) -> None:
    """The same after audio has flowed: the text's opening, cached, is sent at once, and the socket
    closes while the rest waits for a slot (heard then, not when its next sentence is sent)."""
    with connect(server.url.replace("http://", "ws://") + "/v1/stream", open_timeout=10) as ws:
        ws.send(json.dumps({"text": text, "voice": "en-joe", "format": "pcm"}))
        assert isinstance(ws.recv(timeout=10), bytes)


class _CancelFlags:
    """The cancel flags the API sets, heard as Redis sets them: a worker that takes the job just
    after its caller left acts on its flag and deletes it within milliseconds, so polling for the
    flag could miss it."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._events = str(client.config_get("notify-keyspace-events")["notify-keyspace-events"])
        client.config_set("notify-keyspace-events", "K$")  # keyspace events of string commands
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe("__keyspace@*__:ttsd:cancel:*")

    def next_set(self, timeout: float) -> str:
        """The key of the next flag set."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=left)
            if message is not None and message["data"] == b"set":
                return str(message["channel"].decode().split(":", 1)[1])
        raise AssertionError(f"no cancel flag was set within {timeout} s")

    def close(self) -> None:
        self._pubsub.close()
        self._client.config_set("notify-keyspace-events", self._events)
        self._client.close()


@contextlib.contextmanager
def _both_slots_held(server: Server) -> Iterator[contextlib.ExitStack]:
    """Both en-joe slots speak for seconds, each to a stream of its own, till the stack closes."""
    # Every sentence new, so that neither holder waits on the other's pieces.
    holders = [
        " ".join(unique(f"Sentence {i} of holder {h} keeps an engine slot busy.") for i in range(40))
        for h in "AB"
    ]
    chunks: list[Iterator[bytes]] = []
    # Both slots idle first, so the second holder goes to the second (in distributed mode: the
    # idle worker, not the one whose slot speaks the first).
    wait_until(lambda: server.metric("ttsd_busy_slots") == 0, 30, "every slot idle")
    with contextlib.ExitStack() as held:
        for holder in holders:
            body = {"input": holder, "voice": "en-joe", "response_format": "pcm"}
            stream = held.enter_context(
                httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60)
            )
            chunks.append(stream.iter_raw())  # kept: a dropped iterator closes its response
            next(chunks[-1])
        yield held


@pytest.mark.parametrize(
    "hang_up",
    [_hang_up_over_http, _hang_up_over_websocket, _hang_up_over_websocket_mid_stream],
    ids=["http", "websocket", "websocket-mid-stream"],
)
def test_hanging_up_while_waiting_for_a_slot_lets_go_of_the_job_and_asking_again_speaks_it(
    server: Server, request: pytest.FixtureRequest, hang_up: Callable[[Server, str], None]
) -> None:
    """Barge-in while the stream waits for a slot: its job is let go at once, before a sentence is
    spoken for nobody, and the same text asked again straight after is spoken whole."""
    flags = None
    if server.mode == "distributed":
        flags = _CancelFlags(redis.Redis.from_url(request.getfixturevalue("stack").redis.url))
        request.addfinalizer(flags.close)
    opening = f"Caller {time.time_ns()} hangs up early."
    text = unique(f"{opening} {PARAGRAPH}")
    if hang_up is _hang_up_over_websocket_mid_stream:
        assert speech(server, opening, "pcm").status_code == 200
    # Otherwise its opening is never spoken before: a cached one would be sent at once.
    with _both_slots_held(server) as held:
        hang_up(server, text)
        if flags is not None:  # the job waits, flagged: a worker drops it (or has dropped it)
            flagged = flags.next_set(10.0)
        time.sleep(0.3)
        with ThreadPoolExecutor(1) as pool:
            again = pool.submit(speech, server, text, "pcm")
            time.sleep(0.5)
            held.close()  # the slots' listeners leave too: their jobs stop, the slots free
            answer = again.result()
    assert answer.status_code == 200 and len(answer.content) > 300_000
    if server.mode == "embedded":
        # The left job was out of the line at once: asking again starts it afresh.
        assert answer.headers["x-cache"] == "miss"
    else:
        # The flag was the left job's: taken back by the listener who joined before a worker acted
        # on it, or acted on (the job let go) and the text asked again started afresh.
        assert flagged == f"ttsd:cancel:{answer.headers['x-task-id']}"
    assert server.wait_task(answer.headers["x-task-id"])["status"] == "done"
    assert answer.content == stored(server, text, "pcm")


def test_asking_again_right_after_hanging_up_mid_stream_speaks_the_whole_text(server: Server) -> None:
    """A caller who hangs up after the first sentence and asks for the same text at once joins no
    job that is stopping: the text is spoken whole."""
    text = unique(" ".join(f"Sentence {i} comes from a caller who changed their mind." for i in range(12)))
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as response:
        next(response.iter_raw())
    time.sleep(0.1)  # the server hears the hang-up; the job stops at its next sentence
    again = speech(server, text, "pcm")
    assert again.status_code == 200, again.text
    assert server.wait_task(again.headers["x-task-id"])["status"] == "done"
    assert again.content == stored(server, text, "pcm")


def test_a_stream_that_joins_a_stored_job_in_flight_hears_it_whole(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """A text queued without a listener (``POST /v1/synthesize``) passes no audio through Redis;
    a stream of it that joins while its sentences are being made still hears every one, in order."""
    text = unique(" ".join(f"Sentence {i} is made for the archive first." for i in range(12)))
    submitted = httpx.post(
        f"{server.url}/v1/synthesize", json={"text": text, "format": "pcm", "voice": "en-joe"}
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    task = lambda: httpx.get(f"{server.url}/v1/tasks/{task_id}").json()  # noqa: E731
    wait_until(lambda: task()["progress"] > 10, 30, "its first sentences made")
    if server.mode == "distributed":
        r = redis.Redis.from_url(request.getfixturevalue("stack").redis.url)
        assert not r.exists(f"ttsd:pcm:{task_id}")
    joined = speech(server, text, "pcm")
    assert joined.status_code == 200 and joined.headers["x-cache"] == "merged", joined.headers
    # The stream ends once the text is stored; the task's final status is written just after.
    assert server.wait_task(task_id)["status"] == "done"
    assert joined.content == stored(server, text, "pcm")
