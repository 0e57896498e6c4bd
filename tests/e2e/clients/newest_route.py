"""Run by tests/e2e/test_route.py inside the newest-SDK venv (see newest_sdks.py):
the newest anthropic and openai SDKs through one routed port, served across APIs.
argv: proxy URL, proxy token. Prints one JSON line of what each SDK got back."""
import json
import sys

import anthropic
import openai

base, token = sys.argv[1], sys.argv[2]
tools = [{"name": "get_weather", "description": "The weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
ask = 'Weather? [[tool:get_weather {"city": "Oslo"}]]'
out = {"versions": {"anthropic": anthropic.__version__, "openai": openai.__version__}}
c = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)
m = c.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "newest"}])
out["anthropic_json"] = {"model": m.model, "text": m.content[0].text, "stop": m.stop_reason}
with c.messages.stream(model="claude-sonnet-4-5", max_tokens=100, tools=tools,
                       messages=[{"role": "user", "content": ask}]) as s:
    f = s.get_final_message()
out["anthropic_stream_tool"] = {"stop": f.stop_reason, "name": f.content[0].name, "input": f.content[0].input}
o = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
r = o.chat.completions.create(model="haiku", messages=[{"role": "user", "content": "newest chat"}])
out["chat_json"] = {"model": r.model, "text": r.choices[0].message.content, "finish": r.choices[0].finish_reason}
chat_tools = [{"type": "function", "function": {"name": "get_weather", "parameters": tools[0]["input_schema"]}}]
with o.chat.completions.stream(model="haiku", tools=chat_tools, messages=[{"role": "user", "content": ask}]) as cs:
    done = cs.get_final_completion()
call = done.choices[0].message.tool_calls[0]
out["chat_stream_tool"] = {"finish": done.choices[0].finish_reason, "name": call.function.name,
                           "arguments": json.loads(call.function.arguments)}
try:
    anthropic.Anthropic(base_url=base, api_key="not-the-token", max_retries=0).messages.create(
        model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
except anthropic.AuthenticationError as e:
    out["wrong_token"] = e.status_code
print(json.dumps(out))
