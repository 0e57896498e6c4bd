"""Compress: agent sessions cheaper in billed dollars, never by breaking the
provider's prefix cache.

After the cache lookup (whose key is what the client sent) and after route
(the body is in the upstream's final format), before rate limits and budgets
(which price what is sent):
- provider prompt-cache hints (`cache_hints`): Anthropic breakpoints for a
  request that carries none, an OpenAI `prompt_cache_key` when the client set
  none (tokenaddons.engines.cache_hints);
- transforms of tool output only (`compress`, lossless; `compress_lossy` adds
  a cap), each a pure function of one block (tokenaddons.engines.compressors),
  plus an output identical to an earlier one of the conversation, or the same
  but for a few lines, sent as a reference to it. Results are memoized by
  content hash (of the block and of the tool outputs before it) in the event
  store, so history the client resends compresses to the same bytes on every
  turn, after a restart and after an upgrade. What a file read returned is
  sent as it is, but for those references.

Savings are priced as billed: a token removed from a block on the turn it
first appears is worth the uncached input price (the cache-write price where
a breakpoint covers it), and on each later turn that resends it the
cache-read price; each decision records how many of its tokens would have
been billed each way (`billed_as`). A hint decision records what the provider
then reported.
"""
from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from mitmproxy import ctx, exceptions, http

from tokenaddons.addons.store import Store
from tokenaddons.engines import cache_hints, compressors, jsonio, pricing, tokens
from tokenaddons.engines.history import TurnRecords
from tokenaddons.engines.memo import Memo, digest, stable_digest
from tokenaddons.exchange import Decision, Exchange, handled
from tokenaddons.providers import anthropic
from tokenaddons.providers.base import TextRef
from tokenaddons.store.compress_memo import CompressMemo, Entry

log = logging.getLogger(__name__)

APIS = ("anthropic.messages", "openai.chat", "openai.responses", "gemini.generate")
MIN_CHARS = 64  # shorter outputs are left alone: nothing to win, a memo entry to keep
DELTA_CANDIDATES = 4  # earlier outputs of as many lines a new one is compared with, newest first
KEYS = 50_000  # outputs whose keys are remembered in memory (a few hundred bytes each)
# how a removed token would have been billed (a decision's `billed_as`: tokens of each)
INPUT, CACHE_WRITE, CACHE_READ = "input", "cache_write", "cache_read"


@dataclass(slots=True)
class Block:
    """One tool output string of the request, and what it becomes."""

    ref: TextRef
    position: int  # its message's index (Anthropic: which breakpoint covers it)
    key: bytes  # the text and every tool output before it: the same on each turn that resends it
    whole: bool  # the tool call's only text: it may be compared with another output whole
    file: bool  # what a file read returned: shown as it is (see compressors.compress)
    entry: Entry | None = None
    seen: bool = False  # sent before in this conversation: the provider has it cached

    @property
    def sent(self) -> str:
        return self.entry.output if self.entry is not None and self.entry.output is not None else self.ref.text

    @property
    def plain(self) -> bool:
        """Sent as itself (compressed or not), not as a reference to another output."""
        return self.entry is not None and not set(self.entry.saved) & set(compressors.CONVERSATION)


class Output(NamedTuple):
    """One tool output of a request, as `_blocks` keyed it: what a later
    request resending the same messages takes instead of walking and hashing
    them again."""

    place: tuple[int, int, int | None] | None  # where it sits (Walk.places); None outside Anthropic messages
    position: int  # Block.position
    call: Any  # the id of the tool call it answers
    file: bool  # Block.file
    key: bytes  # Block.key
    long: bool  # at least MIN_CHARS: a Block


class Seen(NamedTuple):
    """What `_blocks` found in one request's Anthropic messages, as the client sent them.
    Tuples of plain values only: the collector stops tracking them, so the
    records of 2,000 recent requests are not walked by every full collection."""

    context: bytes  # the first output's context (the model's encoding, the steps): the keys hold under it only
    outputs: tuple[Output, ...]  # in order
    calls: tuple[tuple[int, Any, int], ...]  # (message, id, block) of each tool call (Walk.called)
    marks: tuple[tuple[int, Any], ...]  # Walk.marks
    marked: int | None  # Walk.first_marked


class Compress:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.memo = CompressMemo(clock)
        self._keys: Memo[bytes] = Memo(size=KEYS)
        self._contexts: dict[str, bytes] = {}
        self._memo_for: str | None = None
        # what the messages of recent requests held, by request number: the next
        # turn of a conversation walks and keys only the messages it adds
        self.seen: TurnRecords[Seen] = TurnRecords()
        # options, parsed in configure
        self.enabled = True
        self.lossy = False
        self.max_tokens = 2000
        self.hints = True
        self.hints_ttl = "5m"

    def load(self, loader) -> None:
        loader.add_option("compress", bool, True,
                          "Lossless, prefix-stable transforms of tool output: escape codes and redraws, trailing "
                          "whitespace and blank runs, pretty JSON, repeated lines, repeated outputs.")
        loader.add_option("compress_lossy", bool, False,
                          "Also cap each tool output at compress_max_tokens, keeping its head and tail "
                          "(the middle is lost to the model; see docs/compress.md).")
        loader.add_option("compress_max_tokens", int, 2000,
                          "With compress_lossy: the most tokens one tool output keeps.")
        loader.add_option("cache_hints", bool, True,
                          "Provider prompt-cache hints: Anthropic breakpoints for requests that carry none, "
                          "an OpenAI prompt_cache_key where the client set none.")
        loader.add_option("cache_hints_ttl", str, "5m",
                          "TTL of the breakpoint on the stable prefix (tools and system): 5m or 1h "
                          "(1-hour writes cost 2x input instead of 1.25x).")

    def configure(self, updated) -> None:
        if ctx.options.cache_hints_ttl not in cache_hints.TTLS:
            raise exceptions.OptionsError(f"cache_hints_ttl must be 5m or 1h, not {ctx.options.cache_hints_ttl!r}")
        if ctx.options.compress_max_tokens < 200:
            raise exceptions.OptionsError("compress_max_tokens must be at least 200")
        self.enabled = ctx.options.compress
        self.lossy = ctx.options.compress_lossy
        self.max_tokens = ctx.options.compress_max_tokens
        self.hints = ctx.options.cache_hints
        self.hints_ttl = ctx.options.cache_hints_ttl
        if updated & {"compress", "compress_lossy", "compress_max_tokens"}:  # other keys from now on
            self.seen = TurnRecords()
        events = self.store.events
        if events is not None and self._memo_for != str(events.path):
            self._memo_for = str(events.path)
            self.memo.open(events)

    def done(self) -> None:
        self.memo.close()

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.known or handled(flow) or not (self.enabled or self.hints):
            return
        if ex.upstream_api is None or ex.upstream_api.name not in APIS or not isinstance(ex.body, dict):
            return
        try:
            blocks, walk = self._blocks(ex) if self.enabled else ([], None)
            if any(b.entry is None for b in blocks):  # something new: compressing it is work for a thread
                await asyncio.to_thread(self._compute, blocks, ex.model)
            self._apply(ex, blocks, walk)
        except Exception:
            log.exception("tokenaddons compress: %s is sent as the client sent it", flow.request.path)

    # -- the tool outputs of the request

    def _signature(self, model: str | None) -> str:
        """What besides the text decides a result (never the code's version: see compressors.VERSION)."""
        steps = f"cap:{self.max_tokens}" if self.lossy else "lossless"
        return f"{tokens.encoding_name(model)}|{steps}"

    def _blocks(self, ex: Exchange) -> tuple[list[Block], Walk | None]:
        """The request's tool outputs, with what is known of each (and, for
        Anthropic, the walk of the messages that found them)."""
        api, body = ex.upstream_api, ex.body
        context = self._context(ex.model)
        if api.name == "anthropic.messages":  # which message each output sits in: a breakpoint covers it or not
            outputs, walk = self._anthropic(ex, context)
        else:
            refs = [ref for ref in api.tool_refs(body) if not ref.number and isinstance(ref.text, str)]
            outputs, walk = self._keyed([(0, ref) for ref in refs], [None] * len(refs), api.tool_calls(body).get,
                                        context), None
        parts = Counter(o.call for o, _ in outputs)
        blocks = [Block(ref, o.position, o.key, bool(o.call) and parts[o.call] == 1, o.file)
                  for o, ref in outputs if o.long]
        for b, entry in zip(blocks, self.memo.get_many([b.key for b in blocks])):
            b.entry, b.seen = entry, entry is not None
        return blocks, walk

    def _keyed(self, outputs: list[tuple[int, TextRef]], places: list, call_of: Callable[[Any], Any],
               context: bytes) -> list[tuple[Output, TextRef]]:
        """Each output's key, chained from `context`. A result is keyed by its
        text and the tool outputs before it (which the client resends
        unchanged): found again on every later turn of this conversation,
        whatever a later version of the steps would do. `call_of(id)`: the
        tool call (name, input) of that id, or None."""
        keys, reads_file = self._keys, compressors.reads_file
        out = []
        for (position, ref), place in zip(outputs, places):
            text, call = ref.text, ref.call
            found = call_of(call)
            file = found is not None and reads_file(*found)
            key = keys.get((context, call, file, hash(text), len(text))) or self._key(context, call, file, text)
            out.append((Output(place, position, call, file, key, len(text) >= MIN_CHARS), ref))
            context = key
        return out

    def _anthropic(self, ex: Exchange, context: bytes) -> tuple[list[tuple[Output, TextRef | None]], Walk]:
        """The outputs of the messages, keyed, and the walk that found them:
        those of the messages a request shares with the one it continues as
        that request's were found (`Seen`), only the messages it adds walked.
        What is found is kept for the next request."""
        body = ex.body
        continued = ex.continued() if ex.upstream_api is ex.client_api else None  # (the client's own messages)
        seen = self.seen.earlier(continued)
        start = continued.shared if seen is not None and seen.context == context else 0
        walk = _anthropic_outputs(body, start)
        kept = _kept(seen, start) if start else Seen(context, (), (), (), None)
        if walk.calls and any(o.call in walk.calls for o in kept.outputs):
            # a new call with the id of an earlier output's: what it reads (Block.file) changes, and every key after it
            walk, kept = _anthropic_outputs(body), Seen(context, (), (), (), None)
        messages = body.get("messages")
        earlier_calls = {call: (m, b) for m, call, b in kept.calls}

        def call_of(call: Any) -> Any:  # the last call of that id: a new one, else the one the messages kept
            found = walk.calls.get(call)
            if found is None and call in earlier_calls:
                m, b = earlier_calls[call]
                found = anthropic.tool_call(messages[m]["content"][b])
            return found

        outputs = [(o, _located(messages, o) if o.long else None) for o in kept.outputs]
        outputs += self._keyed(walk.outputs, walk.places, call_of, kept.outputs[-1].key if kept.outputs else context)
        marked = kept.marked if kept.marked is not None else walk.first_marked
        if continued is not None:
            self.seen.record(continued, Seen(context, tuple(o for o, _ in outputs), (*kept.calls, *walk.called),
                                             (*kept.marks, *walk.marks), marked))
        return outputs, walk._replace(marks=[*kept.marks, *walk.marks], first_marked=marked)

    def _context(self, model: str | None) -> bytes:
        """The first output's context: what besides the texts decides a result."""
        signature = self._signature(model)
        context = self._contexts.get(signature)
        if context is None:
            context = self._contexts[signature] = stable_digest(signature)
        return context

    def _key(self, context: bytes, call: str | None, file: bool, text: str) -> bytes:
        """An output's key (a stable hash of the key before it, its call and its
        text), remembered by the text's process-local digest: history resent
        every turn is hashed once per process, not once per request."""
        return self._keys.lookup((context, call, file, *digest(text)), lambda: stable_digest(
            f"{context.hex()}\0{call}\0{'file' if file else ''}\0{text}"))

    def _compute(self, blocks: list[Block], model: str | None) -> None:
        """Results for blocks this conversation never sent before (in a worker
        thread when there are any); earlier outputs are their references."""
        count = lambda text: tokens.count_text(text, model)  # noqa: E731
        cap = self.max_tokens if self.lossy else None
        first: dict[tuple, Block] = {}  # an output's text -> the first whole output with it
        earlier: dict[int, list[Block]] = defaultdict(list)  # lines -> whole outputs sent as themselves
        for b in blocks:
            if b.entry is None and (kept := self.memo.get_disk(b.key)) is not None:
                b.entry, b.seen = kept, True  # sent before, since fallen out of memory
            if b.entry is None:
                b.entry = self.memo.put(b.key, self._result(b, first, earlier, count, cap))
            if b.whole:
                first.setdefault(digest(b.ref.text), b)
                if b.plain:
                    earlier[b.sent.count("\n")].append(b)

    @staticmethod
    def _result(b: Block, first: dict[tuple, Block], earlier: dict[int, list[Block]],
                count: Callable[[str], int], cap: int | None) -> Entry:
        text = b.ref.text
        twin = first.get(digest(text)) if b.whole else None
        if twin is not None:
            reference = compressors.reference(twin.ref.call)
            before, after = count(text), count(reference)
            if after < before:
                return Entry(compressors.VERSION, reference, before, after, {"dedupe": before - after})
        r = compressors.compress(text, count, cap, b.file)
        if b.whole:  # a few lines from an earlier output (a test run again, a status again)?
            for other in reversed(earlier[r.text.count("\n")][-DELTA_CANDIDATES:]):
                found = compressors.delta(other.sent, r.text, other.ref.call)
                if found is not None and (n := count(found)) < r.after:
                    return Entry(compressors.VERSION, found, r.before, n, {"delta": r.before - n})
        return Entry(compressors.VERSION, r.text if r.changed else None, r.before, r.after, r.saved)

    # -- what is sent, and what it saved

    def _apply(self, ex: Exchange, blocks: list[Block], walk: Walk | None) -> None:
        body, api = ex.body, ex.upstream_api
        placed: list[cache_hints.Breakpoint] = []
        key = None
        if self.hints and api.name == "anthropic.messages":
            placed = cache_hints.anthropic_breakpoints(body, ex.model, self._size, self.hints_ttl,
                                                       None if walk is None else walk.marked)
        elif self.hints and ex.provider == "openai":  # OpenAI itself: compatible servers may refuse the field
            key = cache_hints.openai_cache_key(api.name, body, ex.auth_hash, ex.project)
        # step -> tokens, usd, blocks, tokens by how they would have been billed
        saved: dict[str, list] = {}
        changed = [b for b in blocks if b.entry is not None and b.entry.output is not None]
        price = self._pricer(ex, placed, walk) if changed else None
        for b in changed:
            billed_as, unit = price(b)
            for step, n in b.entry.saved.items():
                acc = saved.get(step)
                if acc is None:
                    acc = saved[step] = [0, 0.0, 0, {}]
                acc[0] += n
                acc[1] += n * unit
                acc[2] += 1
                acc[3][billed_as] = acc[3].get(billed_as, 0) + n
        # everything decided: now change the body (plain assignments)
        for b in changed:
            b.ref.text = b.entry.output
        for point in placed:
            point.apply()
        if key is not None:
            body["prompt_cache_key"] = key
        if changed or placed or key is not None:
            ex.mark_changed()
        for step in compressors.STEPS:
            if step in saved:
                n, usd, count, billed_as = saved[step]
                ex.decide("compress", step, tokens_saved=n, usd_saved=usd, blocks=count, billed_as=billed_as)
        if placed:
            d = ex.decide("compress", "hints", breakpoints=[p.where for p in placed], ttl=self.hints_ttl)
            d.settle = _settle_breakpoints
        elif key is not None:
            d = ex.decide("compress", "hints", prompt_cache_key=key)
            d.settle = _settle_cache_key

    @staticmethod
    def _size(value: Any) -> int:
        """A block's tokens, for the hints' minimum (each string counted once per
        process; `{"tools": [...]}` as JSON): what `estimate_input_tokens` says
        of `[value]`, the common cases without its walk."""
        if isinstance(value, str):
            return tokens.estimate_text_tokens(value)
        if isinstance(value, dict):
            if len(value) == 1 and "tools" in value:
                return tokens.estimate_text_tokens(jsonio.dumps_str(value["tools"]))
            return tokens.estimate_input_tokens(None, value)
        return tokens.estimate_input_tokens(None, [value])

    @staticmethod
    def _pricer(ex: Exchange, placed: list[cache_hints.Breakpoint],
                walk: Walk | None = None) -> Callable[[Block], tuple[str, float]]:
        """How a token removed from a block would have been billed, and its USD:
        as uncached input (as a cache write where a breakpoint covers it) the
        turn it first appears, as a cache read each later turn that resends it."""
        prices = pricing.unit_prices(ex.provider, ex.model or "")
        if prices is None:
            return lambda b: (INPUT, 0.0)
        if ex.upstream_api.name != "anthropic.messages":
            return lambda b: (CACHE_READ, prices.cache_read) if b.seen else (INPUT, prices.input)
        # message index -> ttl of its breakpoint
        covers = _breakpoints_by_message(ex.body, placed, None if walk is None else walk.marks)
        auto = isinstance(ex.body.get("cache_control"), dict)

        def price(b: Block) -> tuple[str, float]:
            ttl = None
            for i, t in covers:  # the first breakpoint at or after its message
                if i >= b.position:
                    ttl = t
                    break
            if ttl is None and not auto:
                return INPUT, prices.input  # no breakpoint after it: billed in full, every turn
            if b.seen:
                return CACHE_READ, prices.cache_read
            return CACHE_WRITE, prices.cache_write_1h if ttl == "1h" else prices.cache_write_5m

        return price


class Walk(NamedTuple):
    """What one walk of an Anthropic request's messages finds."""

    outputs: list[tuple[int, TextRef]]  # the tool outputs (Messages.tool_refs), each with its message's index
    calls: dict[str, tuple[str, Any]]  # the tool calls (Messages.tool_calls)
    marks: list[tuple[int, Any]]  # (message index, ttl) of each message whose blocks carry a breakpoint
    # where each output sits, to be found again in a body resending its message:
    # (message, block, None) for a tool_result's own string, else (message,
    # block, its index among the block's texts (_result_texts))
    places: list[tuple[int, int, int | None]]
    called: list[tuple[int, Any, int]]  # (message, id, block) of each tool call, in order
    first_marked: int | None  # the first message with a cache_control in it

    @property
    def marked(self) -> bool:
        """A cache_control in the messages (cache_hints.messages_marked)."""
        return self.first_marked is not None


def _anthropic_outputs(body: dict, start: int = 0) -> Walk:
    """The tool outputs, the tool calls and the client's breakpoints of the
    messages, from message `start` on, in one walk of them (every request
    resends the whole history)."""
    outputs: list[tuple[int, TextRef]] = []
    places: list[tuple[int, int, int | None]] = []
    calls: dict[str, tuple[str, Any]] = {}
    called: list[tuple[int, Any, int]] = []
    marks: list[tuple[int, Any]] = []
    marked = None
    add, place, is_result, tool_call = outputs.append, places.append, anthropic.is_result, anthropic.tool_call
    messages = body.get("messages") or []
    for i, msg in enumerate(messages[start:] if start else messages, start):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        ttl = None
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if "cache_control" in block:
                marked = i if marked is None else marked
                if isinstance(cc := block["cache_control"], dict):
                    ttl = cc.get("ttl") or "5m"
            inner = block.get("content")
            if marked is None and isinstance(inner, list) and cache_hints.marked(inner):
                marked = i
            kind = block.get("type")
            if kind == "text":
                continue
            if kind == "tool_use":
                if block.get("id"):
                    calls[block["id"]] = tool_call(block)
                    called.append((i, block["id"], j))
            elif kind == "tool_result" and isinstance(inner, str):  # most of them (anthropic.result_refs' own case)
                add((i, TextRef(block, "content", "tool", False, False, block.get("tool_use_id"))))
                place((i, j, None))
            elif is_result(kind):
                for k, ref in enumerate(_result_texts(block)):
                    add((i if _placed(ref.container, block) else 0, ref))
                    place((i, j, k))
        if ttl:
            marks.append((i, ttl))
    return Walk(outputs, calls, marks, places, called, marked)


def _result_texts(block: dict) -> list[TextRef]:
    """The strings of a result block compress works on (not numbers)."""
    return [ref for ref in anthropic.result_refs(block) if not ref.number and isinstance(ref.text, str)]


def _kept(seen: Seen, start: int) -> Seen:
    """What `seen` holds of its first `start` messages."""
    return Seen(seen.context, seen.outputs[:bisect_left(seen.outputs, start, key=lambda o: o.place[0])],
                seen.calls[:bisect_left(seen.calls, start, key=lambda c: c[0])],
                seen.marks[:bisect_left(seen.marks, start, key=lambda m: m[0])],
                seen.marked if seen.marked is not None and seen.marked < start else None)


def _located(messages: list, output: Output) -> TextRef:
    """`output`'s string in `messages`, which resend the message it was found in."""
    m, b, part = output.place
    block = messages[m]["content"][b]
    if part is None:
        return TextRef(block, "content", "tool", False, False, output.call)
    return _result_texts(block)[part]


def _placed(container: Any, block: dict) -> bool:
    """Whether a string of result `block` sits in it, in one of its content
    blocks or their source: those are priced by their message; a string nested
    deeper (a server tool's result inside a result) as the first message's."""
    if container is block:
        return True
    inner = block.get("content")
    for part in inner if isinstance(inner, list) else ():
        if part is container or (isinstance(container, dict) and isinstance(part, dict)
                                 and part.get("source") is container):
            return True
    return False


def _breakpoints_by_message(body: dict, placed: list[cache_hints.Breakpoint],
                            marks: list[tuple[int, Any]] | None = None) -> list[tuple[int, str]]:
    """(message index, ttl) of every breakpoint in the messages, the client's
    and those about to be placed, in order. `marks`: the client's, as a walk
    of the messages found them (Walk.marks)."""
    marked = {id(p.container): p.ttl for p in placed}
    messages = body.get("messages") or []
    if placed:  # hints are placed only where the client marked nothing: just find theirs, from the end
        out = []
        left = sum(p.where != "prefix" for p in placed)
        for i in range(len(messages) - 1, -1, -1):
            if not left:
                break
            msg = messages[i]
            if isinstance(msg, dict) and (ttl := marked.get(id(msg)) or marked.get(id(msg.get("content")))):
                out.append((i, ttl))
                left -= 1
        return out[::-1]
    if marks is not None:
        return marks
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        ttl = None
        for block in content if isinstance(content, list) else []:
            cc = block.get("cache_control") if isinstance(block, dict) else None
            if isinstance(cc, dict):
                ttl = cc.get("ttl") or "5m"
        if ttl:
            out.append((i, ttl))
    return out


def _settle_breakpoints(d: Decision, ex: Exchange) -> None:
    """The client set no breakpoint: every cache read and write of this exchange is the hints' doing."""
    u = ex.usage
    if u is None:
        return
    d.detail.update(cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens)
    d.usd_saved = pricing.prompt_cache_saving(ex.provider, ex.served_model or ex.model or "", u, ex.cost_usd)


def _settle_cache_key(d: Decision, ex: Exchange) -> None:
    """OpenAI caches prefixes with or without a key: the reads are recorded, not credited."""
    if ex.usage is not None:
        d.detail.update(cache_read_tokens=ex.usage.cache_read_tokens)
