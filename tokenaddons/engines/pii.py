"""Finding PII and secrets in text: presidio-analyzer, offline, fast on agent traffic.

presidio runs on a blank spaCy English pipeline (its pattern recognizers need no
model) and tldextract on its bundled public-suffix snapshot, so nothing is
downloaded. Secrets are found by recognizers of our own.

Speed: agent requests repeat their whole history every turn, so results are
remembered per text (by content hash) and a text is never scanned twice. A
first scan sends presidio only short windows around candidates that a cheap
regex finds (an @, a run of digits, an IBAN-like or secret-like token), not the
whole text.
"""
from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tokenaddons.engines.memo import Memo

log = logging.getLogger(__name__)

PRESIDIO_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")

# (entity, pattern, score, hints). Prefixes are the providers' documented key
# formats. A pattern runs only on text holding one of its hints (lowercase,
# looked up in the lowercased text): a substring test is ~100x cheaper than a
# regex pass, and most text holds no secret at all.
SECRETS = (
    ("ANTHROPIC_KEY", r"\bsk-ant-[A-Za-z0-9_\-]{20,}", 0.95, ("sk-ant-",)),
    ("OPENAI_KEY", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}", 0.9, ("sk-",)),
    ("AWS_ACCESS_KEY", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", 0.95, ("akia", "asia", "abia", "acca")),
    ("AWS_SECRET_KEY", r"(?i)aws.{0,20}?(?:secret|private)?.{0,20}?['\"=:\s]\s*([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
     0.9, ("aws",)),
    ("GITHUB_TOKEN", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{60,}\b", 0.95,
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("SLACK_TOKEN", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", 0.95, ("xox",)),
    ("GOOGLE_API_KEY", r"\bAIza[0-9A-Za-z_\-]{35}\b", 0.95, ("aiza",)),
    ("STRIPE_KEY", r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}\b", 0.95, ("_live_",)),
    ("PRIVATE_KEY", r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]+?-----END (?:[A-Z]+ )?PRIVATE KEY-----", 1.0,
     ("private key-----",)),
    ("JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b", 0.9, ("eyj",)),
    ("PASSWORD", r"(?i)(?<![a-z])(?:password|passwd|pwd|secret|api[_-]?key|token)\b\s*[:=]\s*['\"]?([^\s'\",;]{6,})",
     0.8, ("password", "passwd", "pwd", "secret", "apikey", "api_key", "api-key", "token")),
)
SECRET_ENTITIES = tuple(name for name, _, _, _ in SECRETS)
ALL_ENTITIES = PRESIDIO_ENTITIES + SECRET_ENTITIES

# Cheap candidates for presidio's entities: an @, a run of digits (IP addresses
# included), an IBAN-like token. Separate patterns: one alternation of them all
# is several times slower in Python's regex engine.
DIGIT_RUN = r"\d[\d \-().+/]{5,}\d"
CANDIDATES = (re.compile("@"), re.compile(DIGIT_RUN), re.compile(r"[A-Z]{2}\d{2}[A-Z0-9 ]{10,}"))
CONTEXT = 60  # characters of context each side of a candidate (presidio scores with context words)
PHONE_REGIONS = ("US", "GB", "DE", "FR")
# where a phone number can be: a digit run with its usual punctuation
PHONE_SPAN = re.compile(r"\+?\(?" + DIGIT_RUN)
IP_ONLY = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
PHONE_PAD = 12  # characters kept each side, so phonenumbers still sees what borders the number
SEPARATOR = "\n\n"  # between windows sent to presidio together; no entity spans it


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


def _offline_tldextract():
    """presidio's email recognizer calls tldextract.extract(), whose default
    extractor fetches the public suffix list: use the bundled snapshot instead."""
    import tldextract
    import tldextract.tldextract as impl

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    impl.TLD_EXTRACTOR = extractor
    tldextract.extract = extractor
    return extractor


def _span_phone_recognizer():
    import phonenumbers
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class SpanPhoneRecognizer(PhoneRecognizer):
        """presidio's phone recognizer run on each digit run alone, not across the
        whole text: phonenumbers makes a pass per region over all it is given,
        and agent text is full of code and numbers that are no phone. A dotted
        quad is an IP address, never a phone."""

        def analyze(self, text, entities, nlp_artifacts=None):
            results = []
            for m in PHONE_SPAN.finditer(text):
                if IP_ONLY.fullmatch(m.group()):
                    continue
                lo, hi = max(0, m.start() - PHONE_PAD), min(len(text), m.end() + PHONE_PAD)
                window = text[lo:hi]
                for region in self.supported_regions:
                    for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=self.leniency):
                        r = self._get_recognizer_result(match, window, region, nlp_artifacts)
                        r.start, r.end = r.start + lo, r.end + lo
                        results.append(r)
            return self.remove_duplicates(results)

    return SpanPhoneRecognizer


class Detector:
    """Thread-safe, memoized detection over a fixed entity list and threshold."""

    def __init__(self, entities: tuple[str, ...] = ALL_ENTITIES, threshold: float = 0.4, memo_size: int = 50_000):
        unknown = set(entities) - set(ALL_ENTITIES)
        if unknown:
            raise ValueError(f"unknown entity types: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(ALL_ENTITIES)})")
        self.entities = tuple(entities)
        self.presidio_entities = [e for e in entities if e in PRESIDIO_ENTITIES]
        self.secrets = [(n, re.compile(p), s, hints) for n, p, s, hints in SECRETS if n in entities]
        self.threshold = threshold
        self.memo: Memo[tuple[Finding, ...]] = Memo(self._scan, memo_size)
        self._analyzer = None

    def analyzer(self):
        if self._analyzer is None:
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import NlpEngineProvider

            extract = _offline_tldextract()
            extract("warm.example.com")  # load the suffix list now, not at the first email found
            provider = NlpEngineProvider(nlp_configuration={
                "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": _spacy_blank_path()}]})
            analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
            # phonenumbers makes one pass per region: keep the regions that matter most
            analyzer.registry.remove_recognizer("PhoneRecognizer")
            analyzer.registry.add_recognizer(_span_phone_recognizer()(supported_regions=PHONE_REGIONS))
            self._analyzer = analyzer
        return self._analyzer

    def find(self, text: str) -> tuple[Finding, ...]:
        """Findings in `text`, sorted, without overlaps (the longer, surer one wins)."""
        return self.memo(text) if text else ()

    def _scan(self, text: str) -> tuple[Finding, ...]:
        results: list[Finding] = []
        lowered = text.lower()
        for name, pattern, score, hints in self.secrets:
            if not any(h in lowered for h in hints):
                continue
            for m in pattern.finditer(text):
                start, end = (m.start(1), m.end(1)) if m.groups() and m.group(1) else (m.start(), m.end())
                results.append(Finding(start, end, name, score))
        windows = self._windows(text) if self.presidio_entities else []
        if windows:
            # one presidio call over all windows joined: its per-call cost dominates short windows
            joined, starts = [], []  # (offset in joined text, offset in text)
            size = 0
            for lo, hi in windows:
                starts.append((size, lo))
                joined.append(text[lo:hi])
                size += hi - lo + len(SEPARATOR)
            for r in self.analyzer().analyze(SEPARATOR.join(joined), language="en",
                                             entities=self.presidio_entities, score_threshold=self.threshold):
                at, lo = starts[bisect.bisect_right(starts, (r.start, len(text))) - 1]
                results.append(Finding(lo + r.start - at, lo + r.end - at, r.entity_type, r.score))
        return _resolve([r for r in results if r.score >= self.threshold])

    @staticmethod
    def _windows(text: str) -> list[tuple[int, int]]:
        windows: list[list[int]] = []
        spans = sorted(m.span() for pattern in CANDIDATES for m in pattern.finditer(text))
        for start, end in spans:
            lo, hi = max(0, start - CONTEXT), min(len(text), end + CONTEXT)
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
            else:
                windows.append([lo, hi])
        # widen each window to whitespace so no token is cut in half
        out = []
        for lo, hi in windows:
            while lo > 0 and not text[lo - 1].isspace():
                lo -= 1
            while hi < len(text) and not text[hi].isspace():
                hi += 1
            out.append((lo, hi))
        return out


def _resolve(findings: list[Finding]) -> tuple[Finding, ...]:
    """Drop findings that overlap a longer (then surer) one."""
    chosen: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-(f.end - f.start), -f.score, f.start)):
        if all(f.end <= c.start or f.start >= c.end for c in chosen):
            chosen.append(f)
    return tuple(sorted(chosen, key=lambda f: f.start))
