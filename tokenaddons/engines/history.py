"""Which earlier request a new one continues, and for how many turns.

An agent resends its whole conversation on every turn: the turns (messages,
input items, contents) of one request are those of the request before it,
plus a few. Work already done on those turns (a scan that found nothing) need
not be looked up text by text again: an addon remembers what it learnt of a
request under that request's number, and the next request that shares its
leading turns starts where that knowledge ends.

A turn is known by its compact JSON, compared byte for byte with the earlier
request's (no hash anyone could aim a collision at), written inside the two
lists it sits in within a body (`[[turn]]`, `write_turns`): Intake writes them
as it checks the body's depth (orjson refuses a turn nested too deep there as
it would the body), so a request's turns are written once. A request's record is
its turns' JSON, a tuple; a request continuing another shares the objects it
has in common with it, so a conversation's turns are held once however many
of its requests are remembered. The records are bounded in number and in
bytes (each counted whole, shared or not), and a request that continues all
of an earlier one's turns replaces it.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, NamedTuple, TypeVar

import orjson

from tokenaddons.engines.memo import Memo

T = TypeVar("T")

# Requests remembered, the most recent first out last: enough for every
# conversation live at once on a busy proxy.
REQUESTS = 2_000
# And the bytes of their turns' JSON, each record counted whole (the turns it
# shares with another are held once: the memory used is less).
MAX_BYTES = 64 * 1024 * 1024
# A request is found by its first turn's JSON: its length, head and tail
# (an agent's first message starts with the same reminders in every session
# of a project; the user's own words come after them).
FIRST_BYTES = 256
# Requests remembered per first turn: conversations that begin alike (one
# prompt run by several agents, a retry with a different last turn).
BRANCHES = 4


def write_turns(turns: list) -> tuple[bytes, ...]:
    """Each turn's compact JSON as History keeps it (`[[turn]]`, nested as deep
    as in the body it came in). orjson.JSONEncodeError for a turn nested
    deeper than orjson writes (intake.MAX_DEPTH, counted from the body), or
    holding a value orjson does not write; TypeError for one that is not JSON."""
    holder: list = [None]
    outer = [holder]
    out = []
    for turn in turns:
        holder[0] = turn
        out.append(orjson.dumps(outer))
    return tuple(out)


class Continued(NamedTuple):
    """What `History.match` found for one request."""

    number: int  # this request's own: what an addon remembers its findings under
    earlier: int | None  # the earlier request with the most leading turns in common
    shared: int  # how many: turns[:shared] equal that request's turns[:shared]


class History:
    """Recent requests' turns, to find the one a new request continues.

    Runs on the event loop only (no lock): each request is matched once, as
    the first addon that could use it asks (`Exchange.continued`)."""

    def __init__(self, size: int = REQUESTS, max_bytes: int = MAX_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # of the records, each counted whole
        # request number -> (kind and its first turn's key, its turns' JSON, its size)
        self._records: OrderedDict[int, tuple[tuple, tuple[bytes, ...], int]] = OrderedDict()
        self._by_first: dict[tuple, list[int]] = {}
        self._next = 0

    def match(self, turns: list, kind: str = "", known: tuple[bytes, ...] | None = None) -> Continued | None:
        """Remember `turns` (a request's, before any addon changed them) and
        say which earlier request of the same `kind` (its API: the same JSON
        reads differently in another) shares the most of its leading ones.
        `known`: their `write_turns`, if the caller has it. None for turns
        that cannot be written as JSON (nothing is remembered)."""
        if known is not None:
            written = known
        else:
            try:
                written = write_turns(turns)
            except (TypeError, orjson.JSONEncodeError):  # a value orjson will not write: no sharing, never wrong
                return None
        self._next += 1
        number = self._next
        if not written:
            return Continued(number, None, 0)
        earlier, shared = None, 0
        first = (kind, len(written[0]), written[0][:FIRST_BYTES], written[0][-FIRST_BYTES:])
        branches = self._by_first.get(first, [])
        for candidate in reversed(branches):
            record = self._records.get(candidate)
            if record is None:
                continue
            n = _common(written, record[1])
            if n > shared:
                earlier, shared = candidate, n
                if n >= len(written) - 1:  # all but the newest turn: no branch can share much more
                    break
        if earlier is not None:  # hold the turns it shares with the earlier request once
            old = self._records[earlier][1]
            written = old[:shared] + written[shared:]
            if shared == len(old):  # all of it: this request replaces it
                self._forget(earlier)
            else:
                self._records.move_to_end(earlier)
        self._remember(number, first, written, [b for b in branches if b in self._records])
        return Continued(number, earlier, shared)

    def _remember(self, number: int, first: tuple, written: tuple[bytes, ...],
                  branches: list[int]) -> None:
        size = sum(map(len, written))
        self._records[number] = (first, written, size)
        self.bytes += size
        branches.append(number)
        self._by_first[first] = branches[-BRANCHES:]
        while len(self._records) > self.size or (self.bytes > self.max_bytes and len(self._records) > 1):
            self._forget(next(iter(self._records)))

    def _forget(self, number: int) -> None:
        first, _, size = self._records.pop(number)
        self.bytes -= size
        left = [b for b in self._by_first.get(first, ()) if b in self._records]
        if left:
            self._by_first[first] = left
        else:
            self._by_first.pop(first, None)

    def __len__(self) -> int:
        return len(self._records)


def _common(a: tuple, b: tuple) -> int:
    """How many leading items `a` and `b` share: a bisection over slices, each
    compared in C (all of the shorter, or all but its last turn, are the common cases)."""
    short = min(len(a), len(b))
    if a[:short] == b[:short]:
        return short
    if a[:short - 1] == b[:short - 1]:  # the last turn edited (a retry, a breakpoint moved)
        return short - 1
    low, high = 0, short - 2  # a[:low] == b[:low]; a[:high + 1] != b[:high + 1]
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class TurnRecords(Generic[T]):
    """What an addon learnt of recent requests' turns, by request number
    (`Continued.number`): a request continuing one takes what was learnt of
    the turns they share instead of working on them again. Replaced by a new
    one when the addon's options change what it would learn."""

    def __init__(self, size: int = REQUESTS) -> None:
        self.memo: Memo[T] = Memo(size=size)

    def earlier(self, continued: Continued | None) -> T | None:
        """What was learnt of the request this one continues, if anything."""
        if continued is None or continued.earlier is None:
            return None
        return self.memo.get(continued.earlier)

    def record(self, continued: Continued | None, learnt: T) -> None:
        """What was learnt of this request's turns (as the client sent them)."""
        if continued is not None:
            self.memo.put(continued.number, learnt)

    def __len__(self) -> int:
        return len(self.memo)


class FoundTurns(TurnRecords[tuple[int, tuple[int, ...]]]):
    """Which turns of recent requests held what an addon looks for (a
    finding): a request continuing one works on the turns it adds and on the
    shared ones that held a finding (to find it and act on it again), not on
    the shared turns found clean. Cleared when the addon's options change what
    it would find."""

    def to_scan(self, continued: Continued | None, count: int) -> list[int] | None:
        """The indexes of this request's `count` turns to scan; None: all."""
        known = self.earlier(continued)
        if known is None:
            return None
        seen, found = known
        shared = min(continued.shared, seen)
        return sorted(i for i in found if i < shared) + list(range(shared, count))

    def found(self, continued: Continued | None, count: int, found: Iterable[int | None]) -> None:
        """This request has `count` turns, and its findings sat in the turns
        `found` (the `TextRef.turn` of the texts holding them; None, a text
        outside the turns, is left out; none: the request was clean)."""
        if continued is not None:
            # a tuple of ints: the collector stops tracking it (a frozenset it would walk for good)
            self.record(continued, (count, tuple(sorted({i for i in found if i is not None}))))
