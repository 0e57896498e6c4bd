"""Run by tests/test_newest_sdks.py inside a separate venv holding the newest
anthropic and openai SDKs (they need h11>=0.16, which mitmproxy 11 cannot share
an environment with). Talks to the proxy at argv[1]; prints one JSON line of
what each SDK got back, for the test to compare with the event rows."""
import json
import sys

import anthropic
import openai

base = sys.argv[1]
out = {"versions": {"anthropic": anthropic.__version__, "openai": openai.__version__}}
c = anthropic.Anthropic(base_url=base, api_key="sk-ant-test", max_retries=0)
m = c.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "newest json"}])
out["anthropic_json"] = [m.usage.input_tokens, m.usage.output_tokens]
with c.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                       messages=[{"role": "user", "content": "newest stream"}]) as s:
    f = s.get_final_message()
out["anthropic_stream"] = [f.usage.input_tokens, f.usage.output_tokens]
o = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)
r = o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "newest chat"}])
out["chat_json"] = [r.usage.prompt_tokens, r.usage.completion_tokens]
chunks = list(o.chat.completions.create(model="gpt-4o-mini", stream=True,
                                        messages=[{"role": "user", "content": "newest chat stream"}]))
out["chat_stream_saw_usage"] = any(getattr(ch, "usage", None) for ch in chunks)
resp = o.responses.create(model="gpt-4.1-mini", input="newest responses")
out["responses_json"] = [resp.usage.input_tokens, resp.usage.output_tokens]
with o.responses.stream(model="gpt-4.1-mini", input="newest responses stream") as rs:
    done = rs.get_final_response()
out["responses_stream"] = [done.usage.input_tokens, done.usage.output_tokens]
try:
    c.messages.create(model="claude-sonnet-4-5", max_tokens=100, extra_headers={"x-sim-fault": "429"},
                      messages=[{"role": "user", "content": "newest 429"}])
except anthropic.RateLimitError as e:
    out["rate_limit"] = e.status_code
print(json.dumps(out))
