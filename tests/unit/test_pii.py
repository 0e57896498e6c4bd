"""The detector's recognizers for e-mail addresses, US SSNs and IBANs
(tokenaddons.engines.pii): presidio's rules, offline, on their own."""
from __future__ import annotations

import string
import subprocess
import sys

import pytest

from tests.conftest import SHARED
from tokenaddons.engines import pii
from tokenaddons.engines.pii import Detector, iban_score, ssn_score
from tokenaddons.test.corpus import scanner_texts
from tokenaddons.test.shortcuts import shortcuts_off


@pytest.fixture(scope="module")
def detector():
    """These three alone: another type's finding over the same span (a phone number
    written 536.22.8726) may win, which is the resolution's concern, not theirs."""
    d = Detector(entities=("EMAIL_ADDRESS", "US_SSN", "IBAN_CODE"))
    d.warm()
    return d


def found(detector: Detector, text: str, entity: str) -> list[str]:
    return [text[f.start:f.end] for f in detector.find(text) if f.entity == entity]


def score(detector: Detector, text: str, entity: str) -> float | None:
    return next((f.score for f in detector.find(text) if f.entity == entity), None)


# -- US SSNs

@pytest.mark.parametrize("ssn", ["536-22-8726", "536 22 8726", "536.22.8726"])
def test_an_ssn_in_three_groups_is_found_on_its_own_and_surer_with_a_context_word(detector, ssn):
    assert found(detector, f"the number {ssn} on file", "US_SSN") == [ssn]
    assert score(detector, f"the number {ssn} on file", "US_SSN") == 0.5
    assert score(detector, f"SSN: {ssn}", "US_SSN") == 0.85
    assert score(detector, f"his social security number is {ssn}", "US_SSN") == 0.85


@pytest.mark.parametrize("ssn", ["536228726", "53622-8726", "536-228726"])
def test_other_groupings_need_a_word_that_says_it_is_an_ssn(detector, ssn):
    assert found(detector, f"order {ssn} shipped", "US_SSN") == []
    assert found(detector, f"SSN {ssn}", "US_SSN") == [ssn]
    assert found(detector, f"the SSNs: {ssn}, ...", "US_SSN") == [ssn]  # presidio matches context words inside words
    assert found(detector, f"my social security number is {ssn}", "US_SSN") == [ssn]
    # only the five words before it count
    assert found(detector, f"my social security number, for the form, is {ssn}", "US_SSN") == []


@pytest.mark.parametrize("ssn, why", [
    ("000-22-8726", "area 000"), ("666-22-8726", "area 666"), ("912-22-8726", "area 9xx, not an ITIN's group"),
    ("999-12-8726", "area 9xx"), ("536-00-8726", "group 00"), ("536-22-0000", "serial 0000"),
    ("111-11-1111", "one digit repeated"), ("888888888", "one digit repeated"),
    ("123-45-6789", "a published example"), ("987-65-4320", "a published example"),
    ("078-05-1120", "a published example"), ("078051120", "a published example"),
    ("536-22 8726", "two kinds of separator"), ("536.22-8726", "two kinds of separator"),
])
def test_numbers_the_ssa_never_issues_are_not_ssns(detector, ssn, why):
    assert ssn_score(ssn) == 0, why
    assert found(detector, f"SSN: {ssn}", "US_SSN") == [], why


def test_an_itin_written_like_an_ssn_is_found(detector):
    # 9xx is never issued as an SSN, but a taxpayer number with an ITIN's group is just as private
    for itin in ("912-70-8726", "900-50-1234", "999-99-1234"):
        assert found(detector, f"SSN/ITIN: {itin}", "US_SSN") == [itin]


@pytest.mark.parametrize("text", [
    "SSN 1536-22-8726", "SSN 536-22-87261", "SSN v536-22-8726", "SSN id_536-22-8726", "SSN +536-22-8726",
    "SSN /srv/536-22-8726", "SSN 536-22-8726/1", "SSN 536-22-8726+1", "SSN 2536228726", "SSN 536-22-8726.5",
])
def test_an_ssn_is_never_part_of_a_longer_number_or_token(detector, text):
    assert found(detector, text, "US_SSN") == []


# -- IBANs

PUBLISHED = [  # the registry's and banks' published examples, one per format family
    "DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32", "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00", "NO93 8601 1117 947", "BE68 5390 0754 7034", "CH93 0076 2011 6238 5295 7",
    "MT84 MALT 0110 0001 2345 MTLC AST0 01S", "LC55 HEMM 0001 0001 0012 0012 0002 3015",
    "MU17 BOMM 0101 1010 3030 0200 000M UR", "RU02 0445 2560 0407 0281 0412 3456 7890 1",
    "ES91 2100 0418 4502 0005 1332", "IT60 X054 2811 1010 0000 0123 456", "PL61 1090 1014 0000 0712 1981 2874",
    "SA03 8000 0000 6080 1016 7519", "BR18 0036 0305 0000 1000 9795 493C 1", "PS92 PALS 0000 0000 0400 1234 5670 2",
    "QA58 DOHB 0000 1234 5678 90AB CDEF G",
]


def check_digits(country: str, bban: str) -> str:
    digits = {ord(c): str(i) for i, c in enumerate(string.digits + string.ascii_uppercase)}
    return f"{98 - int((bban + country + '00').translate(digits)) % 97:02d}"


@pytest.mark.parametrize("iban", PUBLISHED)
def test_an_iban_of_any_country_is_found_in_groups_whole_or_hyphenated(detector, iban):
    for written in (iban, iban.replace(" ", ""), iban.replace(" ", "-")):
        text = f"Please wire it to {written}, thanks."
        assert found(detector, text, "IBAN_CODE") == [written]
        assert score(detector, text, "IBAN_CODE") == 1.0


@pytest.mark.parametrize("iban", PUBLISHED)
def test_an_iban_with_a_wrong_digit_is_not_one(detector, iban):
    compact = iban.replace(" ", "")
    i = next(i for i in range(len(compact) - 1, 3, -1) if compact[i].isdigit())  # the last digit of its BBAN
    wrong = compact[:i] + str((int(compact[i]) + 1) % 10) + compact[i + 1:]
    assert iban_score(wrong) == 0
    assert found(detector, f"IBAN: {wrong}", "IBAN_CODE") == []
    swapped = compact[:2] + compact[3] + compact[2] + compact[4:]  # its check digits the wrong way round
    assert compact[2] == compact[3] or iban_score(swapped) == 0


def test_check_digits_alone_do_not_make_an_iban(detector):
    # valid mod-97 check digits, but a BBAN one digit short for Germany, a country with no IBAN,
    # and letters where Germany has digits
    for country, bban in (("DE", "37040044053201300"), ("XX", "370400440532013000"), ("DE", "3704004405320130AB")):
        iban = country + check_digits(country, bban) + bban
        assert iban_score(iban) == 0, iban
        assert found(detector, f"IBAN {iban}", "IBAN_CODE") == []


def test_an_iban_in_lower_case_is_less_sure_unless_a_word_says_it_is_one(detector):
    text = "wire to de89 3704 0044 0532 0130 00 today"
    assert found(detector, text, "IBAN_CODE") == ["de89 3704 0044 0532 0130 00"]
    assert score(detector, text, "IBAN_CODE") == 0.5
    assert score(detector, "my iban is de89 3704 0044 0532 0130 00", "IBAN_CODE") == 0.85
    strict = Detector(("IBAN_CODE",), threshold=0.6)
    assert found(strict, text, "IBAN_CODE") == []
    assert found(strict, "bank account: de89370400440532013000", "IBAN_CODE") == ["de89370400440532013000"]


def test_what_follows_an_iban_is_not_part_of_it(detector):
    text = "I want my deposit in DE89 3704 0044 0532 0130 00 2 days from today"
    assert found(detector, text, "IBAN_CODE") == ["DE89 3704 0044 0532 0130 00"]
    assert found(detector, "to DE89370400440532013000 1234 by Friday", "IBAN_CODE") == ["DE89370400440532013000"]


@pytest.mark.parametrize("text", [
    "xDE89370400440532013000", "DE89370400440532013000x", "DE893704004405320130001", "id_DE89370400440532013000",
    "v1/DE89370400440532013000", "DE89370400440532013000/x",
])
def test_an_iban_is_never_part_of_a_longer_token(detector, text):
    assert found(detector, text, "IBAN_CODE") == []


# -- e-mail addresses

@pytest.mark.parametrize("address", [
    "jane.roe@acme.io", "j.o'brien@example.co.uk", "ops+alerts@sub.example.com", "jöhn@exämple.de",
    "x@xn--80ak6aa92e.com", "bob@EXAMPLE.COM", "first_last@mail.example.technology", "a@me.github.io",
])
def test_an_address_whose_domain_ends_in_a_public_suffix_is_found(detector, address):
    assert found(detector, f"write to {address} today", "EMAIL_ADDRESS") == [address]


@pytest.mark.parametrize("text", [
    "jane@example.invalid", "jane@example.local", "jane@localhost", "me@192.168.0.1", "icon@2x.png",
    "a@b.c", "jane@-example.com", "jane.@example.com", "x" * 65 + "@example.com",
])
def test_an_address_needs_a_real_domain_and_a_plausible_local_part(detector, text):
    assert found(detector, text, "EMAIL_ADDRESS") == []


@pytest.mark.parametrize("text, address", [
    ("mailto:jane@example.com?subject=hi", "jane@example.com"),
    ("https://jane@example.com/repo.git", "jane@example.com"),
    ("https://app.example.com/invite?email=jane@example.com&team=3", "jane@example.com"),
    ("GET /signup?ref=x&to=jane@example.com HTTP/1.1", "jane@example.com"),
])
def test_an_address_in_a_url_is_found(detector, text, address):
    assert found(detector, text, "EMAIL_ADDRESS") == [address]


@pytest.mark.parametrize("text, address", [
    ("user = User(email='jane@example.com')", "jane@example.com"),
    ('{"to": "jane@example.com", "cc": ["bob@example.org"]}', "jane@example.com"),
    ("EMAIL=jane@example.com", "jane@example.com"),
    ("Author: Jane Roe <jane@example.com>", "jane@example.com"),
    ("`jane@example.com`, |jane@example.com|", "jane@example.com"),
    ("a={jane@example.com}", "jane@example.com"),
])
def test_in_code_the_address_is_only_the_address(detector, text, address):
    assert set(found(detector, text, "EMAIL_ADDRESS")) - {"bob@example.org"} == {address}


@pytest.mark.parametrize("text", [
    "github.com/rust-lang/crates.io-index#heck@0.5.0", "@property\ndef name(self):", "node_modules/@scope/pkg@1.2.3",
    "golang.org/x/net@v0.17.0", "docker.io/library/nginx@sha256:0d17b565c37b", "src/assets/icon@2x.png",
    "https://example.com/users/jane@example.com", "notes/draft#jane@example.com", "uses: actions/checkout@v4",
    "git+https://github.com/org/repo@main.py", "${USER}@example.com",
])
def test_paths_pins_and_decorators_are_not_addresses(detector, text):
    assert found(detector, text, "EMAIL_ADDRESS") == []


# -- the detector as a whole

def test_no_nlp_stack_is_loaded():
    """The scrubber needs no presidio and no spaCy, and the bundle loads neither."""
    code = ("import sys; from tokenaddons.engines.pii import Detector; import tokenaddons.bundle; Detector().warm(); "
            "heavy = {m.split('.')[0] for m in sys.modules} & {'presidio_analyzer', 'spacy', 'thinc', 'numpy'}; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_warm_loads_what_loads_on_first_use_and_remembers_nothing():
    code = ("import sys; from tokenaddons.engines import pii; d = pii.Detector(); "
            "assert 'phonenumbers' not in sys.modules and 'tldextract' not in sys.modules; d.warm(); "
            "assert 'phonenumbers' in sys.modules and pii._public_suffixes.cache_info().currsize == 1; "
            "assert pii._registrable.cache_info().currsize and pii._valid_phone.cache_info().currsize; "
            "assert d.known(pii.WARM_UP) is None and not d.memo.items")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_warm_up_text_has_one_of_each_entity():
    kinds = {f.entity for f in Detector()._scan(pii.WARM_UP)}
    assert kinds == set(pii.PII_ENTITIES)


# -- shortcuts skip only recognizers that would find nothing

@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return scanner_texts(SHARED)


@pytest.mark.parametrize("options", [{}, {"threshold": 0.0, "private_ips": True}], ids=["default", "everything"])
def test_the_shortcuts_give_the_findings_of_running_every_recognizer(corpus, options):
    """Each recognizer runs only on text holding as many digits as it needs (in
    ASCII text), the separators of an IP address, a secret's hint: on the
    corpus the findings are those of running each recognizer on every text
    with a digit (any text, for secrets and IP addresses)."""
    detector = Detector(**options)
    fast = [detector._scan(text) for text in corpus]
    with shortcuts_off(detector):
        full = [detector._scan(text) for text in corpus]
    assert {f.entity for found in full for f in found} == set(pii.ALL_ENTITIES)  # the corpus holds each
    for text, a, b in zip(corpus, fast, full):
        assert a == b, text


def test_digits_are_counted_in_ascii_text_and_any_in_other_text():
    assert pii._digits("run 12: 3 passed") == 3 and pii._digits("no digits") == 0
    assert pii._digits("٣٤٥٦٧٨٩ 1") == sys.maxsize  # \d matches these too: no bound
    assert pii._digits("٣٤٥٦٧٨٩") == 0  # as ever, digits of other scripts alone are not looked at
