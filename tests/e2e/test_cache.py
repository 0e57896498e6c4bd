"""The cache through a real mitmdump with the SDKs."""
from __future__ import annotations

import concurrent.futures

import anthropic
import openai
import pytest


@pytest.fixture
def proxy(make_proxy, sim):
    p = make_proxy(sim.url)
    p.sim = sim
    return p


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_e2e_anthropic_twice_reaches_upstream_once(proxy, stream):
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k1", max_retries=0)
    kw = dict(model="claude-sonnet-4-5", max_tokens=60, messages=[{"role": "user", "content": "cache me"}])
    if stream:
        answers = []
        for _ in range(2):
            with c.messages.stream(**kw) as s:
                answers.append(s.get_final_message())
        raw = c.messages.with_raw_response.create(**kw, stream=True)
        assert raw.headers["x-tokenaddons-cache"] == "HIT"
        list(raw.parse())
    else:
        raws = [c.messages.with_raw_response.create(**kw) for _ in range(2)]
        assert [r.headers["x-tokenaddons-cache"] for r in raws] == ["MISS", "HIT"]
        answers = [r.parse() for r in raws]
    assert answers[0].content == answers[1].content and answers[0].id == answers[1].id
    assert proxy.sim.upstream_calls == 1
    rows = proxy.rows(3 if stream else 2)
    assert rows[1]["cache_status"] == "HIT" and rows[1]["input_tokens"] == 0


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_e2e_openai_twice_reaches_upstream_once(proxy, stream):
    c = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k1", max_retries=0)
    kw = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "cache me too"}])
    if stream:
        outs = ["".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**kw, stream=True)
                        if ch.choices) for _ in range(2)]
    else:
        outs = [c.chat.completions.create(**kw).choices[0].message.content for _ in range(2)]
    assert outs[0] == outs[1] and outs[0]
    assert proxy.sim.upstream_calls == 1


@pytest.mark.integration
def test_e2e_ten_concurrent_twins_one_upstream_call_and_keys_stay_apart(proxy):
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k1", max_retries=0)
    kw = dict(model="claude-sonnet-4-5", max_tokens=60, messages=[{"role": "user", "content": "all at once"}],
              extra_headers={"x-sim-fault": "slow:0.3"})
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        outs = list(pool.map(lambda _: c.messages.with_raw_response.create(**kw), range(10)))
    assert proxy.sim.upstream_calls == 1
    assert sorted(o.headers["x-tokenaddons-cache"] for o in outs) == ["HIT"] * 9 + ["MISS"]
    assert len({o.parse().id for o in outs}) == 1
    other = anthropic.Anthropic(base_url=proxy.url, api_key="k2", max_retries=0)
    other.messages.create(**kw)
    assert proxy.sim.upstream_calls == 2


@pytest.mark.integration
def test_e2e_cut_streams_and_errors_are_never_replayed(proxy):
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k1", max_retries=0)
    kw = dict(model="claude-sonnet-4-5", max_tokens=60, messages=[{"role": "user", "content": "fragile"}])
    with pytest.raises(Exception):
        with c.messages.stream(**kw, extra_headers={"x-sim-fault": "cut:3"}) as s:
            s.get_final_message()
    with pytest.raises(anthropic.InternalServerError):
        c.messages.create(**kw, extra_headers={"x-sim-fault": "500"})
    with c.messages.stream(**kw) as s:
        s.get_final_message()
    c.messages.create(**kw)
    assert proxy.sim.upstream_calls == 4


@pytest.mark.integration
def test_e2e_a_stream_fans_out_to_twins_as_it_arrives(proxy):
    import threading
    import time

    c = anthropic.Anthropic(base_url=proxy.url, api_key="k1", max_retries=0)
    kw = dict(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "fan out"}],
              stream=True, extra_headers={"x-sim-delay-ms": "80"})
    seen = {}

    def one(i):
        time.sleep(0.15 * i)  # the first leads; the others join while it streams
        raw = c.messages.with_raw_response.create(**kw)
        first, text = None, ""
        for ev in raw.parse():
            first = first or time.monotonic()
            if ev.type == "content_block_delta":
                text += ev.delta.text
        seen[i] = (raw.headers["x-tokenaddons-cache"], first, time.monotonic(), text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proxy.sim.upstream_calls == 1
    assert [seen[i][0] for i in range(4)] == ["MISS", "HIT", "HIT", "HIT"]
    assert len({seen[i][3] for i in range(4)}) == 1 and seen[0][3]
    leader_end = seen[0][2]
    assert all(seen[i][1] < leader_end for i in (1, 2, 3))  # followers stream while the leader still does
    rows = proxy.rows(4)
    assert [r["input_tokens"] > 0 for r in rows].count(True) == 1
    saved = proxy.rows(3, table="decisions", where="addon = 'cache'")
    assert len(saved) == 3 and all(d["usd_saved"] > 0 for d in saved)


@pytest.mark.integration
def test_e2e_two_bearer_tokens_behind_one_key_never_share_an_entry(proxy):
    kw = dict(model="claude-sonnet-4-5", max_tokens=60, messages=[{"role": "user", "content": "whose answer?"}])

    def as_user(token):
        c = anthropic.Anthropic(base_url=proxy.url, api_key="gateway-key", max_retries=0,
                                default_headers={"Authorization": f"Bearer {token}"})
        return c.messages.with_raw_response.create(**kw).headers["x-tokenaddons-cache"]

    assert [as_user("alice"), as_user("bob"), as_user("alice"), as_user("bob")] == ["MISS", "MISS", "HIT", "HIT"]
    assert proxy.sim.upstream_calls == 2
    sent = [{k.lower(): v for k, v in r.headers.items()} for r in proxy.sim.requests]
    assert {h["authorization"] for h in sent} == {"Bearer alice", "Bearer bob"}


@pytest.mark.integration
def test_e2e_a_gemini_header_key_with_different_query_keys_never_share_an_entry(proxy):
    import httpx

    body = {"contents": [{"role": "user", "parts": [{"text": "whose answer?"}]}]}
    url = proxy.url + "/v1beta/models/gemini-2.5-flash:generateContent"

    def ask(key):
        r = httpx.post(url, params={"key": key}, json=body, headers={"x-goog-api-key": "project-key"}, timeout=30)
        return r.headers["x-tokenaddons-cache"]

    assert [ask("u1"), ask("u2"), ask("u1")] == ["MISS", "MISS", "HIT"]
    assert proxy.sim.upstream_calls == 2
