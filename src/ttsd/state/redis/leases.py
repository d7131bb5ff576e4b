"""Job leases: who may work on a distributed job right now, and how a lost worker's jobs come back.

A worker takes a lease on every job it receives, before it starts it, and renews it while it holds
the job (``jobs.distributed.keeper.LeaseKeeper``); the lease's deadline lives in Redis, by Redis's clock.
An API process sweeps once a second for lapsed deadlines and publishes those jobs again, so a
worker that was killed, frozen or cut off loses its jobs ``TTSD_JOB_LEASE`` seconds after its last
renewal, whatever the job timeout or the broker's visibility timeout (as BullMQ's job locks).

A lease names its holder by a token, one per delivery. Everything a worker writes that others can
see (task status, the live audio stream) goes through a script that first checks the token is
still the lease's: a worker that wakes up after its job was handed on finds it is not, and stops
without a trace. Stored audio needs no fence; its objects are named by content key, so a late
writer only rewrites the same text.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from typing import Any

import redis

from ...errors import TtsdError
from ..base import TaskStatus
from .client import guarded
from .keys import RedisKeys


class LeaseLost(TtsdError):
    """This delivery's lease lapsed and the job went to another worker: stop, write nothing."""

    code = "lease_lost"


# Redis's own clock in milliseconds, so machines with skewed clocks agree on deadlines.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

# KEYS: lease, leases, deliveries, pending ARGV: task_id, token, lease_ms, ttl_s
# Takes the job unless another token holds a live lease. Returns {1, deliveries} when taken (a new
# token counts a delivery; the same token again is the same delivery), {0, holder} when held.
# Either way the job is taken, so no longer pending.
_ACQUIRE = f"""
{_NOW}
redis.call('ZREM', KEYS[4], ARGV[1])
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then
  local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if deadline and tonumber(deadline) > now then return {{0, current}} end
end
local n
if current == ARGV[2] then
  n = tonumber(redis.call('GET', KEYS[3]) or '1')
else
  n = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return {{1, n}}
"""

# KEYS: lease, leases ARGV: task_id, token, lease_ms (0: given up, the deadline becomes 0 so the
# next sweep hands it on and can tell it from a lapse)
_RENEW = f"""
{_NOW}
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local ms = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], ms > 0 and now + ms or 0, ARGV[1])
return 1
"""

# KEYS: lease, leases ARGV: task_id, token
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: lease, leases, deliveries, pending ARGV: task_id, token, now_s
# A job that never got a slot here, given back for another worker to take at once: not a delivery
# (a job handed back again and again must not fail as one whose worker kept dying), and pending
# until a worker takes it, so the pending sweep publishes it again if its message is lost.
_HAND_BACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""

# KEYS: leases, pending ARGV: lease key prefix, limit, now_s (the API's clock, as pending uses)
# Pops lapsed leases: their holders' tokens die with them, so a holder that wakes up is fenced out.
# The jobs go back to ``pending`` until a worker takes them again: if the caller dies before
# publishing them, the pending sweep still does.
_SWEEP = f"""
{_NOW}
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #lapsed, 2 do
  local id = lapsed[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
end
return lapsed
"""

# KEYS: lease, task ARGV: token, status json, ttl_s
# Only the lease's holder writes, and never over a finished status: only a new submission (the API,
# not a worker) starts a finished task again.
_PUT_STATUS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[2])
if current then
  local status = cjson.decode(current)['status']
  if status == 'done' or status == 'failed' then return 0 end
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS: lease, stream, cancel, listeners ARGV: token, stream ttl_s, last ('1': the stream's end),
# held ('1': the sender holds entries back, and asks whether anyone listens), then each entry: its
# field count, field, value, ... Returns -1 when fenced out, else {cancelled (every listener left),
# outcome (``Published``)}. Audio nobody listens to is not written: a text's audio would pass
# through Redis for nobody (a ``/v1/synthesize`` job's, a prefetch's). The worker holds it back
# instead, and a listener that joins in flight gets it all, in order, at the next entry
# (``BACKFILL``). A stream nobody listened to is deleted at its end; a listener that joins after
# that finds none, and reads the stored file.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cancelled = redis.call('EXISTS', KEYS[3])
if tonumber(redis.call('GET', KEYS[4]) or '0') <= 0 then
  if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) return {0, 0} end
  return {cancelled, 0}
end
if ARGV[4] == '1' then return {cancelled, 2} end
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + 2 * n))
  i = i + 1 + 2 * n
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {cancelled, 1}
"""


class Published(enum.IntEnum):
    """What became of entries offered to a job's live stream."""

    HELD = 0  # nobody listens: not written (the sender keeps them)
    WRITTEN = 1
    BACKFILL = 2  # someone listens: send the entries held back, in one call


class JobLeases:
    def __init__(self, client: redis.Redis, keys: RedisKeys, lease_seconds: float, ttl: int) -> None:
        self._r = client
        self._k = keys
        self.lease_ms = max(1, int(lease_seconds * 1000))
        # Lease tokens and delivery counts outlive any run of the job, and then expire.
        self._ttl = ttl
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._hand_back = client.register_script(_HAND_BACK)
        self._sweep = client.register_script(_SWEEP)
        self._put_status = client.register_script(_PUT_STATUS)
        self._publish = client.register_script(_PUBLISH)

    def _acquiring(self, task_id: str, token: str) -> tuple[list[str], list[str | int]]:
        keys = [self._k.lease(task_id), self._k.leases, self._k.deliveries(task_id), self._k.pending]
        return keys, [task_id, token, self.lease_ms, self._ttl]

    @guarded
    def acquire(self, task_id: str, token: str) -> int | None:
        """The job's delivery count once ``token`` holds its lease; None while another holds it."""
        keys, args = self._acquiring(task_id, token)
        taken, value = self._acquire(keys=keys, args=args)
        return int(value) if taken else None

    @guarded
    def begin(self, task_id: str, token: str) -> tuple[int | None, bytes | None, bool]:
        """What a delivery starts from, in one round trip: ``acquire``'s answer, the task's
        status as stored, and whether every listener of its stream left before it started."""
        keys, args = self._acquiring(task_id, token)
        pipe = self._r.pipeline(transaction=False)
        pipe.eval(_ACQUIRE, len(keys), *keys, *args)  # the text: a registration costs a round trip
        pipe.get(self._k.task(task_id))
        pipe.exists(self._k.cancel(task_id))
        (taken, value), status, cancelled = pipe.execute()
        return (int(value) if taken else None), status, bool(cancelled)

    @guarded
    def lapse(self, task_id: str, token: str) -> None:
        """Give the job up now (its run ended without finishing it): the next sweep hands it on."""
        self._renew(keys=[self._k.lease(task_id), self._k.leases], args=[task_id, token, 0])

    @guarded
    def renew_all(
        self, renew: Sequence[tuple[str, str]], lapse: Sequence[tuple[str, str]] = ()
    ) -> list[bool]:
        """Push on the deadline of each (task id, token) of ``renew``, and ``lapse`` each of
        ``lapse``, in one round trip however many a node holds; whether each lease was still
        its token's."""
        if not renew and not lapse:
            return []
        pipe = self._r.pipeline(transaction=False)
        for (task_id, token), ms in [*((h, self.lease_ms) for h in renew), *((h, 0) for h in lapse)]:
            # The script's text, not its registration, as ``release``.
            pipe.eval(_RENEW, 2, self._k.lease(task_id), self._k.leases, task_id, token, ms)
        return [bool(answer) for answer in pipe.execute()[: len(renew)]]

    @guarded
    def hand_back(self, task_id: str, token: str) -> bool:
        """Give a job that never started here back for another worker (``_HAND_BACK``): the
        caller publishes it again. False when ``token`` no longer holds it."""
        keys = [self._k.lease(task_id), self._k.leases, self._k.deliveries(task_id), self._k.pending]
        return bool(self._hand_back(keys=keys, args=[task_id, token, time.time()]))

    @guarded
    def release(self, task_id: str, token: str, forget: Sequence[str] = ()) -> bool:
        """The job is finished (done or failed for good): nothing is to be handed on. ``forget``:
        its run's bookkeeping keys, deleted (and the job taken off the pending set) first, in the
        same round trip."""
        keys = [self._k.lease(task_id), self._k.leases]
        if not forget:
            return bool(self._release(keys=keys, args=[task_id, token]))
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(*forget)
        pipe.zrem(self._k.pending, task_id)
        # The script's text, not its registration: that would cost a round trip of its own first.
        pipe.eval(_RELEASE, 2, *keys, task_id, token)
        return bool(pipe.execute()[-1])

    @guarded
    def sweep(self, limit: int = 100) -> list[tuple[str, bool]]:
        """Take the jobs whose leases lapsed (each goes to exactly one caller) to publish again,
        each with whether its worker gave it up (its process died) rather than went silent."""
        found: Any = self._sweep(
            keys=[self._k.leases, self._k.pending], args=[self._k.lease_prefix, limit, time.time()]
        )
        return [(found[i].decode(), float(found[i + 1]) == 0) for i in range(0, len(found), 2)]

    @guarded
    def put_status(self, token: str, status: TaskStatus, ttl: int) -> None:
        keys = [self._k.lease(status.task_id), self._k.task(status.task_id)]
        if not self._put_status(keys=keys, args=[token, status.model_dump_json(), ttl]):
            raise LeaseLost(f"task {status.task_id} was handed to another worker")

    @guarded
    def publish(
        self,
        task_id: str,
        token: str,
        entries: Sequence[dict[str, bytes | memoryview | str | int]],
        ttl: int,
        *,
        last: bool = False,
        held: bool = False,
        status: tuple[TaskStatus, int] | None = None,
    ) -> tuple[bool, Published]:
        """Append ``entries`` to the job's live audio stream, if anyone listens (``_PUBLISH``);
        returns whether every listener has left, and what became of them. ``last``: the stream's
        end. ``held``: the caller holds entries back (none are sent): is anyone listening?
        ``status`` (and its TTL): written first, in the same round trip, so a listener never hears
        audio the task's status does not account for yet."""
        flat: list[bytes | memoryview | str | int] = [token, ttl, "1" if last else "0", "1" if held else "0"]
        for fields in entries:
            flat.append(len(fields))
            for name, value in fields.items():
                flat += [name, value]
        keys = [
            self._k.lease(task_id),
            self._k.pcm(task_id),
            self._k.cancel(task_id),
            self._k.listeners(task_id),
        ]
        answer: Any
        if status is None:
            answer = self._publish(keys=keys, args=flat)
        else:
            pipe = self._r.pipeline(transaction=False)
            # The scripts' text: registered scripts in a pipeline cost a round trip of their own.
            fenced = (self._k.lease(task_id), self._k.task(task_id))
            pipe.eval(_PUT_STATUS, 2, *fenced, token, status[0].model_dump_json(), status[1])
            pipe.eval(_PUBLISH, len(keys), *keys, *flat)
            written, answer = pipe.execute()
            answer = answer if written else -1
        if answer == -1:
            raise LeaseLost(f"task {task_id} was handed to another worker")
        cancelled, outcome = answer
        return bool(cancelled), Published(int(outcome))
