"""Each tool-output transform on real captured output (tests/samples), and
what makes them safe to apply to history: idempotence, determinism, losing
nothing a terminal would show."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tokenaddons.engines import compressors as c
from tokenaddons.engines.tokens import count_text

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode()  # as a tool returns it: no newline translation


ALL = ["pytest_color.txt", "curl_progress.txt", "pip_download_tty.txt", "pip_list.txt", "git_log_stat.txt",
       "pip_bom.cdx.json"]


def test_a_coloured_pytest_run_renders_to_its_plain_text():
    text = sample("pytest_color.txt")
    out = c.render_terminal(text)
    assert "\x1b" not in out and out == ANSI.sub("", text)  # colours only: exactly the text without them
    r = c.compress(text, count_text)
    assert r.saved["terminal"] > 0.3 * r.before  # a third of a coloured run's tokens are escape codes
    assert "51 passed" in r.text and out.count("PASSED") == text.count("PASSED")


def test_a_progress_meter_keeps_only_its_last_frame():
    text = sample("curl_progress.txt")
    assert text.count("\r") > 3
    out = c.render_terminal(text)
    assert "\r" not in out
    frames = [line for line in out.splitlines() if "28.6M" in line]
    assert len(frames) == 1 and frames[0].startswith("100 28.6M  100 28.6M")


def test_rich_progress_bars_in_a_pseudo_terminal():
    text = sample("pip_download_tty.txt")  # \r\x1b[2K redraws, colours, a hidden then shown cursor
    out = c.render_terminal(text)
    assert "\x1b" not in out and "\r" not in out
    bars = [line for line in out.splitlines() if "MB" in line and "/" in line]
    assert len(bars) == 1 and "1.7/1.7 MB" in bars[0]  # the finished bar, not the first frame
    assert "Successfully downloaded mitmproxy" in out


@pytest.mark.parametrize("text,shown", [
    ("Downloading  10%\rDownloading 100%", "Downloading 100%"),
    ("abcdef\rxy", "xycdef"),  # overwritten, not erased: what a terminal shows
    ("abcdef\rxy\x1b[K", "xy"),  # erase to the end of the line
    ("abcdef\x1b[2K\rdone", "done"),
    ("abc\x08\x08X", "aXc"),
    ("a\x1b[5Gb", "a   b"),  # cursor to column 5
    ("\x1b]0;window title\x07prompt", "prompt"),
    ("\x1b]8;;https://example.org\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("tick\r\n", "tick\n"),  # a CRLF is a line end, not a redraw
])
def test_one_line_redraws(text, shown):
    assert c.render_terminal(text) == shown


@pytest.mark.parametrize("text", [
    "line one\nline two\x1b[1Aover",  # cursor up: needs a screen model
    "\x1b[2J\x1b[Hcleared",  # erase display, absolute position
    "save\x1bMreverse index",
    "x\x1b[99999999C y",  # a cursor move far past the text
    "half an escape \x1b[12",
])
def test_what_a_line_model_cannot_replay_is_left_as_it_is(text):
    assert c.render_terminal(text) == text


def test_hostile_erases_are_bounded():
    text = "x" * 5000 + "\x1b[1K" * 20000  # erase-to-start again and again: refused, not quadratic
    assert c.render_terminal(text) == text


def test_pretty_json_is_minified_keeping_every_token():
    text = sample("pip_bom.cdx.json")
    out = c.minify_json(text)
    assert json.loads(out) == json.loads(text) and "\n" not in out
    r = c.compress(text, count_text)
    assert r.saved["json"] > 0.2 * r.before
    exact = '{\n  "price": 1.50,\n  "big": 1e5,\n  "s": "two  spaces\\n",\n  "u": "\\u00e9"\n}\n'
    assert c.minify_json(exact) == '{"price":1.50,"big":1e5,"s":"two  spaces\\n","u":"\\u00e9"}'


def test_json_after_a_header_and_what_is_not_json():
    assert c.minify_json('Exit code 0\nOutput:\n[\n  1,\n  2\n]\n') == 'Exit code 0\nOutput:\n[1,2]'
    for text in ('{"a": 1}\n{"b": 2}\n',  # JSON lines: not one document
                 '{\n  "a": 1\n}\ntrailing words\n',
                 'def f():\n    return {\n        "a": 1,\n    }\n'):
        assert c.minify_json(text) == text


def test_whitespace_and_blank_runs():
    text = "a  \t\nb\n\n\n\n\nc\n\n  \nd\t\n"
    assert c.tidy_whitespace(text) == "a\nb\n\n\nc\n\n\nd\n"


def test_runs_of_identical_lines_keep_a_count():
    warning = "  /usr/lib/python3/site.py:12: DeprecationWarning: pkg_resources is deprecated as an API"
    text = "\n".join(["start"] + [warning] * 40 + ["end", "x", "x"])
    out = c.collapse_repeats(text)
    assert out == "\n".join(["start", warning, "[previous line repeated 39 more times]", "end", "x", "x"])
    assert c.collapse_repeats("a\n\n\n\nb") == "a\n\n\n\nb"  # blank lines are the whitespace step's


def test_cap_keeps_head_and_tail_within_the_budget():
    text = sample("pytest_color.txt") * 6
    out = c.cap(text, 600, count_text)
    assert count_text(out) <= 600 and out.startswith(text[:200]) and out.endswith(text[-200:])
    mark = re.search(r"\[\.\.\. (\d+) lines, about (\d+) tokens, cut here", out)
    assert mark and int(mark.group(1)) > 100
    assert c.cap(out, 600, count_text) == out
    assert c.cap("short", 600, count_text) == "short"


def test_reference_and_delta():
    earlier = "\n".join(f"test_{i} PASSED" for i in range(30)) + "\n=== 30 passed in 1.02s ==="
    again = earlier.replace("1.02s", "0.98s")
    d = c.delta(earlier, again, "toolu_1")
    assert d == "[the output of tool call toolu_1 above, except for these lines:]\nline 31: === 30 passed in 0.98s ==="
    assert c.delta(earlier, again.replace("PASSED", "FAILED"), "toolu_1") is None  # too different
    assert c.delta(earlier, again + "\nmore", "toolu_1") is None  # another number of lines
    assert c.reference("call_9") == "[identical to the output of tool call call_9 above]"


@pytest.mark.parametrize("name", ALL)
def test_compressing_twice_changes_nothing(name):
    text = sample(name)
    once = c.compress(text, count_text, max_tokens=800)
    twice = c.compress(once.text, count_text, max_tokens=800)
    assert twice.text == once.text and twice.saved == {}
    lossless = c.compress(text, count_text)
    assert c.compress(lossless.text, count_text).text == lossless.text
    for step in (c.render_terminal, c.minify_json, c.tidy_whitespace, c.collapse_repeats):
        assert step(step(text)) == step(text)


@pytest.mark.parametrize("name", ALL)
def test_a_step_is_kept_only_if_it_saves_tokens(name):
    r = c.compress(sample(name), count_text)
    assert r.after <= r.before and all(n > 0 for n in r.saved.values())
    assert sum(r.saved.values()) == r.before - r.after
    assert r.changed == (r.text != sample(name))


PIECES = st.sampled_from(["word", " ", "  ", "\t", "\n", "\n\n\n\n", "\r", "\r\n", "\x08", "\x1b[31m", "\x1b[0m",
                          "\x1b[2K", "\x1b[K", "\x1b[3G", "\x1b[1A", "\x1b]0;t\x07", "{", "}", "[", "]", '"k": ',
                          "1.50", ",", "same line\n", "é", "━"])


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=60).map("".join))
@example("{ \t\n\r\n")  # a CRLF redraw that pays off only once the tab is gone: a second pass
def test_any_text_compresses_idempotently(text):
    once = c.compress(text, count_text)
    assert c.compress(once.text, count_text).text == once.text
    assert once.after <= once.before


@pytest.mark.parametrize("name,args,reads", [
    ("Read", {"file_path": "/repo/a.py"}, True),
    ("read_file", {"path": "a.json"}, True),
    ("str_replace_based_edit_tool", {"command": "view", "path": "a.py"}, True),
    ("str_replace_based_edit_tool", {"command": "str_replace", "path": "a.py"}, False),
    ("Bash", {"command": "cat package.json"}, True),
    ("exec_command", {"cmd": "sed -n '1,200p' src/app.py"}, True),
    ("exec_command", {"cmd": "cd repo && nl -ba setup.cfg | sed -n '1,80p'"}, True),
    ("shell", {"command": ["bash", "-lc", "head -50 README.md"]}, True),
    ("bash", {"command": "git show HEAD:pyproject.toml"}, True),
    ("bash", {"command": "/usr/bin/tail -n 20 log.txt"}, True),
    ("bash", {"command": "pytest -v"}, False),
    ("bash", {"command": "git log --stat"}, False),
    ("bash", {"command": "curl -s https://api.example.org/items"}, False),
    ("search", {"pattern": "def main"}, False),
    ("exec_command", "not even JSON", False),
])
def test_which_calls_read_a_file(name, args, reads):
    assert c.reads_file(name, args) is reads


def test_a_file_read_is_shown_as_it_is():
    text = sample("pip_bom.cdx.json")
    assert c.compress(text, count_text, file=True).text == text  # an agent may edit it by exact text
    assert c.compress(text, count_text).changed
