"""Transforms of one tool output's text, each a pure function of that text.

Agents resend their whole history every turn, and the provider bills the part
it has cached at a tenth (Anthropic) to a half (OpenAI) of the input price,
but bills again in full, as a cache write, any byte that changed. So every
step here is deterministic and depends only on the block it is given: the
same output compresses to the same bytes on every turn that resends it (the
addon memoizes results by content hash, across restarts and upgrades).

Lossless steps, in the order they run:
- terminal: ANSI escape codes and carriage-return / backspace redraws reduced
  to what a terminal would finally show (a block with cursor movement across
  lines, which would need a whole screen to replay, is left as it is);
- json: pretty-printed JSON (the whole output, or what follows a header such
  as "Output:") minified, by removing whitespace between tokens only;
- whitespace: trailing whitespace of each line, and runs of more than two
  blank lines;
- repeats: runs of identical lines, kept once with a count.
Besides, an output identical to an earlier one of the conversation becomes a
reference to it (dedupe), and one that differs from an earlier one in a few
lines only, a reference plus those lines (delta): both depend on earlier
history only, which the client resends unchanged, so they are as stable.
Lossy step (opt-in): cap, which keeps the head and the tail of an output
longer than a token budget and says what was cut.

A step is kept only if the text gets smaller in tokens. What a file read
returned (a read tool, `cat`, `sed -n`...) gets none of the lossless steps:
an agent edits files by exact text and must see them as they are; only
dedupe, delta and the opt-in cap apply to it.

Every regular expression here is linear in its input.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tokenaddons.engines import jsonio

# Results are memoized by content and persisted: a change to what any step
# produces gets a new VERSION, and history compressed by an older one keeps
# the bytes it had (the memo returns them), so an upgrade never rewrites a
# prefix the provider has cached.
VERSION = 2  # 2: the steps run again until a pass keeps none (idempotent)
LOSSLESS = ("terminal", "json", "whitespace", "repeats")
LOSSY = ("cap",)
# what the conversation allows besides: an output identical to an earlier one
# (dedupe), or the same but for a few lines (delta), sent as a reference to it
CONVERSATION = ("dedupe", "delta")
STEPS = LOSSLESS + LOSSY + CONVERSATION

Count = Callable[[str], int]

# ---------------------------------------------------------------- terminal

# One token of terminal output: an escape sequence (CSI, OSC, a two-byte
# escape), a carriage return, a backspace, or a run of anything else.
_TERMINAL = re.compile(
    r"\x1b\[(?P<params>[0-?]*)[ -/]*(?P<final>[@-~])"  # CSI: colours, erase, cursor
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks (invisible)
    r"|\x1b[()*+][0-~]"  # character set designation
    r"|\x1b(?P<esc>[ -~])?"  # two-byte escapes (and a stray ESC)
    r"|\r|\x08"
    r"|[^\x1b\r\x08]+"
)
_SPECIAL = ("\x1b", "\r", "\x08")
_INVISIBLE_ESC = set("=>")  # keypad modes: nothing shown


class _Unsupported(Exception):
    """A control sequence that moves across lines or the screen."""


def _number(params: str, default: int) -> int:
    first = params.split(";", 1)[0]
    if not first:
        return default
    if not first.isdigit():
        raise _Unsupported(params)
    return int(first)


def _render_line(line: str) -> str:
    """What one line shows once every redraw in it has happened."""
    cells: list[str] = []
    col = saved = 0
    limit = 2 * len(line) + 256  # cursor moves never pad further than this (a hostile \x1b[99999999C)
    work, budget = 0, 16 * len(line) + 256  # erases are bounded too: no quadratic input
    for m in _TERMINAL.finditer(line):
        piece = m.group(0)
        if piece == "\r":
            col = 0
        elif piece == "\x08":
            col = max(0, col - 1)
        elif not piece.startswith("\x1b"):
            if col > len(cells):
                cells.extend(" " * (col - len(cells)))
            cells[col:col + len(piece)] = piece
            col += len(piece)
            work += len(piece)
        elif m.group("final") is not None:
            final, params = m.group("final"), m.group("params")
            if final == "m" or (final in "hl" and params.startswith("?")):
                continue  # colours and styles; cursor visibility, bracketed paste
            if final == "K":
                mode = _number(params, 0)
                if mode == 0:
                    del cells[col:]
                elif mode == 1:
                    cells[:col + 1] = " " * (col + 1)
                elif mode == 2:
                    cells = []  # blank cells before the cursor are padded back if text follows
                else:
                    raise _Unsupported(piece)
                work += col + 1
            elif final == "G":
                col = _number(params, 1) - 1
            elif final == "C":
                col += _number(params, 1)
            elif final == "D":
                col = max(0, col - _number(params, 1))
            else:
                raise _Unsupported(piece)  # up, down, absolute position, erase display...
        elif piece.startswith("\x1b]") or piece[1:2] in "()*+" and len(piece) == 3:
            continue  # OSC, character sets
        else:
            esc = m.group("esc")
            if esc == "7":
                saved = col
            elif esc == "8":
                col = saved
            elif esc not in _INVISIBLE_ESC:
                raise _Unsupported(piece)
        col = max(0, col)
        if col > limit or work > budget:
            raise _Unsupported("runaway")
    return "".join(cells)


def render_terminal(text: str) -> str:
    """ANSI escape codes and carriage-return progress redraws reduced to what a
    terminal would finally show. Unchanged if it holds a sequence that moves
    the cursor across lines (only a whole screen model could replay it)."""
    if not any(c in text for c in _SPECIAL):
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    try:
        return "\n".join(_render_line(line) if any(c in line for c in _SPECIAL) else line for line in lines)
    except _Unsupported:
        return text


# ---------------------------------------------------------------- json

_JSON_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.S)
_JSON_START = re.compile(r"^[ \t]*[\[{]", re.M)
JSON_CANDIDATES = 3  # where the JSON may start: the first few lines that open an object or array


def _squeeze(json_text: str) -> str:
    """Whitespace between JSON tokens removed; strings, numbers and key order exactly as they were."""
    return _JSON_TOKEN.sub(lambda m: m.group(1) or "", json_text)


def minify_json(text: str) -> str:
    """Pretty-printed JSON minified: the whole text, or what follows a header
    (a tool's "Output:" line). Only text that parses as a JSON object or array."""
    for n, m in enumerate(_JSON_START.finditer(text)):
        if n == JSON_CANDIDATES:
            break
        body = text[m.start():]
        if jsonio.is_json(body):
            return text[:m.start()] + _squeeze(body)
        end = text.find("\n", m.start())
        if jsonio.is_json(text[m.start():end if end != -1 else len(text)]):
            break  # a line that is JSON by itself: JSON Lines, or several documents; left as they are
    return text


# ---------------------------------------------------------------- whitespace

BLANK_RUN = 2  # blank lines kept of a longer run


def tidy_whitespace(text: str) -> str:
    """Trailing spaces and tabs of each line removed; runs of more than two
    blank lines cut to two."""
    out: list[str] = []
    blank = 0
    for line in text.split("\n"):
        line = line.rstrip(" \t")
        blank = blank + 1 if not line else 0
        if blank <= BLANK_RUN:
            out.append(line)
    return "\n".join(out)


# ---------------------------------------------------------------- repeats

REPEAT_MARK = "[previous line repeated {n} more times]"


def collapse_repeats(text: str) -> str:
    """Runs of identical non-blank lines kept once, followed by how many more there were."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        j = i + 1
        while j < len(lines) and lines[j] == lines[i]:
            j += 1
        out.append(lines[i])
        extra = j - i - 1
        mark = REPEAT_MARK.format(n=extra)
        if extra and lines[i].strip() and extra * (len(lines[i]) + 1) > len(mark) + 1:
            out.append(mark)
        else:
            out.extend(lines[i + 1:j])
        i = j
    return "\n".join(out)


# ---------------------------------------------------------------- cap (lossy)

CAP_MARK = ("[... {lines} lines, about {tokens} tokens, cut here by tokenaddons (compress_lossy): "
            "run the command again with a narrower output (head, tail, grep, an offset) to see them ...]")
HEAD_SHARE = 0.6  # of the budget kept from the start; the rest from the end


def cap(text: str, max_tokens: int, count: Count) -> str:
    """An output longer than `max_tokens`: its head and its tail (cut at line
    ends where one is near), with a line that says how much was cut between
    them; the whole fits in `max_tokens`, so capping again changes nothing."""
    total = count(text)
    if total <= max_tokens:
        return text
    budget = max_tokens - MARK_TOKENS
    for _ in range(4):
        out = _cut(text, total, budget, count)
        if count(out) <= max_tokens:
            return out
        budget = int(budget * 0.85)
    return text


MARK_TOKENS = 60  # what the line saying what was cut costs, at most


def _cut(text: str, total: int, budget: int, count: Count) -> str:
    per_token = len(text) / total
    head_end = int(budget * HEAD_SHARE * per_token)
    tail_start = len(text) - int(budget * (1 - HEAD_SHARE) * per_token)
    nl = text.rfind("\n", 0, head_end)
    if nl > head_end // 2:
        head_end = nl + 1
    nl = text.find("\n", tail_start)
    if nl != -1 and nl < tail_start + (len(text) - tail_start) // 2:
        tail_start = nl + 1
    if tail_start <= head_end:
        return text
    middle = text[head_end:tail_start]
    mark = CAP_MARK.format(lines=middle.count("\n") + (0 if middle.endswith("\n") else 1), tokens=count(middle))
    head = text[:head_end]
    return head + ("" if head.endswith("\n") else "\n") + mark + "\n" + text[tail_start:]


# ---------------------------------------------------------------- file reads

READ_TOOLS = {"read", "read_file", "readfile", "view", "view_file", "open_file", "read_many_files", "cat"}
EDITOR_TOOLS = {"str_replace_editor", "str_replace_based_edit_tool"}  # their "view" command reads a file
READ_COMMANDS = {"cat", "head", "tail", "sed", "nl", "less", "more", "bat", "batcat", "type", "get-content"}
COMMAND_KEYS = ("command", "cmd", "script")


def _command(args: Any) -> str | None:
    if isinstance(args, dict):  # (a loop, not next() over a generator: this runs for every call of every request)
        for key in COMMAND_KEYS:
            if key in args:
                args = args[key]
                break
        else:
            return None
    if isinstance(args, list) and args and all(isinstance(a, str) for a in args):
        args = args[-1] if len(args) >= 3 and args[-2] in ("-c", "-lc") else " ".join(args)  # ["bash", "-lc", cmd]
    return args if isinstance(args, str) else None


def reads_file(name: str, args: Any) -> bool:
    """Whether a tool call reads a file: a read tool, an editor's view command,
    or a shell command that prints a file (cat, head, tail, sed -n, nl, git show...)."""
    name = (name or "").lower()
    if name in READ_TOOLS:
        return True
    if name in EDITOR_TOOLS:
        return isinstance(args, dict) and args.get("command") == "view"
    command = _command(args)
    return command is not None and _prints_a_file(command)


@lru_cache(maxsize=4096)  # an agent's history resends the same commands every turn
def _prints_a_file(command: str) -> bool:
    for segment in re.split(r"&&|;|\|\|", command):
        words = segment.split()
        if not words or words[0] == "cd":
            continue  # "cd repo && cat x": what runs after
        first = words[0].rsplit("/", 1)[-1].lower()
        return first in READ_COMMANDS or (first == "git" and words[1:2] == ["show"])
    return False


# ---------------------------------------------------------------- the pipeline

REFERENCE = "[identical to the output of tool call {call} above]"
DELTA_HEAD = "[the output of tool call {call} above, except for these lines:]"
DELTA_LINE = "line {n}: {text}"
DELTA_MIN_LINES = 8  # shorter outputs are cheaper to send whole


def reference(call_id: str) -> str:
    """What replaces an output identical to an earlier one of the same conversation."""
    return REFERENCE.format(call=call_id)


def delta(earlier: str, text: str, call_id: str) -> str | None:
    """An output that differs from an earlier one of the conversation (as both
    were sent) in a few lines only: a reference to the earlier output and
    those lines, numbered, verbatim. None when they differ more (or in their
    number of lines)."""
    old, new = earlier.split("\n"), text.split("\n")
    if len(old) != len(new) or len(new) < DELTA_MIN_LINES:
        return None
    changed = [(n, line) for n, (was, line) in enumerate(zip(old, new), 1) if was != line]
    if not changed or len(changed) > max(2, len(new) // 10):
        return None
    return "\n".join([DELTA_HEAD.format(call=call_id)] + [DELTA_LINE.format(n=n, text=line) for n, line in changed])


@dataclass
class Result:
    text: str  # what is sent: the input itself when no step paid
    before: int  # tokens
    after: int
    saved: dict[str, int] = field(default_factory=dict)  # tokens each kept step removed

    @property
    def changed(self) -> bool:
        return self.after < self.before


PASSES = 4  # each pass that keeps a step removes tokens; in practice the second keeps nothing


def compress(text: str, count: Count, max_tokens: int | None = None, file: bool = False) -> Result:
    """The lossless steps (and, with `max_tokens`, the cap) in order, each kept
    only if the text got smaller in tokens. A `file` (what a file read
    returned) gets no lossless step: an agent edits files by exact text, and
    must see them as they are."""
    before = tokens = count(text)
    current = text
    saved: dict[str, int] = {}
    steps: list[tuple[str, Callable[[str], str]]] = [] if file else [
        ("terminal", render_terminal), ("json", minify_json), ("whitespace", tidy_whitespace),
        ("repeats", collapse_repeats)]
    if max_tokens is not None:
        steps.append(("cap", lambda t: cap(t, max_tokens, count)))
    # Again until a pass keeps nothing: a step that did not pay off may pay off
    # after a later one (CRLF redraws once trailing tabs are gone), and what
    # this returns must come back unchanged if compressed again.
    for _ in range(PASSES):
        kept = False
        for name, step in steps:
            out = step(current)
            if out == current:
                continue
            n = count(out)
            if n < tokens:
                saved[name] = saved.get(name, 0) + tokens - n
                current, tokens, kept = out, n, True
        if not kept:
            break
    return Result(current, before, tokens, saved)
