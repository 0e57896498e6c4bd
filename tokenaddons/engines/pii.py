"""Finding PII and secrets in text: presidio-analyzer, offline, fast on agent traffic,
and quiet on code, data and logs.

presidio runs on a blank spaCy English pipeline (its pattern recognizers need no
model) and tldextract on its bundled public-suffix snapshot, so nothing is
downloaded. It finds e-mail addresses, US SSNs and IBANs. Phone and card
numbers, IP addresses and secrets are found by recognizers of our own, because
what an agent reads is mostly code, data and logs, where digits are everywhere
(and presidio's IPv6 pattern is exponential on a long run of `ab:ab:`):

- a phone number is one as people write it: with a country code, an area code
  in parentheses or a phone-like grouping, or next to a word that says it is
  one ("Phone:", "fax", "call me at"); never digits inside a longer number, a
  decimal, a hash, a timestamp or an identifier;
- a card number passes Luhn, starts like a card of its length does (the issuer
  prefixes) and is written whole or in the groups cards are printed in;
- an IP address is personal only when it is globally routable: loopback,
  private, link-local, shared and documentation ranges are left alone unless
  `private_ips` is set;
- a `password`/`secret`/`token` assignment needs a literal value: a quoted
  string, or a bare value on a config line; never a type, a variable or a call.

Speed: agent requests repeat their whole history every turn, so results are
remembered per text (by content hash) and a text is never scanned twice. A
first scan sends presidio only bounded windows around candidates that cheap
linear patterns find, in batches far below spaCy's 1,000,000-character limit.
Every pattern here is linear in its input.
"""
from __future__ import annotations

import bisect
import functools
import ipaddress
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import regex

from tokenaddons.engines.memo import Memo

log = logging.getLogger(__name__)

PRESIDIO_ENTITIES = ("EMAIL_ADDRESS", "US_SSN", "IBAN_CODE")
PII_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")


def _mixed(value: str) -> bool:
    """Looks generated (a key), not a word: a digit and a letter at least."""
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _aws_secret(value: str) -> bool:
    # base64 of random bytes has both cases and digits; a git SHA-1 (40 hex) does not
    return _mixed(value) and any(c.isupper() for c in value) and any(c.islower() for c in value)


# (entity, pattern, score, hints, check). Prefixes are the providers' documented
# key formats. A pattern runs only on text holding one of its hints (lowercase,
# looked up in the lowercased text): a substring test is ~100x cheaper than a
# regex pass, and most text holds no secret at all. `check` rejects look-alikes.
SECRETS: tuple[tuple[str, str, float, tuple[str, ...], Callable[[str], bool] | None], ...] = (
    ("ANTHROPIC_KEY", r"\bsk-ant-[A-Za-z0-9_\-]{20,}", 0.95, ("sk-ant-",), _mixed),
    ("OPENAI_KEY", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}", 0.9, ("sk-",), _mixed),
    ("AWS_ACCESS_KEY", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", 0.95, ("akia", "asia", "abia", "acca"), None),
    ("GITHUB_TOKEN", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{60,}\b", 0.95,
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), None),
    ("SLACK_TOKEN", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", 0.95, ("xox",), _mixed),
    ("GOOGLE_API_KEY", r"\bAIza[0-9A-Za-z_\-]{35}\b", 0.95, ("aiza",), None),
    ("STRIPE_KEY", r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}\b", 0.95, ("_live_",), None),
    ("JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b", 0.9, ("eyj",), None),
)
# AWS_SECRET_KEY, PRIVATE_KEY and PASSWORD are found by code below (a key near its name, a block, an assignment)
SECRET_ENTITIES = ("ANTHROPIC_KEY", "OPENAI_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GITHUB_TOKEN", "SLACK_TOKEN",
                   "GOOGLE_API_KEY", "STRIPE_KEY", "JWT", "PRIVATE_KEY", "PASSWORD")
# an AWS secret access key: 40 characters of base64, with "aws" shortly before it
AWS_SECRET = regex.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
ALL_ENTITIES = PII_ENTITIES + SECRET_ENTITIES

# -- passwords: a keyword, an assignment, a literal value
_KEY = (r"(?<![A-Za-z0-9_.\-])(?:[A-Za-z0-9]+[_.\-])*"
        r"(?:password|passwd|passphrase|pwd|secret|token|api[_\-]?key|access[_\-]?key)"
        r"(?:[_\-]?(?:key|token|secret|access[_\-]key))?(?![A-Za-z0-9_])")
# anywhere: the value is a quoted string (code, JSON, YAML with quotes)
PASSWORD_QUOTED = regex.compile(
    r"(?i)" + _KEY + r"[\"']?[ \t]{0,8}(?::=|=>|[:=])[ \t]{0,8}(?:\"([^\"\s\\]{6,200})\"|'([^'\s\\]{6,200})')")
# on a config line of its own (.env, ini, YAML): a bare value to the end of the line
PASSWORD_BARE = regex.compile(
    r"(?im)^[ \t]{0,40}(?:export[ \t]+)?" + _KEY + r"[ \t]{0,8}[:=][ \t]{0,8}([^\s'\"#;,(){}\[\]<>]{6,200})[ \t]*\r?$")
PASSWORD_HINTS = ("password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "api_key", "api-key",
                  "accesskey", "access_key", "access-key")
CONSTANT = regex.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[A-Z]+(?:_[A-Z0-9]+)*")  # settings.TOKEN, OPENAI_API_KEY
NOT_SECRETS = {"none", "null", "nil", "true", "false", "undefined", "required", "optional", "string", "changeme",
               "redacted", "secret", "password"}
PLACEHOLDERS = ("${", "{{", "%(", "***", "xxxx", "...")


def _literal(value: str, bare: bool) -> bool:
    """A value as a secret is written: not a name, a reference or a placeholder.
    A bare value must also look generated (a digit or a symbol): on a line of
    code `token: SecretStr` is a type, not a password."""
    if (CONSTANT.fullmatch(value) or value.lower() in NOT_SECRETS or value[0] in "$%<&@"
            or any(p in value.lower() for p in PLACEHOLDERS)):
        return False
    digit = any(c.isdigit() for c in value)
    symbol = any(c in "!#$%^&*+=?~/|@" for c in value)
    cases = any(c.isupper() for c in value) and any(c.islower() for c in value)
    if bare and not (digit or symbol):
        return False
    return digit or symbol or cases


# -- private keys: a PEM block (linear: one search for its end per block)
PEM_BEGIN = regex.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
PEM_END = regex.compile(r"-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
PEM_BODY = regex.compile(r"(?:[ \t]*(?:\r?\n|\\n)[ \t]*[A-Za-z0-9+/=:\- ,]{0,100})*")

# -- phone numbers
PHONE = regex.compile(
    r"(?<![\w+\-./#@$%&=*~^|\\])(?<!\d:)(?<!\d[ .\-])"  # not inside a longer number, token or list of numbers
    r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,5}\)[ .\-]?)?\d{1,15}(?:[ .\-]\d{1,8}){0,6}"
    r"(?:[ ]?(?:x|ext\.?|\#)[ ]?\d{1,6})?"  # extension
    r"(?![\w]|[ .\-/:,]\d)")
PHONE_WORDS = regex.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|fax|desk|landline|sms|whatsapp|"
    r"call (?:me|us|him|her|them)|text (?:me|us)|reach (?:me|us)|contact)\b")
PHONE_AFTER = regex.compile(r"(?i)[ \-]{0,2}\(?(?:office|mobile|cell|fax|home|work|desk|phone|tel)\b")
NANP = regex.compile(r"\(?\d{3}\)?[ .\-]?\d{3}[.\-]\d{4}")
DATE = regex.compile(r"(?:19|20)\d\d[./\-](?:0?[1-9]|1[0-2])[./\-](?:0?[1-9]|[12]\d|3[01])"
                  r"|(?:0?[1-9]|[12]\d|3[01])[./\-](?:0?[1-9]|[12]\d|3[01])[./\-](?:19|20)\d\d")
PHONE_REGIONS = ("US", "GB", "DE", "FR")

# -- IP addresses (validated by ipaddress)
IPV4 = regex.compile(r"(?<![\w.\-#])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w]|\.\d)")
IPV6 = regex.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?"
                  r"(?:%\w{1,16})?(?:/\d{1,3})?(?![\w:.])")

# -- card numbers: issuer prefixes and the lengths each issues
CARD = regex.compile(r"(?<![\w.\-+/])(?<!\d[ ,])(?:\d{4}[ \-]){2,4}\d{1,4}(?![\w]|[.\-/]\d|[ ,]\d)"
                  r"|(?<![\w.\-+/])(?<!\d[ ,])\d{4}[ \-]\d{6}[ \-]\d{4,5}(?![\w]|[.\-/]\d|[ ,]\d)"
                  r"|(?<![\w.\-+/])\d{12,19}(?![\w]|[.\-/]\d)")
CARD_PREFIXES = (  # (first digits, lengths)
    (("4",), (13, 16, 19)),
    (tuple(str(n) for n in range(51, 56)) + tuple(str(n) for n in range(2221, 2721)), (16,)),
    (("34", "37"), (15,)),
    (("6011", "65") + tuple(str(n) for n in range(644, 650)), (16, 17, 18, 19)),
    (("62",), (16, 17, 18, 19)),
    (("300", "301", "302", "303", "304", "305", "3095", "36", "38", "39"), (14, 15, 16, 17, 18, 19)),
    (("35",), (16, 17, 18, 19)),  # JCB
    (("1800", "2131"), (15,)),
    (("50", "56", "57", "58", "6", "0604"), tuple(range(12, 20))),  # Maestro
)

# -- presidio's entities: where to look (windows around these go to presidio)
CANDIDATES = {
    "EMAIL_ADDRESS": regex.compile("@"),
    "US_SSN": regex.compile(r"(?<![\w+/])(?:\d{3}[- .]\d{2}[- .]\d{4}|\d{5}-\d{4}|\d{3}-\d{6}|\d{9})(?![\w+/])"),
    "IBAN_CODE": regex.compile(r"(?<![\w+/])[A-Za-z]{2}\d{2}(?:[A-Za-z0-9]|[ ](?=[A-Za-z0-9])){10,40}(?![\w+/=])"),
}
CONTEXT = 60  # characters of context each side of a candidate (presidio scores with context words)
WIDEN = 100  # at most this far to the nearest whitespace, so no token is cut in half
BATCH = 32_000  # characters per presidio call: far below spaCy's 1,000,000 limit (E088), short (it holds the GIL)
OVERLAP = 300  # a window longer than a batch is cut in pieces overlapping this much (an e-mail is < 255)
SEPARATOR = "\n\n"  # between windows sent to presidio together; no entity spans it
VERSION_BEFORE = regex.compile(r"(?i)(?:[<>!~^]=?|==|\bv|@|\bversions?:?|\bver\.?)[ \t]*\Z")  # >=1.2.0.0, v1.2.3.4
NUMERIC = {"US_SSN", "IBAN_CODE"}


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    entity: str
    score: float


def _spacy_blank_path() -> str:
    import spacy

    path = Path("~/.cache/tokenaddons/spacy-blank-en").expanduser()
    if not (path / "config.cfg").exists():
        path.mkdir(parents=True, exist_ok=True)
        spacy.blank("en").to_disk(path)
    return str(path)


@functools.lru_cache(maxsize=1)
def _offline_tldextract():
    """presidio's email recognizer calls tldextract.extract(), whose default
    extractor fetches the public suffix list: use the bundled snapshot instead."""
    import tldextract
    import tldextract.tldextract as impl

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    impl.TLD_EXTRACTOR = extractor
    tldextract.extract = extractor
    return extractor


def _window_context_enhancer():
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class WindowContextEnhancer(LemmaContextAwareEnhancer):
        """presidio's context scoring (a context word among the five words before a
        match raises its score), read from the text itself. presidio's own walks
        every token of the text for every match (quadratic in a text full of
        e-mail addresses) and deep-copies every result first."""

        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            by_id = {r.id: r for r in recognizers}
            for result in raw_results:
                meta = result.recognition_metadata or {}
                recognizer = by_id.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
                if recognizer is None or not recognizer.context or meta.get(
                        RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                    continue
                words = re.findall(r"\w+", text[max(0, result.start - 80):result.start].lower())
                words = words[-self.context_prefix_count:] + [text[result.start:result.end].lower()]
                if any(c.lower() in w for c in recognizer.context for w in words):
                    result.score = min(max(result.score + self.context_similarity_factor,
                                           self.min_score_with_context_similarity), self.MAX_SCORE)
            return raw_results

    return WindowContextEnhancer()


_ANALYZER = None
_ANALYZER_LOCK = threading.Lock()


def analyzer():
    """presidio's analyzer, built once per process (1-2 s: the proxy builds it at
    start-up, in a worker thread) and shared by every detector; thread-safe."""
    global _ANALYZER
    with _ANALYZER_LOCK:
        if _ANALYZER is None:
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import NlpEngineProvider

            extract = _offline_tldextract()
            extract("warm.example.com")  # load the suffix list now, not at the first email found
            provider = NlpEngineProvider(nlp_configuration={
                "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": _spacy_blank_path()}]})
            engine = provider.create_engine()
            _ANALYZER = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"],
                                       context_aware_enhancer=_window_context_enhancer())
        return _ANALYZER


def standalone(text: str, start: int, end: int) -> bool:
    """A number-like span is a token of its own, not part of a longer number, a
    decimal, an identifier, a hash or a path."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or before == "_" or after.isalnum() or after == "_":
        return False
    if before in ".-/:+#" and start >= 2 and text[start - 2].isalnum():
        return False
    return not (after in ".-/:" and end + 1 < len(text) and text[end + 1].isalnum())


def email_address(value: str) -> bool:
    """An address, not a path or a package pin that has an @ in it
    (github.com/rust-lang/crates.io-index#heck@0.5.0, icon@2x.png): its domain
    ends in a real public suffix."""
    local, _, domain = value.rpartition("@")
    if not local or "/" in local or ":" in local:
        return False
    ext = _offline_tldextract()(domain)
    return bool(ext.domain and ext.suffix) and not domain.replace(".", "").isdigit()


def public_ip(value: str) -> bool:
    """Globally routable: not loopback, private, link-local, shared, reserved or
    documentation space (an IPv6 address ending in an IPv4 one is judged by that)."""
    try:
        ip = ipaddress.ip_interface(value).ip
    except ValueError:
        return False
    if ip.version == 6 and "." in value:
        return public_ip(value.rsplit(":", 1)[1].split("/")[0])
    return ip.is_global and not ip.is_multicast


def luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_number(value: str) -> bool:
    digits = re.sub(r"[ \-]", "", value)
    if not 12 <= len(digits) <= 19 or not luhn(digits):
        return False
    groups = re.split(r"[ \-]", value)
    if len(groups) > 1:
        if len({c for c in value if c in " -"}) > 1:
            return False  # one separator, as cards are printed
        sizes = [len(g) for g in groups]
        if sizes not in ([4, 6, 5], [4, 6, 4]) and not (all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4):
            return False
    return any(digits.startswith(p) and len(digits) in lengths for prefixes, lengths in CARD_PREFIXES
               for p in prefixes)


@functools.lru_cache(maxsize=4096)
def _valid_phone(number: str) -> bool:
    import phonenumbers

    regions = (None,) if number.startswith("+") else PHONE_REGIONS
    for region in regions:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(number, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _phone_context(text: str, start: int, end: int) -> bool:
    """A word that says a phone number follows (on its line or the line before)
    or one that names it just after (`781 1704 office`)."""
    line_start = text.rfind("\n", 0, start)
    if line_start > 0 and not text[line_start + 1:start].strip():  # the number begins its line: look one up
        line_start = text.rfind("\n", 0, line_start)
    lo = max(line_start + 1, start - 40)
    if PHONE_WORDS.search(text, lo, start):
        return True
    return PHONE_AFTER.match(text, end, min(len(text), end + 16)) is not None


def phone_numbers(text: str) -> list[Finding]:
    out = []
    for m in PHONE.finditer(text, concurrent=True):
        value = m.group()
        number = re.split(r"[ ]?(?:x|ext\.?|#)[ ]?(?=\d+$)", value)[0]
        digits = re.sub(r"\D", "", number)
        if not 7 <= len(digits) <= 15 or len(set(digits)) < 3 or DATE.fullmatch(number):
            continue
        body = re.sub(r"^\+\d{1,3}[ .\-]?|\(\d{1,5}\)[ .\-]?", "", number)  # without country and area codes
        groups = [g for g in re.split(r"[ .\-]+", body) if g]
        if any(len(g) < 2 for g in groups[1:]) or re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", number):
            continue  # 1 2 3 4 5 6 7 or a dotted quad (an IP address)
        groups = [g for g in re.split(r"[ .\-()+]+", number) if g]
        if _phone_context(text, m.start(), m.end()):
            score = 0.75 if len(groups) > 1 or number.startswith("+") or len(digits) <= 13 else 0.0
        elif number.startswith("+") or "(" in number:
            score = 0.7 if _valid_phone(number) else 0.0
        elif NANP.fullmatch(number) and re.search(r"[.\-]", number):
            score = 0.65 if _valid_phone(number) else 0.0
        elif len(groups) >= 3 and len(set(re.findall(r"[ .\-]", number))) == 1 and (
                number[0] == "0" or re.search(r"[.\-]", number)) and not re.fullmatch(r"\d{3}-\d{2}-\d{4}", number):
            # a national format: 0490 75 40 81, 60-56-85-91, 03.93.92.16.85
            score = 0.6
        else:
            score = 0.0
        if score:
            out.append(Finding(m.start(), m.end(), "PHONE_NUMBER", score))
    return out


def card_numbers(text: str) -> list[Finding]:
    return [Finding(m.start(), m.end(), "CREDIT_CARD", 1.0) for m in CARD.finditer(text, concurrent=True)
            if card_number(m.group())]


def private_keys(text: str) -> list[Finding]:
    out = []
    pos = 0
    while (begin := PEM_BEGIN.search(text, pos, concurrent=True)) is not None:
        end = PEM_END.search(text, begin.end(), concurrent=True)
        if end is None:  # cut short (a truncated tool output): its key material still goes
            body = PEM_BODY.match(text, begin.end(), concurrent=True)
            out.append(Finding(begin.start(), body.end() if body else begin.end(), "PRIVATE_KEY", 1.0))
            break
        out.append(Finding(begin.start(), end.end(), "PRIVATE_KEY", 1.0))
        pos = end.end()
    return out


def aws_secret_keys(text: str, lowered: str) -> list[Finding]:
    return [Finding(m.start(), m.end(), "AWS_SECRET_KEY", 0.9) for m in AWS_SECRET.finditer(text, concurrent=True)
            if "aws" in lowered[max(0, m.start() - 48):m.start()] and _aws_secret(m.group())]


def ip_addresses(text: str, private: bool) -> list[Finding]:
    out = []
    for pattern in (IPV4, IPV6) if ":" in text else (IPV4,):
        for m in pattern.finditer(text, concurrent=True):
            value = m.group()
            try:
                ipaddress.ip_interface(value)
            except ValueError:
                continue
            if VERSION_BEFORE.search(text[max(0, m.start() - 12):m.start()]):
                continue  # a version number (brotlicffi>=1.2.0.0), not an address
            if private or public_ip(value):
                out.append(Finding(m.start(), m.end(), "IP_ADDRESS", 0.8))
    return out


def passwords(text: str) -> list[Finding]:
    out = []
    for pattern, bare in ((PASSWORD_QUOTED, False), (PASSWORD_BARE, True)):
        for m in pattern.finditer(text, concurrent=True):
            group = next(g for g in range(1, (m.re.groups or 0) + 1) if m.group(g) is not None)
            if _literal(m.group(group), bare):
                out.append(Finding(m.start(group), m.end(group), "PASSWORD", 0.8))
    return out


class Detector:
    """Thread-safe, memoized detection over a fixed entity list and threshold."""

    def __init__(self, entities: tuple[str, ...] = ALL_ENTITIES, threshold: float = 0.4, memo_size: int = 50_000,
                 private_ips: bool = False):
        unknown = set(entities) - set(ALL_ENTITIES)
        if unknown:
            raise ValueError(f"unknown entity types: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(ALL_ENTITIES)})")
        self.entities = tuple(entities)
        self.presidio_entities = [e for e in entities if e in PRESIDIO_ENTITIES]
        self.secrets = [(n, regex.compile(p), s, hints, check) for n, p, s, hints, check in SECRETS if n in entities]
        self.threshold = threshold
        self.private_ips = private_ips
        self.memo: Memo[tuple[Finding, ...]] = Memo(self._scan, memo_size)

    def analyzer(self):
        return analyzer()

    def warm(self) -> None:
        """Load presidio and what loads lazily (phone metadata, the suffix list)
        now, without remembering the warm-up text."""
        self.analyzer()
        self._scan("warm-up: jane@example.com, +1 415 555 0199, 4111 1111 1111 1111, 81.2.69.160, 078-05-1120")

    def find(self, text: str) -> tuple[Finding, ...]:
        """Findings in `text`, sorted, without overlaps (the longer, surer one wins)."""
        return self.memo(text) if text else ()

    def known(self, text: str) -> tuple[Finding, ...] | None:
        """`find(text)` if it is remembered, else None (never scans)."""
        return self.memo.peek(text) if text else ()

    def _scan(self, text: str) -> tuple[Finding, ...]:
        results: list[Finding] = []
        lowered = text.lower()
        for name, pattern, score, hints, check in self.secrets:
            if not any(h in lowered for h in hints):
                continue
            for m in pattern.finditer(text, concurrent=True):
                start, end = (m.start(1), m.end(1)) if m.groups() and m.group(1) else (m.start(), m.end())
                if check is None or check(text[start:end]):
                    results.append(Finding(start, end, name, score))
        if "AWS_SECRET_KEY" in self.entities and "aws" in lowered:
            results += aws_secret_keys(text, lowered)
        if "PRIVATE_KEY" in self.entities and "private key" in lowered:
            results += private_keys(text)
        if "PASSWORD" in self.entities and any(h in lowered for h in PASSWORD_HINTS):
            results += passwords(text)
        has_digit = any(c in text for c in "0123456789")
        if "PHONE_NUMBER" in self.entities and has_digit:
            results += phone_numbers(text)
        if "CREDIT_CARD" in self.entities and has_digit:
            results += card_numbers(text)
        if "IP_ADDRESS" in self.entities and (has_digit or ":" in text):
            results += ip_addresses(text, self.private_ips)
        if self.presidio_entities:
            results += self._presidio(text)
        return _resolve([r for r in results if r.score >= self.threshold])

    def _presidio(self, text: str) -> list[Finding]:
        out = []
        for batch in self._batches(self._windows(text)):
            # one presidio call over many windows joined: its per-call cost dominates short windows
            joined, starts = [], []  # (offset in joined text, offset in text)
            size = 0
            for lo, hi in batch:
                starts.append((size, lo))
                joined.append(text[lo:hi])
                size += hi - lo + len(SEPARATOR)
            for r in self.analyzer().analyze(SEPARATOR.join(joined), language="en",
                                             entities=self.presidio_entities, score_threshold=self.threshold):
                at, lo = starts[bisect.bisect_right(starts, (r.start, len(text))) - 1]
                f = Finding(lo + r.start - at, lo + r.end - at, r.entity_type, r.score)
                if self._plausible(text, f):
                    out.append(f)
        return out

    @staticmethod
    def _plausible(text: str, f: Finding) -> bool:
        if f.entity == "EMAIL_ADDRESS":
            return email_address(text[f.start:f.end])
        return f.entity not in NUMERIC or standalone(text, f.start, f.end)

    def _windows(self, text: str) -> list[tuple[int, int]]:
        """Context around every candidate, overlapping ones merged, each widened
        to whitespace (but only so far), in pieces no longer than a batch."""
        spans = sorted(m.span() for entity in self.presidio_entities
                       for m in CANDIDATES[entity].finditer(text, concurrent=True))
        merged: list[list[int]] = []
        for start, end in spans:
            lo, hi = start - CONTEXT, end + CONTEXT
            if merged and lo <= merged[-1][1] + WIDEN:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        n = len(text)
        out: list[tuple[int, int]] = []
        for lo, hi in merged:
            lo, hi = max(0, lo), min(n, hi)
            # widen to whitespace so no token is cut in half
            cut = max(text.rfind(" ", max(0, lo - WIDEN), lo), text.rfind("\n", max(0, lo - WIDEN), lo))
            lo = cut + 1 if cut >= 0 else max(0, lo - WIDEN)
            ends = [i for i in (text.find(" ", hi, hi + WIDEN), text.find("\n", hi, hi + WIDEN)) if i >= 0]
            hi = min(ends) if ends else min(n, hi + WIDEN)
            while hi - lo > BATCH:  # a window longer than a batch: pieces that overlap
                out.append((lo, lo + BATCH))
                lo += BATCH - OVERLAP
            out.append((lo, hi))
        return out

    @staticmethod
    def _batches(windows: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        batches: list[list[tuple[int, int]]] = []
        size = BATCH
        for lo, hi in windows:
            if size + hi - lo + len(SEPARATOR) > BATCH:
                batches.append([])
                size = 0
            batches[-1].append((lo, hi))
            size += hi - lo + len(SEPARATOR)
        return batches


def _resolve(findings: list[Finding]) -> tuple[Finding, ...]:
    """Drop findings that overlap a longer (then surer) one; equal findings once."""
    chosen: list[Finding] = []
    starts: list[int] = []  # sorted starts of chosen spans, for a log-time overlap test
    for f in sorted(set(findings), key=lambda f: (-(f.end - f.start), -f.score, f.start)):
        i = bisect.bisect_left(starts, f.start)
        if i < len(starts) and chosen[i].start < f.end:
            continue
        if i > 0 and chosen[i - 1].end > f.start:
            continue
        starts.insert(i, f.start)
        chosen.insert(i, f)
    return tuple(chosen)
