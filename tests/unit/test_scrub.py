"""Scrub: detection, actions, placeholders and their restoring, around single flows."""
from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.scrub import Scrub
from tokenaddons.engines.pii import Detector
from tokenaddons.engines.placeholders import Pseudonyms, Restorer, RestoreTap
from tokenaddons.exchange import Exchange
from tokenaddons.providers.sse import SSEParser, frame
from tokenaddons.test.flows import make_flow, sse_response
from tokenaddons.test.pipeline import arun_flow, thread_hops

PII = {
    "EMAIL_ADDRESS": "jane.roe@acme.io",
    "PHONE_NUMBER": "+1 (415) 555-0199",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "81.2.69.160",
    "AWS_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
    "ANTHROPIC_KEY": "sk-ant-api03-" + "a1B2c3D4e5" * 4,
    "GITHUB_TOKEN": "ghp_" + "Ab1" * 12,
    "SLACK_TOKEN": "xoxb-1234567890-abcdefghij",
    "GOOGLE_API_KEY": "AIza" + "B" * 35,
    "STRIPE_KEY": "sk_live_" + "c" * 24,
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


SENTENCE = " and ".join(f"{k.lower()} {v}" for k, v in PII.items())


@pytest.fixture(scope="module")
def detector():
    return Detector()


@pytest.fixture
def scrub():
    s = Scrub()
    with taddons.context(Intake(), s, Outlet()) as tctx:
        tctx.configure(s)
        yield s, tctx


def run(scrub, body, response=None, chunks=None, path="/v1/messages"):
    s, _ = scrub
    flow = make_flow(path, body, {"content-type": "application/json"}, response)
    return asyncio.run(arun_flow([Intake(), s, Outlet()], flow, stream_chunks=chunks))


def sent(flow) -> str:
    return flow.request.get_text()


def answer_echoing(text: str) -> http.Response:
    answer = {"content": [{"type": "text", "text": text}], "usage": {}}
    return http.Response.make(200, json.dumps(answer).encode(), {"content-type": "application/json"})


def run_as(scrub, key: str, text: str, response=None):
    s, _ = scrub
    flow = make_flow("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": text}]},
                     {"content-type": "application/json", "x-api-key": key}, response)
    return asyncio.run(arun_flow([Intake(), s, Outlet()], flow))


def restore_stream(api: str, events: list[bytes], cut: int) -> bytes:
    r = Restorer()
    r.values.update({"<EMAIL_1>": "jane.roe@acme.io", "<EMAIL_2>": 'odd"quote@x.io'})
    tap, parser = RestoreTap(api, r), SSEParser()
    raw = b"".join(events)
    out = [e for i in range(0, len(raw), cut) for e in tap.feed(parser.feed(raw[i:i + cut]))] + tap.end()
    return b"".join(e.raw for e in out) + parser.rest()


def anthropic_text(stream: bytes) -> tuple[str, str]:
    text, args = "", ""
    for e in SSEParser().feed(stream):
        d = e.json() or {}
        delta = d.get("delta") or {}
        text += delta.get("text", "") if d.get("type") == "content_block_delta" else ""
        args += delta.get("partial_json", "") if d.get("type") == "content_block_delta" else ""
    return text, args


def test_every_entity_is_found(detector):
    found = {f.entity: SENTENCE[f.start:f.end] for f in detector.find(SENTENCE)}
    for entity, value in PII.items():
        assert found.get(entity) == value, entity


def test_assignments_and_private_keys(detector):
    text = 'db_password = "Sup3rS3cret!" and\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----'
    kinds = {f.entity: text[f.start:f.end] for f in detector.find(text)}
    assert kinds["PASSWORD"] == "Sup3rS3cret!"
    assert kinds["PRIVATE_KEY"].startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_plain_code_is_left_alone(detector):
    code = "def add(a, b):\n    return a + b  # version 3.11, port 8080\nfor i in range(100):\n    print(i)\n"
    assert detector.find(code) == ()


def test_a_text_is_scanned_once(detector):
    text = "write to bob@example.org " + "filler " * 1000
    first = detector.find(text)
    calls = []
    real = detector._scan
    detector._scan = lambda t: calls.append(t) or real(t)
    try:
        assert detector.find(text) == first and calls == []
    finally:
        detector._scan = real


def test_pseudonymize_is_stable_and_restored(scrub):
    body = {"model": "m", "messages": [{"role": "user", "content": f"mail {PII['EMAIL_ADDRESS']} now"}]}
    answer = {"content": [{"type": "text", "text": "Sent to <EMAIL_1>."},
                          {"type": "tool_use", "name": "send", "input": {"to": "<EMAIL_1>"}}], "usage": {}}
    f = run(scrub, body, http.Response.make(200, json.dumps(answer).encode(), {"content-type": "application/json"}))
    assert PII["EMAIL_ADDRESS"] not in sent(f) and "<EMAIL_1>" in sent(f)
    out = json.loads(f.response.content)
    assert out["content"][0]["text"] == f"Sent to {PII['EMAIL_ADDRESS']}."
    assert out["content"][1]["input"]["to"] == PII["EMAIL_ADDRESS"]
    again = run(scrub, {**body, "messages": body["messages"] * 2})
    assert sent(again).count("<EMAIL_1>") == 2  # same value, same placeholder: the prefix stays cacheable
    assert Exchange.of(f).decisions[0].detail == {"counts": {"EMAIL_ADDRESS": 1}}


def test_a_caller_never_gets_another_callers_value_back(scrub):
    a = run_as(scrub, "key-a", f"mail {PII['EMAIL_ADDRESS']}")
    assert "<EMAIL_1>" in sent(a)
    # caller B has PII of its own (so restoring is on) and the model echoes A's placeholder
    b = run_as(scrub, "key-b", "mail bob@example.org, and who is <EMAIL_1>?",
               answer_echoing("<EMAIL_1> is bob@example.org? No: <EMAIL_1>."))
    assert "<EMAIL_1>" in sent(b) and "bob@example.org" not in sent(b)  # B's own numbering starts at 1
    assert PII["EMAIL_ADDRESS"] not in b.response.get_text()
    # and within one caller, only the placeholders of this request come back
    c = run_as(scrub, "key-a", "and mail bob@example.org", answer_echoing("<EMAIL_1> and <EMAIL_2>"))
    assert json.loads(c.response.content)["content"][0]["text"] == "<EMAIL_1> and bob@example.org"


def test_placeholders_survive_a_restart_and_no_value_is_stored(tmp_path):
    from tokenaddons.addons.store import Store

    def session(texts):
        store = Store()
        s = Scrub(store)
        with taddons.context(store, Intake(), s, Outlet()) as tctx:
            tctx.configure(store, store_path=str(tmp_path / "events.db"))
            tctx.configure(s)
            out = [sent(run_as((s, tctx), "key-a", t)) for t in texts]
            store.events.flush()
        store.done()
        return out

    first = session(["a@x.io", "b@x.io"])
    assert first == ['{"model":"m","messages":[{"role":"user","content":"<EMAIL_1>"}]}',
                     '{"model":"m","messages":[{"role":"user","content":"<EMAIL_2>"}]}']
    # after a restart: new values continue the numbering, known ones keep theirs
    assert [t.split('"content":"')[1][:9] for t in session(["c@x.io", "b@x.io"])] == ["<EMAIL_3>", "<EMAIL_2>"]
    stored = (tmp_path / "events.db").read_bytes() + (tmp_path / "events.db-wal").read_bytes() \
        if (tmp_path / "events.db-wal").exists() else (tmp_path / "events.db").read_bytes()
    assert b"x.io" not in stored  # digests only; the key lives beside the store, readable by its owner only
    key = tmp_path / "events.db.scrub-key"
    assert key.stat().st_mode & 0o077 == 0 and len(key.read_bytes()) == 32


def test_hash_is_keyed():
    one, two = Pseudonyms(b"k" * 32), Pseudonyms(b"j" * 32)
    assert one.digest("078-05-1120") == Pseudonyms(b"k" * 32).digest("078-05-1120")
    assert one.digest("078-05-1120") != two.digest("078-05-1120")  # nobody can hash every SSN to invert it


@pytest.mark.parametrize("action,expect", [("redact", "<EMAIL_REDACTED>"), ("hash", "<EMAIL_"), ("log", None)])
def test_redact_hash_and_log(scrub, action, expect):
    s, tctx = scrub
    tctx.options.scrub_action = action
    f = run(scrub, {"model": "m", "messages": [{"role": "user", "content": f"mail {PII['EMAIL_ADDRESS']}"}]})
    if expect is None:
        assert PII["EMAIL_ADDRESS"] in sent(f)
    else:
        assert PII["EMAIL_ADDRESS"] not in sent(f) and expect in sent(f) and "<EMAIL_1>" not in sent(f)
    assert Exchange.of(f).decisions[0].action == action


def test_block_refuses_in_the_providers_shape_without_the_value(scrub):
    s, tctx = scrub
    tctx.options.scrub_actions = "AWS_ACCESS_KEY=block"
    f = run(scrub, {"model": "m", "messages": [{"role": "user", "content": f"key {PII['AWS_ACCESS_KEY']}"}]})
    assert f.response.status_code == 400
    err = json.loads(f.response.content)
    assert err["type"] == "error" and "AWS_ACCESS_KEY" in err["error"]["message"]
    assert PII["AWS_ACCESS_KEY"] not in f.response.get_text()
    f = run(scrub, {"model": "gpt-4o", "messages": [{"role": "user", "content": PII["AWS_ACCESS_KEY"]}]},
            path="/v1/chat/completions")
    assert json.loads(f.response.content)["error"]["type"] == "invalid_request_error"


def test_structure_media_and_auth_are_never_touched(scrub):
    body = {"model": "m", "metadata": {"user_id": "user_3f9a2b_account_550e8400-e29b-41d4-a716-446655440000"},
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "4111111111111111"}},
                {"type": "text", "text": "hello"}]}]}
    f = make_flow("/v1/messages", body, {"content-type": "application/json", "x-api-key": PII["ANTHROPIC_KEY"]})
    asyncio.run(arun_flow([Intake(), scrub[0], Outlet()], f))
    assert f.request.raw_content == json.dumps(body).encode()
    assert f.request.headers["x-api-key"] == PII["ANTHROPIC_KEY"]


def test_a_scan_failure_fails_closed(scrub):
    s, tctx = scrub
    s.detector.find = lambda text: 1 / 0
    f = run(scrub, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert f.response.status_code == 500 and "not sent" in json.loads(f.response.content)["error"]["message"]
    tctx.options.scrub_fail_open = True
    s.detector.find = lambda text: 1 / 0
    assert run(scrub, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}).response is None


@pytest.mark.parametrize("cut", [1, 7, 1000])
def test_a_placeholder_split_across_events_is_restored(cut):
    pieces = ["Write to <EMA", "IL_1> an", "d <", "EMAIL_2", "> today <not a placeholder>"]
    events = [frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                    "content_block_delta") for t in pieces]
    args = ['{"to": "<EMAIL', '_2>"}']
    events += [frame({"type": "content_block_stop", "index": 0}, "content_block_stop")]
    events += [frame({"type": "content_block_delta", "index": 1,
                      "delta": {"type": "input_json_delta", "partial_json": a}}, "content_block_delta") for a in args]
    events += [frame({"type": "content_block_stop", "index": 1}, "content_block_stop"),
               frame({"type": "message_stop"}, "message_stop")]
    text, partial = anthropic_text(restore_stream("anthropic.messages", events, cut))
    assert text == 'Write to jane.roe@acme.io and odd"quote@x.io today <not a placeholder>'
    assert json.loads(partial) == {"to": 'odd"quote@x.io'}  # escaped right inside JSON text


def test_held_text_never_waits_longer_than_a_placeholder():
    r = Restorer()
    r.values["<EMAIL_1>"] = "a@b.io"
    tap = RestoreTap("openai.chat", r)
    chunk = lambda t, fin=None: frame({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": fin}]})
    out = tap.feed(SSEParser().feed(chunk("hello <EMA")))
    assert out[0].json()["choices"][0]["delta"]["content"] == "hello "
    out = tap.feed(SSEParser().feed(chunk("IL_1> bye") + chunk("", "stop") + frame("[DONE]")))
    texts = [(e.json() or {}).get("choices", [{}])[0].get("delta", {}).get("content") for e in out]
    assert "".join(t or "" for t in texts) == "a@b.io bye"


@pytest.mark.parametrize("stream", [False, True])
def test_the_cache_keeps_placeholders_and_a_hit_is_restored(tmp_path, stream):
    from tokenaddons.addons.cache import Cache
    from tokenaddons.addons.meter import Meter
    from tokenaddons.addons.settle import Settle
    from tokenaddons.addons.store import Store

    store = Store()
    scrub = Scrub(store)
    cache = Cache(store)
    addons = [store, Intake(), scrub, cache, Meter(store), Settle(), Outlet()]
    body = {"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": f"write to {PII['EMAIL_ADDRESS']}"}]}
    if stream:
        events = [frame({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 5}}},
                        "message_start"),
                  frame({"type": "content_block_delta", "index": 0,
                         "delta": {"type": "text_delta", "text": "Done: <EMAIL_1>."}}, "content_block_delta"),
                  frame({"type": "message_delta", "usage": {"output_tokens": 3}}, "message_delta"),
                  frame({"type": "message_stop"}, "message_stop")]
        answer = lambda: sse_response(events)  # noqa: E731
    else:
        answer = lambda: answer_echoing("Done: <EMAIL_1>.")  # noqa: E731
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        tctx.configure(scrub)
        seen = []
        for _ in range(2):
            f = make_flow("/v1/messages", body, {"content-type": "application/json", "x-api-key": "k"}, answer())
            asyncio.run(arun_flow(addons, f, stream_chunks=3 if stream else None))
            seen.append(f.metadata.get("client_saw") or f.response.content)
            status = f.response.headers.get("x-tokenaddons-cache")
        store.events.flush()
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("events.db"))
    store.done()
    assert status == "HIT"
    assert all(PII["EMAIL_ADDRESS"].encode() in s and b"<EMAIL_1>" not in s for s in seen)  # both restored
    assert b"<EMAIL_1>" in on_disk and PII["EMAIL_ADDRESS"].encode() not in on_disk  # stored with placeholders


UNREADABLE = {
    "not UTF-8": b'{"model": "m", "messages": [{"role": "user", "content": "jane.roe@acme.io \xff"}]}',
    "trailing bytes": b'{"model": "m", "messages": []} {"content": "jane.roe@acme.io"}',
    "nested too deep": b'{"model": "m", "x": ' + b"[" * 5000 + b'"jane.roe@acme.io"' + b"]" * 5000 + b"}",
    "over intake_max_body": json.dumps({"model": "m", "messages": [
        {"role": "user", "content": "jane.roe@acme.io " + "x" * 2000}]}).encode(),
}


@pytest.fixture
def metered(tmp_path):
    from tokenaddons.addons.meter import Meter
    from tokenaddons.addons.store import Store

    store = Store()
    scrub = Scrub(store)
    addons = [store, Intake(), scrub, Meter(store), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"), store_bodies=True)
        tctx.configure(scrub)
        tctx.options.intake_max_body = 1000
        yield addons, store, tctx
    store.done()


@pytest.mark.parametrize("case", list(UNREADABLE))
@pytest.mark.parametrize("fail_open", [False, True])
def test_an_unreadable_body_is_refused_and_metered(metered, case, fail_open):
    from tokenaddons.test.pipeline import rows

    addons, store, tctx = metered
    tctx.options.scrub_fail_open = fail_open
    answer = http.Response.make(200, json.dumps({"model": "m", "usage": {"input_tokens": 7, "output_tokens": 2}}))
    f = make_flow("/v1/messages", UNREADABLE[case], {"content-type": "application/json"}, answer)
    asyncio.run(arun_flow(addons, f))
    assert f.request.raw_content == UNREADABLE[case]  # never changed, either way
    [row] = rows(store)
    assert row["api"] == "anthropic.messages" and row["request_body"] is None  # metered, never stored
    [d] = Exchange.of(f).decisions
    assert d.addon == "scrub" and d.detail["reason"] == Exchange.of(f).unreadable
    if fail_open:
        assert d.action == "pass_unscanned" and row["status"] == 200 and row["input_tokens"] == 7
    else:
        assert d.action == "refuse" and f.response.status_code == 400 and row["status"] == 400
        err = json.loads(f.response.content)
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert "could not be scanned" in err["error"]["message"] and "jane" not in err["error"]["message"]
        assert row["answered_by"] == "scrub"


def test_an_unreadable_body_in_each_providers_shape(metered):
    addons = metered[0]
    for path, key in [("/v1/chat/completions", "error"), ("/v1/responses", "error"),
                      ("/v1beta/models/gemini-2.5-flash:generateContent", "error")]:
        f = make_flow(path, b'{"model": "m"} trailing')
        asyncio.run(arun_flow(addons, f))
        err = json.loads(f.response.content)[key]
        assert f.response.status_code == 400 and ("INVALID_ARGUMENT" == err.get("status")
                                                  or err.get("type") == "invalid_request_error")


def test_a_blocked_request_is_never_stored(metered):
    from tokenaddons.test.pipeline import rows

    addons, store, tctx = metered
    tctx.options.scrub_actions = "AWS_ACCESS_KEY=block"
    f = make_flow("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": PII["AWS_ACCESS_KEY"]}]})
    asyncio.run(arun_flow(addons, f))
    assert f.response.status_code == 400 and rows(store)[0]["request_body"] is None


def test_what_is_sent_matches_the_decision(scrub):
    """JSON text that would break keeps its JSON: the placeholder goes in, never the original."""
    args = '{"card": 4111111111111111, "amount": 12.5}'
    body = {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "pay"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "pay", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"}]}
    f = run(scrub, body, path="/v1/chat/completions")
    sent_args = json.loads(sent(f))["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent_args) == {"card": "<CARD_1>", "amount": 12.5}
    d = Exchange.of(f).decisions[0]
    assert (d.action, d.detail) == ("pseudonymize", {"counts": {"CREDIT_CARD": 1}})
    # arguments that are not JSON at all have no JSON to keep: scanned as text
    body["messages"][1]["tool_calls"][0]["function"]["arguments"] = 'card 4111111111111111 {"broken'
    f = run(scrub, body, path="/v1/chat/completions")
    assert "4111111111111111" not in sent(f) and "<CARD_1>" in sent(f)


def test_big_texts_are_scanned_whole(scrub):
    """A big tool result is no error (never a 500): every address in 1.2 MB is
    replaced, and 400 KB of base64 comes through intact."""
    import base64
    import random

    rng = random.Random(1)
    blob = base64.b64encode(rng.randbytes(300_000)).decode()  # a 400 KB base64 file in a tool result
    line = "".join(f"user{i}@example.com " + "lorem ipsum " * 15 for i in range(100))  # an @ every ~200 chars
    # 1.2 MB with an @ every 200 characters
    emails = "".join(f"person{i}@example.org " + "dolor sit " * 18 for i in range(6_000))
    body = {"model": "m", "messages": [
        {"role": "user", "content": "read these"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": blob},
                                     {"type": "text", "text": line}, {"type": "text", "text": emails}]}]}
    f = run(scrub, body)
    assert f.response is None
    out = json.loads(sent(f))["messages"][2]["content"]
    assert out[0]["content"] == blob  # base64 comes through intact
    assert "@example.com" not in out[1]["text"] and out[1]["text"].count("<EMAIL_") == 100
    assert len(emails) > 1_000_000
    assert "@example.org" not in out[2]["text"] and out[2]["text"].count("<EMAIL_") == 6_000


ADVERSARIAL = {  # 1 MB each, made to hurt the e-mail, SSN, IBAN, phone, card, IP and secret patterns
    "newlines": "\n" * 1_000_000, "one digit": "7" * 1_000_000, "digit groups": "415 ", "phone-like": "415-555-0199 ",
    "area codes": "+1 (415) ", "card groups": "4111 1111 1111 1111 ", "at signs": "@", "a@": "a@",
    "dotted digits": "1.2.", "colons": "ab:", "password=": "password=", "password quoted": 'password="x',
    "pem begin": "-----BEGIN RSA PRIVATE KEY-----\n", "sk-": "sk-", "aws": "aws ", "eyJ": "eyJabc.",
    "iban-like": "DE89 ", "ssn-like": "123-45-", "iban groups": "DE89-3704-", "letters then digits": "ab12 ",
    "local part": "a.", "local part to an @": "a." * 300 + "@example.com ", "dotted domain": "x@a.",
    "hyphened domain": "x@a-", "query": "?to=a&", "quoted local part": "x='", "addresses": "jane@example.com ",
}


@pytest.fixture(scope="module")
def plain_detection(detector) -> float:
    """The yardstick: a first scan of 1 MB of the standard library's code."""
    import sysconfig
    from pathlib import Path

    from tokenaddons.test.timing import repeat, timed

    detector.warm()
    code = "\n".join(p.read_text() for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:40])
    return timed(lambda: detector._scan(repeat(code)), runs=2)


@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_detection_is_linear(detector, plain_detection, case):
    """1 MB made to hurt the patterns costs at most a few scans of 1 MB of code;
    a pattern quadratic in its input would cost thousands."""
    from tokenaddons.test.timing import deadline, ratio, repeat

    text = repeat(ADVERSARIAL[case])
    with deadline(40 * plain_detection):
        cost = ratio(lambda: detector._scan(text), plain_detection, 10)
    assert cost < 10, f"{cost:.1f} times a scan of 1 MB of code"


def test_an_identical_body_again_is_not_walked_unless_something_was_found(scrub, monkeypatch):
    """A body found clean is remembered by its bytes: the same request again (a
    retry, a cache hit) is not walked. A body with a finding is scrubbed every
    time, and a new detector (new options) forgets what was found clean."""
    s, tctx = scrub
    walked = {}  # the exchanges whose body was walked (kept alive: their ids stay theirs)
    real = Exchange.text_refs
    monkeypatch.setattr(Exchange, "text_refs", lambda ex, only=None: walked.setdefault(id(ex), ex) and real(ex, only))
    clean = {"model": "m", "messages": [{"role": "user", "content": "rename the helper in utils.py"}]}
    leaky = {"model": "m", "messages": [{"role": "user", "content": "mail jane.roe@acme.io"}]}
    assert [json.loads(sent(run(scrub, clean))) for _ in range(2)] == [clean, clean]
    assert len(walked) == 1
    for _ in range(2):
        assert "jane.roe@acme.io" not in sent(run(scrub, leaky))
    assert len(walked) == 3
    tctx.configure(s, scrub_threshold="0.5")
    run(scrub, clean)
    assert len(walked) == 4


def test_texts_seen_clean_are_decided_on_the_event_loop(scrub, monkeypatch):
    """A request whose texts were all scanned before, or whose new text is
    short, needs no worker thread, and neither does replacing findings already
    known in short texts; more new text, long texts holding findings, and
    tool-call arguments not seen clean go to one, with the same outcome as
    before."""
    import tokenaddons.addons.scrub as scrub_module

    hops = thread_hops(monkeypatch, scrub_module)
    listing = "\n".join(f"src/module_{i}.py: def handler_{i}(request): return process(request)" for i in range(40))
    clean = {"model": "m", "messages": [
        {"role": "user", "content": "rename the helper in utils.py"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read",
                                           "input": {"path": "utils.py", "limit": 4000000}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": listing}]}]}
    chat = {"model": "gpt-4o", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "mail", "arguments": json.dumps({"to": "team", "body": "ship it"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sent"}]}
    for body, path in ((clean, "/v1/messages"), (chat, "/v1/chat/completions")):
        hops.clear()
        first, again = run(scrub, body, path=path), run(scrub, body, path=path)
        assert len(hops) == 1 and json.loads(sent(again)) == json.loads(sent(first)) == body
    hops.clear()
    short = {"model": "m", "messages": [{"role": "user", "content": "a short new question"}]}
    assert json.loads(sent(run(scrub, short))) == short and not hops

    leaky = {"model": "m", "messages": [{"role": "user", "content": "mail jane.roe@acme.io"}]}
    for _ in range(2):  # a short text with a finding: found (or known) and replaced here, every time
        assert "jane.roe@acme.io" not in sent(run(scrub, leaky))
    assert not hops
    from tokenaddons.addons.scrub import INLINE_REPLACE_CHARS

    long = {"model": "m", "messages": [{"role": "user", "content": "x " * INLINE_REPLACE_CHARS + "jane.roe@acme.io"}]}
    for _ in range(2):  # a long text holding one: new, then known, but too long to rewrite on the loop
        assert "jane.roe@acme.io" not in sent(run(scrub, long))
    assert len(hops) == 2
    inner = json.loads(json.dumps(chat))
    inner["messages"][0]["tool_calls"][0]["function"]["arguments"] = json.dumps({"to": "jane.roe@acme.io"})
    hops.clear()
    for _ in range(2):
        assert "jane.roe@acme.io" not in sent(run(scrub, inner, path="/v1/chat/completions"))
    assert len(hops) == 2
