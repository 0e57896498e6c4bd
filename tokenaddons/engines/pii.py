"""Finding PII and secrets in text: offline, fast on agent traffic, and quiet on
code, data and logs.

Every recognizer here is our own, and each is a linear pattern that finds
candidates plus a check that keeps the real ones. What an agent reads is mostly
code, data and logs, where digits and @ signs are everywhere:

- an e-mail address follows presidio's e-mail rules: a local part, an @, a
  domain whose suffix is in the public suffix list (tldextract's bundled
  snapshot, so nothing is downloaded); never a path, a package pin or a file
  name with an @ in it (src/icon@2x.png, crates.io-index#heck@0.5.0);
- a US SSN follows presidio's rules and scores: 3-2-4 digits with one kind of
  separator count, 5-4, 3-6 and 9 digits only next to a word that says it is
  one ("SSN", "social security"); never a number the SSA does not issue (area
  000, 666 or 9xx unless an ITIN's, group 00, serial 0000, one digit repeated)
  or a published example (078-05-1120);
- an IBAN has its country's length and format (the SWIFT IBAN registry) and
  valid mod-97 check digits, written whole or in groups of four;
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
pattern runs only on text that can hold its entity (an @, a digit, a key's
prefix), and every pattern here is linear in its input.
"""
from __future__ import annotations

import bisect
import functools
import ipaddress
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import regex

from tokenaddons.engines.gil import release_gil
from tokenaddons.engines.memo import Memo

log = logging.getLogger(__name__)

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
PHONE_MIN_DIGITS = 7

# -- IP addresses (validated by ipaddress)
IPV4 = regex.compile(r"(?<![\w.\-#])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w]|\.\d)")
IPV6 = regex.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?"
                  r"(?:%\w{1,16})?(?:/\d{1,3})?(?![\w:.])")

IP_PATTERNS = ((IPV4, ".", 3), (IPV6, ":", 2))  # each with the separator it holds at least so many of

# -- card numbers: issuer prefixes and the lengths each issues
CARD = regex.compile(r"(?<![\w.\-+/])(?<!\d[ ,])(?:\d{4}[ \-]){2,4}\d{1,4}(?![\w]|[.\-/]\d|[ ,]\d)"
                  r"|(?<![\w.\-+/])(?<!\d[ ,])\d{4}[ \-]\d{6}[ \-]\d{4,5}(?![\w]|[.\-/]\d|[ ,]\d)"
                  r"|(?<![\w.\-+/])\d{12,19}(?![\w]|[.\-/]\d)")
CARD_MIN_DIGITS = 12
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

# -- e-mail addresses, US SSNs, IBANs: presidio's rules (its recognizers' patterns,
# validations and context words), made linear and bounded
# e-mail: found at its @ (a domain of dotted labels after it), its local part read
# backwards from there. The run of characters a local part may hold (RFC 5322)
# decides what it is: one with a / or # in it is a path, a package pin or a URL
# fragment (src/icon@2x.png, crates.io-index#heck@0.5.0); after a ? it is a URL's
# query (?to=jane@example.com). The address itself is the end of the run written
# with the characters addresses use, so `email='jane@example.com'` is jane@example.com.
EMAIL_AT = regex.compile(r"@(\w++(?:-++\w++)*+(?:\.\w++(?:-++\w++)*+)++)")
EMAIL_RUN = regex.compile(r"(?r)[\w!#$%&'*+\-/=?^`{|}~.]{1,256}")  # (?r): matched backwards from the @
EMAIL_LOCAL = regex.compile(r"(?r)[\w.!$%'*+\-^~]{1,256}")  # not = & { } | ` (code and query strings)
NON_WORD, WORD = regex.compile(r"\W*"), regex.compile(r"\w")
LOCAL_MAX, DOMAIN_MAX = 64, 255  # RFC 5321's limits
# SSN: presidio's formats (3-2-4 with one kind of separator; 5-4, 3-6 and 9 digits
# are weak and need a context word), never inside a longer number or token
# (the look-behind after the first digit: a scan for a digit is some 30 times faster than a
# look-behind tried at every character)
SSN = regex.compile(r"[0-9](?<![\w+/].)"
                    r"(?:[0-9]{2}[- .][0-9]{2}[- .][0-9]{4}|[0-9]{4}-[0-9]{4}|[0-9]{2}-[0-9]{6}|[0-9]{8})(?![\w+/])")
SSN_DIGITS = 9  # in every format the pattern finds
SSN_CONTEXT = ("social", "security", "ssn", "ssns", "ssid")
SSN_SAMPLES = {"123456789", "987654320", "078051120"}  # published as examples (078-05-1120: a wallet insert's)
# ITINs are 9xx-70-xxxx and the like: taxpayer numbers written as SSNs are, and as private
ITIN_GROUPS = {*range(50, 66), *range(70, 89), *range(90, 93), *range(94, 100)}
# IBAN: presidio's pattern (case-insensitive, groups of four with an optional space
# or hyphen); a match is tried whole, then without its last group, then without the
# one before ("DE89 3704 0044 0532 0130 00 2 days"); each country's length and format
# as the SWIFT IBAN registry gives its BBAN (n digits, a upper-case letters, c letters
# or digits), and the mod-97 check digits
# (matched from its check digits, the letters looked behind for: a scan for two digits is
# some 50 times faster than one for two letters, which prose is full of)
IBAN = regex.compile(r"[0-9]{2}(?<=(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2})((?:[ -]?[A-Za-z0-9]{4}){2,6})"
                     r"((?:[ -]?[A-Za-z0-9]{4})?)((?:[ -]?[A-Za-z0-9]{1,3})?)(?![A-Za-z0-9])")
IBAN_DIGITS_MIN = 2  # its check digits (a BBAN may be letters only)
IBAN_CONTEXT = ("iban", "bank", "transaction")
IBAN_BBAN = {
    "AD": "8n12c", "AE": "19n", "AL": "8n16c", "AT": "16n", "AZ": "4a20c", "BA": "16n", "BE": "12n", "BG": "4a6n8c",
    "BH": "4a14c", "BI": "23n", "BR": "23n1a1c", "BY": "4c4n16c", "CH": "5n12c", "CR": "18n", "CY": "8n16c",
    "CZ": "20n", "DE": "18n", "DJ": "23n", "DK": "14n", "DO": "4c20n", "EE": "16n", "EG": "25n", "ES": "20n",
    "FI": "14n", "FK": "2a12n", "FO": "14n", "FR": "10n11c2n", "GB": "4a14n", "GE": "2a16n", "GI": "4a15c",
    "GL": "14n", "GR": "7n16c", "GT": "24c", "HN": "4a20n", "HR": "17n", "HU": "24n", "IE": "4a14n", "IL": "19n",
    "IQ": "4a15n", "IS": "22n", "IT": "1a10n12c", "JO": "4a4n18c", "KW": "4a22c", "KZ": "3n13c", "LB": "4n20c",
    "LC": "4a24c", "LI": "5n12c", "LT": "16n", "LU": "3n13c", "LV": "4a13c", "LY": "21n", "MC": "10n11c2n",
    "MD": "20c", "ME": "18n", "MK": "3n10c2n", "MN": "16n", "MR": "23n", "MT": "4a5n18c", "MU": "4a19n3a",
    "NI": "4a20n", "NL": "4a10n", "NO": "11n", "OM": "3n16c", "PK": "4a16c", "PL": "24n", "PS": "4a21c", "PT": "21n",
    "QA": "4a21c", "RO": "4a16c", "RS": "18n", "RU": "14n15c", "SA": "2n18c", "SC": "4a20n3a", "SD": "14n",
    "SE": "20n", "SI": "15n", "SK": "20n", "SM": "1a10n12c", "SO": "19n", "ST": "21n", "SV": "4a20n", "TL": "19n",
    "TN": "20n", "TR": "6n16c", "UA": "6n19c", "VA": "18n", "VG": "4a16n", "XK": "16n", "YE": "4a4n18c",
}


def _bban(layout: str) -> re.Pattern[str]:
    """The registry's layout of a BBAN ("4a14n": four capitals, fourteen digits) as a pattern."""
    classes = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Za-z0-9]"}
    return re.compile("".join(f"{classes[kind]}{{{n}}}" for n, kind in re.findall(r"(\d+)([nac])", layout)))


IBAN_FORMATS = {country: _bban(layout) for country, layout in IBAN_BBAN.items()}
IBAN_DIGITS = {ord(c): str(i) for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
# presidio's context scoring: a context word in one of the five words before a
# match (or in the match) raises a weak score to at least 0.4, any score by 0.35
CONTEXT_WORDS, CONTEXT_CHARS, CONTEXT_BOOST, CONTEXT_FLOOR = 5, 80, 0.35, 0.4
VERSION_BEFORE = regex.compile(r"(?i)(?:[<>!~^]=?|==|\bv|@|\bversions?:?|\bver\.?)[ \t]*\Z")  # >=1.2.0.0, v1.2.3.4
NUMERIC = {"US_SSN", "IBAN_CODE"}
# one of each entity (the checks of some load something on first use: phonenumbers
# and a region's numbering plan, tldextract and the public suffix list); scanned
# at start-up, not remembered
WARM_UP = ("warm-up: jane@example.com, +1 415 555 0199, ssn 536-22-8726, DE89 3704 0044 0532 0130 00, "
           "4111 1111 1111 1111, 81.2.69.160")


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    entity: str
    score: float


@functools.lru_cache(maxsize=1)
def _public_suffixes():
    """tldextract on its bundled snapshot of the public suffix list: its default
    extractor would fetch the list from the network."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


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
    return _registrable(domain)


@functools.lru_cache(maxsize=4096)
def _registrable(domain: str) -> bool:
    ext = _public_suffixes()(domain)
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
    if not CARD_MIN_DIGITS <= len(digits) <= 19 or not luhn(digits):
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
    for m in PHONE.finditer(text, concurrent=release_gil(text)):
        value = m.group()
        number = re.split(r"[ ]?(?:x|ext\.?|#)[ ]?(?=\d+$)", value)[0]
        digits = re.sub(r"\D", "", number)
        if not PHONE_MIN_DIGITS <= len(digits) <= 15 or len(set(digits)) < 3 or DATE.fullmatch(number):
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
    return [Finding(m.start(), m.end(), "CREDIT_CARD", 1.0)
            for m in CARD.finditer(text, concurrent=release_gil(text)) if card_number(m.group())]


def _context(text: str, start: int, end: int, words: tuple[str, ...]) -> bool:
    """A context word in one of the five words before the match, or in it (a
    substring, as presidio matches them: "SSNs", "iban:")."""
    near = re.findall(r"\w+", text[max(0, start - CONTEXT_CHARS):start].lower())[-CONTEXT_WORDS:]
    near.append(text[start:end].lower())
    return any(w in n for w in words for n in near)


def _scored(score: float, context: bool) -> float:
    return min(max(score + CONTEXT_BOOST, CONTEXT_FLOOR), 1.0) if context else score


def email_addresses(text: str) -> list[Finding]:
    """Candidates; `email_address` (in `Detector._plausible`) keeps those whose
    domain ends in a public suffix."""
    out = []
    floor = 0  # a local part never reaches back into the domain of the address before
    for m in EMAIL_AT.finditer(text, concurrent=release_gil(text)):
        at = m.start()
        run = EMAIL_RUN.match(text, floor, at)
        if run is None:
            continue
        floor = m.end()
        if len(m.group(1)) > DOMAIN_MAX:
            continue
        lo = run.start()
        if not lo or not WORD.match(text, lo - 1, lo):
            lo = NON_WORD.match(text, lo, at).end()  # as presidio's, it starts at a word boundary
        lo = text.rfind("?", lo, at) + 1 or lo  # in a URL's query
        if text.find("/", lo, at) >= 0 or text.find("#", lo, at) >= 0:
            continue
        local = EMAIL_LOCAL.match(text, lo, at)
        start = NON_WORD.match(text, local.start(), at).end() if local else at
        if start == at or at - start > LOCAL_MAX or text[at - 1] == ".":
            continue
        out.append(Finding(start, m.end(), "EMAIL_ADDRESS", 1.0))
    return out


def ssn_score(value: str) -> float:
    """presidio's score for an SSN as written (0 for a number never issued or a
    published example): 0.5 for 3-2-4 digits, 0.05 for other groupings."""
    separators = {c for c in value if c in " .-"}
    digits = "".join(c for c in value if c.isdigit())
    if (len(separators) > 1 or len(set(digits)) == 1 or digits[3:5] == "00" or digits[5:] == "0000"
            or digits[:3] in ("000", "666") or digits in SSN_SAMPLES):
        return 0.0
    if digits[0] == "9" and int(digits[3:5]) not in ITIN_GROUPS:
        return 0.0  # 9xx is never issued as an SSN
    return 0.5 if len(value) == 11 and value[3] in separators and value[6] in separators else 0.05


def us_ssns(text: str) -> list[Finding]:
    out = []
    for m in SSN.finditer(text, concurrent=release_gil(text)):
        score = ssn_score(m.group())
        if score:
            out.append(Finding(m.start(), m.end(), "US_SSN",
                               _scored(score, _context(text, m.start(), m.end(), SSN_CONTEXT))))
    return out


def iban_score(value: str) -> float:
    """1.0 for an IBAN as written, 0.5 for one valid only in capitals (presidio's
    scores), 0 for anything else."""
    compact = value.replace(" ", "").replace("-", "").upper()
    fmt = IBAN_FORMATS.get(compact[:2])
    if fmt is None or not fmt.fullmatch(compact, 4) or not compact[2:4].isdigit():
        return 0.0
    if 98 - int((compact[4:] + compact[:2]).translate(IBAN_DIGITS) + "00") % 97 != int(compact[2:4]):
        return 0.0
    written = value.replace(" ", "").replace("-", "")
    return 1.0 if IBAN_FORMATS.get(written[:2]) and fmt.fullmatch(written, 4) else 0.5


def ibans(text: str) -> list[Finding]:
    out = []
    for m in IBAN.finditer(text, concurrent=release_gil(text)):
        start = m.start() - 2  # its country code
        for end in dict.fromkeys((m.end(3), m.end(2), m.end(1))):  # whole, then a group shorter, then another
            score = iban_score(text[start:end])
            if score:
                out.append(Finding(start, end, "IBAN_CODE", _scored(score, _context(text, start, end, IBAN_CONTEXT))))
                break
    return out


def private_keys(text: str) -> list[Finding]:
    out = []
    pos = 0
    while (begin := PEM_BEGIN.search(text, pos, concurrent=release_gil(text))) is not None:
        end = PEM_END.search(text, begin.end(), concurrent=release_gil(text))
        if end is None:  # cut short (a truncated tool output): its key material still goes
            body = PEM_BODY.match(text, begin.end(), concurrent=release_gil(text))
            out.append(Finding(begin.start(), body.end() if body else begin.end(), "PRIVATE_KEY", 1.0))
            break
        out.append(Finding(begin.start(), end.end(), "PRIVATE_KEY", 1.0))
        pos = end.end()
    return out


def aws_secret_keys(text: str, lowered: str) -> list[Finding]:
    return [Finding(m.start(), m.end(), "AWS_SECRET_KEY", 0.9)
            for m in AWS_SECRET.finditer(text, concurrent=release_gil(text))
            if "aws" in lowered[max(0, m.start() - 48):m.start()] and _aws_secret(m.group())]


def ip_addresses(text: str, private: bool) -> list[Finding]:
    out = []
    for pattern, mark, least in IP_PATTERNS:
        if text.count(mark) < least:
            continue
        for m in pattern.finditer(text, concurrent=release_gil(text)):
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
        for m in pattern.finditer(text, concurrent=release_gil(text)):
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
        self.wants = frozenset(entities)
        self.secrets = [(n, regex.compile(p), s, hints, check) for n, p, s, hints, check in SECRETS if n in entities]
        # a text holding none of these (lowercased) holds no secret this detector looks for
        self.secret_hints = tuple(dict.fromkeys(
            [h for *_, hints, _ in self.secrets for h in hints] + ["aws"] * ("AWS_SECRET_KEY" in entities)
            + ["private key"] * ("PRIVATE_KEY" in entities) + list(PASSWORD_HINTS) * ("PASSWORD" in entities)))
        self.threshold = threshold
        self.private_ips = private_ips
        self.memo: Memo[tuple[Finding, ...]] = Memo(self._scan, memo_size)

    def warm(self) -> None:
        """Load what loads lazily (phone number metadata, the public suffix list)
        now, without remembering the warm-up text."""
        self._scan(WARM_UP)

    def find(self, text: str) -> tuple[Finding, ...]:
        """Findings in `text`, sorted, without overlaps (the longer, surer one wins)."""
        return self.memo(text) if text else ()

    def known(self, text: str) -> tuple[Finding, ...] | None:
        """`find(text)` if it is remembered, else None (never scans)."""
        return self.memo.peek(text) if text else ()

    def _scan(self, text: str) -> tuple[Finding, ...]:
        # Each recognizer runs only on text that can hold what it finds (a hint, an @,
        # as many digits as its entity has at least): most short texts hold none.
        results: list[Finding] = []
        wants = self.wants
        lowered = text.lower()
        for hint in self.secret_hints:
            if hint in lowered:
                results += self._secrets(text, lowered)
                break
        digits = _digits(text)
        if "PHONE_NUMBER" in wants and digits >= PHONE_MIN_DIGITS:
            results += phone_numbers(text)
        if "CREDIT_CARD" in wants and digits >= CARD_MIN_DIGITS:
            results += card_numbers(text)
        if "IP_ADDRESS" in wants and (digits or ":" in text):
            results += ip_addresses(text, self.private_ips)
        if "EMAIL_ADDRESS" in wants and "@" in text:
            results += [f for f in email_addresses(text) if self._plausible(text, f)]
        if "US_SSN" in wants and digits >= SSN_DIGITS:
            results += [f for f in us_ssns(text) if self._plausible(text, f)]
        if "IBAN_CODE" in wants and digits >= IBAN_DIGITS_MIN:
            results += [f for f in ibans(text) if self._plausible(text, f)]
        if not results:
            return ()
        return _resolve([r for r in results if r.score >= self.threshold])

    def _secrets(self, text: str, lowered: str) -> list[Finding]:
        results = []
        for name, pattern, score, hints, check in self.secrets:
            if not any(h in lowered for h in hints):
                continue
            for m in pattern.finditer(text, concurrent=release_gil(text)):
                start, end = (m.start(1), m.end(1)) if m.groups() and m.group(1) else (m.start(), m.end())
                if check is None or check(text[start:end]):
                    results.append(Finding(start, end, name, score))
        if "AWS_SECRET_KEY" in self.wants and "aws" in lowered:
            results += aws_secret_keys(text, lowered)
        if "PRIVATE_KEY" in self.wants and "private key" in lowered:
            results += private_keys(text)
        if "PASSWORD" in self.wants and any(h in lowered for h in PASSWORD_HINTS):
            results += passwords(text)
        return results

    @staticmethod
    def _plausible(text: str, f: Finding) -> bool:
        if f.entity == "EMAIL_ADDRESS":
            return email_address(text[f.start:f.end])
        return f.entity not in NUMERIC or standalone(text, f.start, f.end)


def _digits(text: str) -> int:
    """The digits in `text`, as the recognizers that need some are gated on
    them: in ASCII text their count; in other text (where `\\d` matches the
    digits of every script) unbounded if it holds an ASCII digit, else none
    (digits of other scripts alone are not looked at)."""
    if text.isascii():
        return len(text) - len(text.encode().translate(None, b"0123456789"))
    return sys.maxsize if any(c in text for c in "0123456789") else 0


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
