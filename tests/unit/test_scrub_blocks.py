"""Scrub reads every block of the four request schemas a user or a tool wrote,
and restores what the model answers in every block type, whole and streamed."""
from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.scrub import Scrub
from tokenaddons.exchange import Exchange
from tokenaddons.providers.sse import SSEParser, frame
from tokenaddons.test.flows import make_flow, sse_response
from tokenaddons.test.pipeline import arun_flow

EMAIL, AWS, GITHUB, CARD = "jane.roe@acme.io", "AKIAIOSFODNN7EXAMPLE", "ghp_" + "Ab1" * 12, "4111111111111111"
VALUES = (EMAIL, AWS, GITHUB, CARD)
SECRET = f"mail {EMAIL}, key {AWS}, token {GITHUB}, card {CARD}"
# what a fresh scrubber gives them, in this order
PLACEHOLDERS = {"<EMAIL_1>": EMAIL, "<AWS_ACCESS_KEY_1>": AWS, "<GITHUB_TOKEN_1>": GITHUB, "<CARD_1>": CARD}
ECHO = "Noted: " + ", ".join(PLACEHOLDERS)
RESTORED = "Noted: " + ", ".join(VALUES)
PATHS = {"anthropic": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses",
         "gemini": "/v1beta/models/gemini-2.5-flash:generateContent",
         "gemini-stream": "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
         "gemini-array": "/v1beta/models/gemini-2.5-flash:streamGenerateContent"}


@pytest.fixture
def scrub():
    s = Scrub()
    with taddons.context(Intake(), s, Outlet()) as tctx:
        tctx.configure(s)
        yield s


def run(scrub, api: str, body: dict, response: http.Response | None = None, chunks: int | None = None):
    flow = make_flow(PATHS[api], body, {"content-type": "application/json", "x-api-key": "k"}, response)
    return asyncio.run(arun_flow([Intake(), scrub, Outlet()], flow, stream_chunks=chunks))


def sent(flow) -> str:
    return flow.request.get_text()


def assert_scrubbed(flow) -> None:
    text = sent(flow)
    for value in VALUES:
        assert value not in text, value
    assert "<EMAIL_1>" in text


def anthropic(*content: dict, system=None, **extra) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, **extra,
            "messages": [{"role": "user", "content": list(content)}]}
    if system is not None:
        body["system"] = system
    return body


def tool_turn(*result: dict) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "kb", "input": {"q": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": list(result)}]}]}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


REQUESTS = {
    "anthropic search_result": ("anthropic", anthropic({
        "type": "search_result", "source": "https://kb.example/a", "title": f"Notes for {EMAIL}",
        "content": [text(SECRET)]})),
    "anthropic search_result in tool_result": ("anthropic", tool_turn({
        "type": "search_result", "source": "https://kb.example/a", "title": "t", "content": [text(SECRET)]})),
    "anthropic document title and context": ("anthropic", anthropic({
        "type": "document", "title": f"Contract of {EMAIL}", "context": f"key {AWS}, token {GITHUB}, card {CARD}",
        "source": {"type": "text", "media_type": "text/plain", "data": "plain terms"}})),
    "anthropic document content source": ("anthropic", anthropic({
        "type": "document", "source": {"type": "content", "content": [text(SECRET)]}})),
    "anthropic citations in history": ("anthropic", {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "summarize"},
        {"role": "assistant", "content": [{"type": "text", "text": "As cited", "citations": [
            {"type": "char_location", "cited_text": SECRET, "document_index": 0, "document_title": "d",
             "start_char_index": 0, "end_char_index": 10}]}]},
        {"role": "user", "content": "thanks"}]}),
    "anthropic tool_use input with a bare number": ("anthropic", {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "pay"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "pay", "input": {
            "card": int(CARD), "to": EMAIL, "note": f"key {AWS} token {GITHUB}"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]}),
    "anthropic server tool results": ("anthropic", {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "s1", "name": "code_execution", "input": {"code": f"print('{EMAIL}')"}},
            {"type": "code_execution_tool_result", "tool_use_id": "s1", "content": {
                "type": "code_execution_result", "stdout": f"key {AWS}", "stderr": f"token {GITHUB}",
                "return_code": 0, "content": []}},
            {"type": "bash_code_execution_tool_result", "tool_use_id": "s2", "content": {
                "type": "bash_code_execution_result", "stdout": f"card {CARD}", "stderr": "", "return_code": 0,
                "content": []}},
            {"type": "text_editor_code_execution_tool_result", "tool_use_id": "s3", "content": {
                "type": "text_editor_code_execution_view_result", "content": EMAIL, "file_type": "text"}},
            {"type": "web_fetch_tool_result", "tool_use_id": "s4", "content": {
                "type": "web_fetch_result", "url": "https://x.example", "content": {
                    "type": "document", "source": {"type": "text", "media_type": "text/plain", "data": SECRET}}}},
            {"type": "web_search_tool_result", "tool_use_id": "s5", "content": [
                {"type": "web_search_result", "title": f"About {EMAIL}", "url": "https://y.example",
                 "encrypted_content": "EqQBCioIARgBIiQ4"}]}]},
        {"role": "user", "content": "and?"}]}),
    "anthropic mcp tool use and result": ("anthropic", {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "mcp_tool_use", "id": "m1", "name": "crm", "server_name": "crm",
                                           "input": {"email": EMAIL}}]},
        {"role": "user", "content": [{"type": "mcp_tool_result", "tool_use_id": "m1",
                                      "content": [text(f"key {AWS}, token {GITHUB}, card {CARD}")]}]}]}),
    "anthropic metadata.user_id and system role": ("anthropic", {
        "model": "m", "max_tokens": 10, "metadata": {"user_id": EMAIL},
        "messages": [{"role": "system", "content": f"key {AWS}, token {GITHUB}, card {CARD}"},
                     {"role": "user", "content": "hi"}]}),
    "chat prediction content": ("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "edit"}],
                                         "prediction": {"type": "content", "content": SECRET}}),
    "chat prediction parts": ("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "edit"}],
                                       "prediction": {"type": "content", "content": [text(SECRET)]}}),
    "chat legacy function_call.arguments with a bare number": ("chat", {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "pay"},
        {"role": "assistant", "content": None, "function_call": {"name": "pay", "arguments": json.dumps(
            {"card": int(CARD), "to": EMAIL, "note": f"key {AWS} token {GITHUB}"})}},
        {"role": "function", "name": "pay", "content": "ok"}]}),
    "chat tool_calls arguments with a bare number": ("chat", {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "pay"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "pay", "arguments": f'{{"card": {CARD}, "to": "{EMAIL}", "note": "key {AWS} token {GITHUB}"}}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}),
    "chat custom tool call input and refusal": ("chat", {"model": "gpt-4o", "user": EMAIL, "messages": [
        {"role": "user", "content": "patch"},
        {"role": "assistant", "refusal": f"not {CARD}", "tool_calls": [
            {"id": "c1", "type": "custom", "custom": {"name": "apply_patch", "input": f"+ key {AWS} {GITHUB}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [text("done")]}]}),
    "responses custom_tool_call input (apply_patch)": ("responses", {"model": "gpt-5", "input": [
        {"role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
         "input": f"*** Begin Patch\n+contact = '{EMAIL}'\n+key = '{AWS}'\n+token = '{GITHUB}'\n+card = {CARD}\n"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"}]}),
    "responses reasoning summary": ("responses", {"model": "gpt-5", "input": [
        {"role": "user", "content": "think"},
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAB" + "x" * 40,
         "summary": [{"type": "summary_text", "text": SECRET}]},
        {"role": "user", "content": "go on"}]}),
    "responses function_call arguments with a bare number": ("responses", {"model": "gpt-5", "input": [
        {"role": "user", "content": "pay"},
        {"type": "function_call", "call_id": "c1", "name": "pay",
         "arguments": json.dumps({"card": int(CARD), "to": EMAIL, "note": f"key {AWS} token {GITHUB}"})},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "ok"}]}]}),
    "responses shell, patch, mcp and search items": ("responses", {"model": "gpt-5", "input": [
        {"role": "user", "content": "work"},
        {"type": "local_shell_call", "id": "l1", "call_id": "l1", "status": "completed",
         "action": {"type": "exec", "command": ["grep", EMAIL, "users.csv"], "env": {"TOKEN": GITHUB}}},
        {"type": "local_shell_call_output", "id": "l1", "output": f"key {AWS}"},
        {"type": "shell_call_output", "call_id": "s1", "output": [{"stdout": f"card {CARD}", "stderr": ""}]},
        {"type": "apply_patch_call", "call_id": "p1", "status": "completed",
         "operation": {"type": "update_file", "path": "a.py", "diff": f"+{EMAIL}"}},
        {"type": "mcp_call", "id": "m1", "name": "crm", "server_label": "crm",
         "arguments": json.dumps({"email": EMAIL}), "output": f"key {AWS} token {GITHUB} card {CARD}"},
        {"type": "web_search_call", "id": "w1", "status": "completed", "action": {"type": "search", "query": EMAIL}}]}),
    "responses instructions, prompt variables, metadata": ("responses", {
        "model": "gpt-5", "instructions": f"The user is {EMAIL}", "input": "hi", "safety_identifier": EMAIL,
        "metadata": {"account": GITHUB}, "prompt": {"id": "pmpt_1", "variables": {"key": AWS, "card": CARD}}}),
    "gemini snake_case function_call and function_response": ("gemini", {"contents": [
        {"role": "user", "parts": [{"text": "pay"}]},
        {"role": "model", "parts": [{"function_call": {"name": "pay", "args": {"card": int(CARD), "to": EMAIL}}}]},
        {"role": "user", "parts": [{"function_response": {"name": "pay", "response": {
            "key": AWS, "token": GITHUB}}}]}]}),
    "gemini code execution": ("gemini", {"system_instruction": {"parts": [{"text": f"user {EMAIL}"}]}, "contents": [
        {"role": "user", "parts": [{"text": "run"}]},
        {"role": "model", "parts": [
            {"executableCode": {"language": "PYTHON", "code": f"print('{AWS}')"}},
            {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": f"{GITHUB}"}},
            {"executable_code": {"language": "PYTHON", "code": f"charge({CARD})"}},
            {"code_execution_result": {"outcome": "OUTCOME_OK", "output": EMAIL}}]},
        {"role": "user", "parts": [{"text": "ok"}]}]}),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_every_block_type_is_scrubbed(scrub, case):
    api, body = REQUESTS[case]
    flow = run(scrub, api, body)
    assert_scrubbed(flow)
    json.loads(sent(flow))
    d = Exchange.of(flow).decisions[0]
    assert d.action == "pseudonymize" and d.detail["counts"]["EMAIL_ADDRESS"] >= 1


@pytest.mark.parametrize("case", [c for c in REQUESTS if "bare number" in c])
def test_a_number_in_json_becomes_a_quoted_placeholder(scrub, case):
    api, body = REQUESTS[case]
    flow = run(scrub, api, body)
    out = json.loads(sent(flow))
    if api == "anthropic":
        args = out["messages"][1]["content"][0]["input"]
    elif api == "chat":
        msg = out["messages"][1]
        args = json.loads((msg.get("function_call") or msg["tool_calls"][0]["function"])["arguments"])
    else:
        args = json.loads(out["input"][1]["arguments"])
    assert args["card"] == "<CARD_1>" and args["to"] == "<EMAIL_1>"  # still JSON: the number became a string
    assert CARD not in sent(flow)
    assert Exchange.of(flow).decisions[0].detail["counts"]["CREDIT_CARD"] == 1


def test_a_number_with_a_phone_key_is_read_as_a_phone(scrub):
    body = {"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": "call"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "dial",
                                           "input": {"phone": 4155550199, "retries": 3000000}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]}
    args = json.loads(sent(run(scrub, "anthropic", body)))["messages"][1]["content"][0]["input"]
    assert args == {"phone": "<PHONE_1>", "retries": 3000000}


def test_signed_thinking_and_media_are_never_touched(scrub):
    thinking = {"type": "thinking", "thinking": f"the user is {EMAIL}", "signature": "EqQBCkYIARgCIkC"}
    body = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "hello"}]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": CARD}}, text("and?")]}]}
    flow = run(scrub, "anthropic", body)
    assert flow.request.raw_content == json.dumps(body).encode()
    gemini = {"contents": [{"role": "model", "parts": [{"text": f"I think {EMAIL}", "thought": True},
                                                       {"inline_data": {"mime_type": "image/png", "data": CARD}}]}]}
    flow = run(scrub, "gemini", gemini)
    assert flow.request.raw_content == json.dumps(gemini).encode()


# ---------------------------------------------------------------- answers: whole and streamed

def json_answer(data) -> http.Response:
    return http.Response.make(200, json.dumps(data).encode(), {"content-type": "application/json"})


ARGS = json.dumps({"to": "<EMAIL_1>", "key": "<AWS_ACCESS_KEY_1>"})
THINKING = "pondering <EMAIL_1>"

WHOLE = {
    "anthropic": {"content": [
        {"type": "thinking", "thinking": THINKING, "signature": "sig"},
        {"type": "text", "text": ECHO, "citations": [{"type": "search_result_location", "cited_text": ECHO,
                                                       "source": "s", "title": "<EMAIL_1>", "search_result_index": 0,
                                                       "start_block_index": 0, "end_block_index": 1}]},
        {"type": "tool_use", "id": "t", "name": "send", "input": {"to": "<EMAIL_1>", "card": "<CARD_1>"}},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {"query": "<GITHUB_TOKEN_1>"}}]},
    "chat": {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": ECHO, "refusal": "<CARD_1>",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": ARGS}},
                       {"id": "d", "type": "custom", "custom": {"name": "apply_patch", "input": "+<EMAIL_1>"}}],
        "function_call": {"name": "f", "arguments": ARGS}}}]},
    "responses": {"output": [
        {"type": "reasoning", "id": "r", "summary": [{"type": "summary_text", "text": ECHO}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ECHO,
                                                              "annotations": []}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": ARGS},
        {"type": "custom_tool_call", "call_id": "d", "name": "apply_patch", "input": "+<EMAIL_1>"}]},
    "gemini": {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"text": THINKING, "thought": True}, {"text": ECHO},
        {"functionCall": {"name": "f", "args": {"to": "<EMAIL_1>"}}},
        {"executableCode": {"language": "PYTHON", "code": "print('<AWS_ACCESS_KEY_1>')"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "<GITHUB_TOKEN_1>"}}]}}]},
}


def assert_restored(answer: str) -> None:
    assert "<EMAIL_1>" not in answer.replace(THINKING, "") and "<AWS_ACCESS_KEY_1>" not in answer
    for value in (EMAIL, AWS, GITHUB):
        assert value in answer, value
    assert THINKING in answer or "pondering" not in answer  # signed thinking keeps its placeholder


def request_for(api: str, stream: bool = False) -> dict:
    secret = SECRET
    if api == "anthropic":
        return {"model": "m", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": secret}]}
    if api == "chat":
        return {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": secret}]}
    if api == "responses":
        return {"model": "gpt-5", "stream": stream, "input": secret}
    return {"contents": [{"role": "user", "parts": [{"text": secret}]}]}


@pytest.mark.parametrize("api", list(WHOLE))
def test_every_answer_block_type_is_restored(scrub, api):
    flow = run(scrub, api, request_for(api), json_answer(WHOLE[api]))
    answer = flow.response.get_text()
    assert_restored(answer)
    data = json.loads(answer)
    if api == "anthropic":
        assert data["content"][0]["thinking"] == THINKING
        assert data["content"][2]["input"] == {"to": EMAIL, "card": CARD}
    elif api == "chat":
        assert json.loads(data["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])["to"] == EMAIL
        assert data["choices"][0]["message"]["refusal"] == CARD
    elif api == "responses":
        assert data["output"][0]["summary"][0]["text"] == RESTORED
        assert data["output"][3]["input"] == f"+{EMAIL}"
    else:
        assert data["candidates"][0]["content"]["parts"][0]["text"] == THINKING


def anthropic_stream() -> list[bytes]:
    def delta(i: int, d: dict) -> bytes:
        return frame({"type": "content_block_delta", "index": i, "delta": d}, "content_block_delta")

    def stop(i: int) -> bytes:
        return frame({"type": "content_block_stop", "index": i}, "content_block_stop")

    events = [frame({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}},
                    "message_start"),
              delta(0, {"type": "thinking_delta", "thinking": THINKING}), stop(0)]
    events += [delta(1, {"type": "text_delta", "text": ECHO[i:i + 5]}) for i in range(0, len(ECHO), 5)]
    events += [delta(1, {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": ECHO,
                                                                 "document_index": 0}}), stop(1)]
    events += [delta(2, {"type": "input_json_delta", "partial_json": ARGS[i:i + 4]}) for i in range(0, len(ARGS), 4)]
    events += [stop(2), frame({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                               "usage": {"output_tokens": 9}}, "message_delta"),
               frame({"type": "message_stop"}, "message_stop")]
    return events


def chat_stream() -> list[bytes]:
    def chunk(delta: dict, finish=None) -> bytes:
        return frame({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": delta,
                                                                  "finish_reason": finish}]})

    events = [chunk({"content": ECHO[i:i + 3]}) for i in range(0, len(ECHO), 3)]
    events += [chunk({"refusal": "<CARD_1>"})]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": ARGS[i:i + 5]}}]})
               for i in range(0, len(ARGS), 5)]
    return events + [chunk({}, "tool_calls"), frame("[DONE]")]


def responses_stream() -> list[bytes]:
    def ev(kind: str, **data) -> bytes:
        return frame({"type": kind, **data}, kind)

    events = [ev("response.reasoning_summary_text.delta", item_id="r", summary_index=0, delta=ECHO[i:i + 6])
              for i in range(0, len(ECHO), 6)]
    events += [ev("response.reasoning_summary_text.done", item_id="r", summary_index=0, text=ECHO)]
    events += [ev("response.output_text.delta", item_id="m", content_index=0, delta=ECHO[i:i + 4])
               for i in range(0, len(ECHO), 4)]
    events += [ev("response.output_text.done", item_id="m", content_index=0, text=ECHO)]
    events += [ev("response.function_call_arguments.delta", item_id="f", delta=ARGS[i:i + 7])
               for i in range(0, len(ARGS), 7)]
    events += [ev("response.function_call_arguments.done", item_id="f", arguments=ARGS)]
    patch = "*** Add File: a.py\n+<EMAIL_1>\n"
    events += [ev("response.custom_tool_call_input.delta", item_id="p", delta=patch[i:i + 5])
               for i in range(0, len(patch), 5)]
    events += [ev("response.custom_tool_call_input.done", item_id="p", input=patch),
               ev("response.completed", response={"id": "r", "output": [], "usage": {}})]
    return events


def gemini_chunks() -> list[dict]:
    chunks = [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"text": THINKING, "thought": True}]}}]}]
    chunks += [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": ECHO[i:i + 6]}]}}]}
               for i in range(0, len(ECHO), 6)]
    chunks += [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {"to": "<EMAIL_1>", "key": "<AWS_ACCESS_KEY_1>"}}}]}}]},
               {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": " <GITHUB_TOKEN_1>"}]},
                                "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3}}]
    return chunks


def gemini_array(chunks: list[dict]) -> bytes:
    """As Gemini sends streamGenerateContent without alt=sse: one pretty-printed JSON array."""
    return ("[" + "\n,\r\n".join(json.dumps(c, indent=2) for c in chunks) + "]").encode()


STREAMS = {
    "anthropic": lambda: sse_response(anthropic_stream()),
    "chat": lambda: sse_response(chat_stream()),
    "responses": lambda: sse_response(responses_stream()),
    "gemini-stream": lambda: sse_response([frame(c) for c in gemini_chunks()]),
    "gemini-array": lambda: http.Response.make(200, gemini_array(gemini_chunks()),
                                               {"content-type": "application/json"}),
}


def client_text(api: str, body: bytes) -> str:
    """Everything the client reads out of a stream, deltas joined."""
    if api == "gemini-array":
        return json.dumps(json.loads(body))
    pieces = []
    for e in SSEParser().feed(body):
        d = e.json() or {}
        delta = d.get("delta") if isinstance(d.get("delta"), dict) else {}
        pieces += [delta.get("text", ""), delta.get("partial_json", ""), delta.get("thinking", ""),
                   json.dumps(delta.get("citation", "")), d.get("delta") if isinstance(d.get("delta"), str) else ""]
        for c in d.get("choices") or []:
            pieces += [c["delta"].get("content") or "", c["delta"].get("refusal") or ""]
            pieces += [t["function"]["arguments"] for t in c["delta"].get("tool_calls") or []]
        pieces += [json.dumps(c) for c in d.get("candidates") or []]
    return "".join(pieces)


@pytest.mark.parametrize("api", list(STREAMS))
@pytest.mark.parametrize("chunks", [3, 17, 400])
def test_every_streamed_block_type_is_restored(scrub, api, chunks):
    base = "gemini" if api.startswith("gemini") else api
    flow = run(scrub, api, request_for(base, stream=True), STREAMS[api](), chunks=chunks)
    out = flow.metadata["client_saw"]
    text = client_text(api, out)
    assert_restored(text)
    assert EMAIL in text and (api == "responses" or "<EMAIL_1>" not in text.replace(THINKING, ""))
    if api == "anthropic":
        assert THINKING in text  # signed: its placeholder stays
        assert json.loads("".join(json.loads(e.data)["delta"]["partial_json"] for e in SSEParser().feed(out)
                                  if '"partial_json"' in e.data)) == {"to": EMAIL, "key": AWS}
    if api == "gemini-array":
        whole = json.loads(out)  # still one JSON array, element by element
        assert whole[0]["candidates"][0]["content"]["parts"][0]["text"] == THINKING
        assert "".join(p.get("text", "") for c in whole[1:] for p in c["candidates"][0]["content"]["parts"]
                       if "text" in p) == RESTORED + " " + GITHUB
        assert whole[-2]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"] == {"to": EMAIL, "key": AWS}


def gemini_parts(array: list) -> tuple[str, str, list]:
    thought = "".join(p["text"] for c in array for p in c["candidates"][0]["content"]["parts"] if p.get("thought"))
    said = "".join(p["text"] for c in array for p in c["candidates"][0]["content"]["parts"]
                   if "text" in p and not p.get("thought"))
    calls = [p["functionCall"] for c in array for p in c["candidates"][0]["content"]["parts"] if "functionCall" in p]
    return thought, said, calls


def test_a_gemini_array_stream_cut_anywhere_is_passed_on_whole():
    from tokenaddons.engines.placeholders import Restorer, RestoreTap

    r = Restorer()
    r.values.update(PLACEHOLDERS)
    raw = gemini_array(gemini_chunks())
    for size in (1, 2, 5, 64, len(raw)):
        tap = RestoreTap("gemini.generate", r)
        out = b"".join(tap.feed_bytes(raw[i:i + size]) for i in range(0, len(raw), size)) + tap.end_bytes()
        assert gemini_parts(json.loads(out)) == (THINKING, RESTORED + " " + GITHUB, [
            {"name": "f", "args": {"to": EMAIL, "key": AWS}}])
    tap = RestoreTap("gemini.generate", Restorer())  # nothing to restore: byte for byte
    assert b"".join(tap.feed_bytes(raw[i:i + 7]) for i in range(0, len(raw), 7)) + tap.end_bytes() == raw
    cut = raw[:len(raw) // 2]  # a stream cut mid-element: what arrived goes out as it came
    tap = RestoreTap("gemini.generate", r)
    out = tap.feed_bytes(cut) + tap.end_bytes()
    assert out.startswith(b"[") and out.endswith(cut[-20:])


def test_held_text_goes_in_before_a_gemini_array_ends():
    from tokenaddons.engines.placeholders import Restorer, RestoreTap

    r = Restorer()
    r.values.update(PLACEHOLDERS)
    chunks = [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "ends with <EMA"}]}}]}]
    tap = RestoreTap("gemini.generate", r)
    out = tap.feed_bytes(gemini_array(chunks)) + tap.end_bytes()  # no finishReason: the held "<EMA" was waiting
    assert gemini_parts(json.loads(out))[1] == "ends with <EMA"
