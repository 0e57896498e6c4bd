"""Rate limits through a real mitmdump: a burst against the limit."""
from __future__ import annotations

import json

import openai
import pytest
from mitmproxy import http

ANSWER = {"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi"}],
          "usage": {"input_tokens": 10, "output_tokens": 50}}


def ok():
    return http.Response.make(200, json.dumps(ANSWER).encode(), {"content-type": "application/json"})


@pytest.mark.integration
def test_e2e_burst_against_a_rate_limit(make_proxy, sim):
    proxy = make_proxy(sim.url, {"ratelimit_rpm": 5, "ratelimit_max_wait_s": "0"})
    c = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    outcomes = []
    for i in range(10):
        try:
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"burst {i}"}])
            outcomes.append("ok")
        except openai.RateLimitError as e:
            # a full minute's room is 5 requests: the next one in 12 s, less the time the burst took
            assert "rate limit reached" in str(e) and 1 <= int(e.response.headers["retry-after"]) <= 12
            outcomes.append("429")
    assert outcomes == ["ok"] * 5 + ["429"] * 5
    assert len(sim.requests) == 5


@pytest.mark.integration
def test_e2e_a_day_long_retry_after_pauses_one_credential_for_at_most_the_cap(make_proxy):
    import time

    from tokenaddons.sim import Simulator

    with Simulator(retry_after=86400) as sim:
        proxy = make_proxy(sim.url, {"ratelimit_max_pause_s": "2", "ratelimit_max_wait_s": "0"})

        def ask(key, fault=None):
            c = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
            return c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {time.monotonic()}"}],
                extra_headers={"x-sim-fault": fault} if fault else None)

        with pytest.raises(openai.RateLimitError) as told:
            ask("alice", fault="429")
        assert told.value.response.headers["retry-after"] == "86400"  # upstream's own answer, passed on
        with pytest.raises(openai.RateLimitError) as paused:
            ask("alice")
        assert paused.value.response.headers["retry-after"] == "2"
        assert "slow down" in paused.value.response.headers["x-tokenaddons-ratelimit"]
        assert ask("bob").http_response.status_code == 200  # another credential is not paused
        assert len(sim.requests) == 2
        time.sleep(2.2)
        assert ask("alice").http_response.status_code == 200  # two seconds, not a day
        assert "pausing it for this credential for 2.0 s (ratelimit_max_pause_s)" in proxy.log.read_text()
