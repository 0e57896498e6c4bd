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
            assert "rate limit reached" in str(e) and e.response.headers["retry-after"] == "12"
            outcomes.append("429")
    assert outcomes == ["ok"] * 5 + ["429"] * 5
    assert len(sim.requests) == 5
