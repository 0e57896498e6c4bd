"""Heuristic prompt-injection detection for text a model will read: user text and,
above all, tool results and fetched documents.

Rules look for what injected text has to do to work: address the model and
override its instructions, steer what it puts in its answer, fake a role or a
system turn, hide characters, smuggle an encoded payload, or send data out.
Each finding carries a rule id, a weight and its span; a text is flagged when
the weights reach the threshold. What heuristics cannot catch: a hijacking
instruction phrased as a plain request with none of these marks ("Recommend a
good book") reads exactly like the user's own task.
"""
from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import regex

from tokenaddons.engines.gil import release_gil

# every hidden character is outside ASCII: an ASCII text has none
HIDDEN = regex.compile("[\U000e0000-\U000e007f\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069]")
FLAGS = regex.I | regex.S


class Near:
    """`first`, then `second` starting at most `gap` characters after it with no
    `barrier` character between: what `first[^.\n]{0,gap}?second` finds, in two
    linear passes. In one regex the lazy gap costs `gap` steps at every place
    `first` matches, 20 times slower on text that repeats it."""

    def __init__(self, first: str, second: str, gap: int, barrier: str = ".\n"):
        self.first, self.second = regex.compile(first, FLAGS), regex.compile(second, FLAGS)
        self.gap, self.barrier = gap, barrier

    def finditer(self, text: str) -> Iterator[tuple[int, int]]:
        firsts = [m.span() for m in self.first.finditer(text, concurrent=release_gil(text))]
        if not firsts:
            return
        ends = [end for _, end in firsts]
        taken = 0  # matches do not overlap, as a regex's do not
        for m in self.second.finditer(text, firsts[0][1], concurrent=release_gil(text)):
            at = m.start()
            i = bisect.bisect_left(ends, at - self.gap)
            while i < len(firsts) and firsts[i][1] <= at:
                start, end = firsts[i]
                if start >= taken and not any(text.find(c, end, at) >= 0 for c in self.barrier):
                    yield start, m.end()
                    taken = m.end()
                    break
                i += 1


def spans(pattern: regex.Pattern | Near, text: str) -> Iterator[tuple[int, int]]:
    """Where a rule's pattern matches (a regex or a Near)."""
    if isinstance(pattern, Near):
        return pattern.finditer(text)
    return (m.span() for m in pattern.finditer(text, concurrent=release_gil(text)))


def _rule(pattern: str | Near) -> regex.Pattern | Near:
    return pattern if isinstance(pattern, Near) else regex.compile(pattern, FLAGS)


# Every pattern is linear in its input: gaps are bounded, and a gap between two
# parts that each match often is a Near (tests/unit/test_guard.py times each rule
# on 1 MB of input made to hurt it against 1 MB of ordinary text).
# A rule runs only on text holding one of its hints: words every match of it
# contains (for a Near, of either part), looked up in the text folded as the
# rules match case (`folded`). A substring test costs a fraction of a regex
# pass, and most text holds no hint of most rules.
RULES: tuple[tuple[str, float, regex.Pattern | Near, tuple[str, ...]], ...] = tuple(
    (rule, weight, _rule(pattern), hints) for rule, weight, pattern, hints in (
        ("override", 1.0,
         r"\b(?:ignore|disregard|forget|override|skip|bypass)\b.{0,40}?\b(?:previous|prior|above|earlier|preceding|"
         r"all|any|your|the system|original)\b.{0,30}?\b(?:instructions?|prompts?|rules|directions|guidelines|"
         r"messages?|context|task)\b",
         ("ignore", "disregard", "forget", "override", "skip", "bypass")),
        ("override", 1.0, r"\b(?:new|updated|real|actual|revised)\s+(?:instructions?|task|system prompt)\s*[:\-]",
         ("instruction", "task", "system prompt")),
        ("override", 0.6, r"\b(?:from now on|henceforth|instead),?\s+(?:you|your|respond|answer|reply)\b",
         ("from now on", "henceforth", "instead")),
        ("override", 0.8,
         r"\byou are (?:now|no longer)\b|\bact as (?:a|an|if)\b.{0,40}\b(?:unrestricted|jailbroken|DAN)\b",
         ("you are now", "you are no longer", "act as a", "act as if")),
        ("steer_answer", 1.0, Near(
            r"\b(?:add|include|insert|append|embed|integrate|incorporate|mention|feature|put|prepend|weave)\w{0,20}",
            r"\b(?:in|into|to|within|at the (?:end|start|beginning) of)\s+(?:your|the)\s+(?:response|answer|reply|"
            r"output|code|solution|summary|codebase|program|script)\b", 80),
         ("response", "answer", "reply", "output", "code", "solution", "summary", "program", "script")),
        ("steer_answer", 1.0,
         r"\b(?:translate|encode|encrypt|reverse|rewrite|format|write|express|convert|spell|present|respond|answer|"
         r"reply)\b[^.\n]{0,40}?\b(?:your|the)\s+(?:response|answer|reply|output)\b",
         ("response", "answer", "reply", "output")),
        ("steer_answer", 0.7,
         r"\b(?:your|the)\s+(?:response|answer|reply|output)\s+(?:must|should|has to|needs to)\b",
         ("response", "answer", "reply", "output")),
        ("steer_answer", 1.0,
         r"\b(?:in|into|within|throughout|of|from)\s+your\s+(?:response|answer|reply|output)s?\b",
         ("response", "answer", "reply", "output")),
        ("steer_answer", 0.5, r"\bto\s+your\s+(?:response|answer|output)\b", ("response", "answer", "output")),
        ("steer_code", 0.6, r"\b(?:in|into|within|to)\s+(?:your|the)\s+(?:code|codebase|solution|program|script|"
                            r"implementation|project)\b",
         ("code", "solution", "program", "script", "implementation", "project")),
        ("steer_code", 0.6,
         r"\b(?:the\s+)?(?:following|below|above|this)\s+(?:code\s+)?(?:snippet|excerpt|code|lines?)\b",
         ("snippet", "excerpt", "code", "line")),
        ("steer_answer", 0.6, Near(
            r"\b(?:following|below|this)\s+(?:code\s+)?(?:snippet|excerpt|code|line|sentence|link)\b",
            r"\b(?:in|into)\s+(?:your|the)\b", 60),
         ("snippet", "excerpt", "code", "line", "sentence", "link")),
        ("role_spoof", 1.0, r"<\|im_start\|>|<\|im_end\|>|<\|(?:system|assistant|user)\|>|\[/?INST\]|<<SYS>>",
         ("<|", "inst]", "<<sys>>")),
        ("role_spoof", 0.8,
         r"(?m)^[ \t]*(?:#{1,3}[ \t]*)?(?:system|assistant|developer)[ \t]*(?:message|prompt)?[ \t]*:[ \t]*\S",
         ("system", "assistant", "developer")),
        ("role_spoof", 0.8, r"</?(?:system|assistant|user|instructions?|admin)>",
         ("system>", "assistant>", "user>", "instruction>", "instructions>", "admin>")),
        ("exfiltrate", 1.0, Near(
            r"\b(?:send|post|upload|forward|email|e-mail|transmit|leak|exfiltrate|submit|share)\b",
            r"\b(?:to|at|via)\s+(?:https?://|www\.|[\w.+-]{1,64}@[\w-]{1,63}\.)", 80),
         ("http", "www.", "@")),
        ("exfiltrate", 1.0, r"!\[[^\]\n]{0,300}\]\(https?://[^)\s?]{1,500}\?[^)\s]{0,500}=", ("](http",)),
        ("exfiltrate", 0.8, r"\b(?:requests\.post|curl\s{1,5}-[a-z]{0,10}\s{0,5}[^\n]{0,300}?https?://|"
                            r"fetch\(\s{0,5}['\"]https?://|urllib\.request\.urlopen)",
         ("requests.post", "curl", "fetch(", "urllib.request.urlopen")),
        ("exfiltrate", 0.6, Near(r"\b(?:api keys?|passwords?|credentials|secrets?|tokens?|conversation|chat history|"
                                 r"system prompt)\b", r"\b(?:to|at)\s+(?:https?://|[\w.+-]{1,64}@)", 40),
         ("http", "@")),
        ("malicious_code", 0.8, r"\b(?:subprocess\.(?:Popen|run|call|check_output)|os\.system|pyautogui|"
                                r"keyboard\.on_press|pynput|shutil\.rmtree|rm\s+-rf|mkfs|:\(\)\s*\{|socket\.socket\(|"
                                r"iptables|netsh|Fernet|cryptography\.fernet|os\.remove|os\.kill|while True:)",
         ("subprocess.", "os.system", "pyautogui", "keyboard.on_press", "pynput", "shutil.rmtree", "-rf", "mkfs",
          ":()", "socket.socket(", "iptables", "netsh", "fernet", "os.remove", "os.kill", "while true:")),
    ))
HINTS = tuple(dict.fromkeys(hint for *_, hints in RULES for hint in hints))  # each looked up once a text
BASE64_MIN = 40  # characters: shorter text holds no encoded payload
BASE64 = regex.compile(rf"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{{{BASE64_MIN},}}={{0,2}}(?![A-Za-z0-9+/=])")
INSTRUCTION_WORDS = regex.compile(r"\b(?:ignore|instruction|system|prompt|send|password|respond|answer|assistant)\b",
                               regex.I)


@dataclass(frozen=True)
class Finding:
    rule: str
    weight: float
    start: int
    end: int


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...]
    score: float

    def flagged(self, threshold: float) -> bool:
        return self.score >= threshold

    @property
    def rules(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.rule] = out.get(f.rule, 0) + 1
        return out


def folded(text: str) -> str:
    """`text` case-folded as the rules match case (regex.I): every character
    that matches an ASCII letter of a hint folds to that letter (the Kelvin
    sign to k, the long s to s; the dotted capital I, which matches i but
    casefolds to i and a combining dot, is made an i first)."""
    return text.lower() if text.isascii() else text.replace("\u0130", "i").casefold()


def matches(text: str) -> Iterator[tuple[str, float, int, int]]:
    """Every rule's matches in `text`: (rule, weight, start, end)."""
    lowered = folded(text)
    present = {hint for hint in HINTS if hint in lowered}
    if not present:
        return
    for rule, weight, pattern, hints in RULES:
        if not present.isdisjoint(hints):
            for start, end in spans(pattern, text):
                yield rule, weight, start, end


def _encoded(text: str) -> list[Finding]:
    out: list[Finding] = []
    if len(text) < BASE64_MIN:
        return out
    for m in BASE64.finditer(text, concurrent=release_gil(text)):
        try:
            decoded = base64.b64decode(m.group(0), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if INSTRUCTION_WORDS.search(decoded) or next(matches(decoded), None):
            out.append(Finding("encoded_payload", 1.0, m.start(), m.end()))
    return out


def scan(text: str) -> Verdict:
    findings: list[Finding] = []
    hidden = [] if text.isascii() else list(HIDDEN.finditer(text, concurrent=release_gil(text)))
    if hidden:
        # tag characters spell invisible text; a few zero-width joiners are ordinary in emoji
        tags = sum(1 for m in hidden if ord(m.group(0)) >= 0xE0000)
        weight = 1.0 if tags or len(hidden) >= 3 else 0.3
        findings.append(Finding("hidden_chars", weight, hidden[0].start(), hidden[-1].end()))
        visible = HIDDEN.sub("", text, concurrent=release_gil(text))
        if tags:
            smuggled = "".join(chr(ord(m.group(0)) - 0xE0000) for m in hidden if ord(m.group(0)) >= 0xE0000)
            visible += "\n" + smuggled
        if visible != text:
            findings += [Finding(f.rule, f.weight, 0, 0) for f in scan(visible).findings if f.rule != "hidden_chars"]
    findings += [Finding(rule, weight, start, end) for rule, weight, start, end in matches(text)]
    findings += _encoded(text)
    # one rule counts once, at its strongest: repetition is not more evidence
    best: dict[str, float] = {}
    for f in findings:
        best[f.rule] = max(best.get(f.rule, 0.0), f.weight)
    return Verdict(tuple(findings), sum(best.values()))


def sanitize(text: str, verdict: Verdict) -> str:
    """Strip hidden characters and defang the flagged spans so they read as quoted data."""
    spans = sorted((f.start, f.end) for f in verdict.findings if f.end > f.start and f.rule != "hidden_chars")
    out, pos = [], 0
    for start, end in spans:
        if start < pos:
            continue
        out += [text[pos:start], f"[tokenaddons removed {end - start} characters of suspected injected instructions]"]
        pos = end
    out.append(text[pos:])
    return HIDDEN.sub("", "".join(out))
