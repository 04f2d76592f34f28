"""The official `openai` Python SDK, unchanged, against a running switchyard.

python3 tests/sdk/openai_sdk.py BASE_URL API_KEY   (exits non-zero on the first failed check)

The server serves the simulated `sim-small` and `sim-large`, and `mock-tools`: the mock upstream
(benches/gateway/mock_upstream.rs) through the OpenAI-compatible provider, which answers a
request that offers tools with a call of the first one, arguments {"q": 1}.

Every check raises through `check`, never a bare `assert`, which `python -O` and
PYTHONOPTIMIZE strip.
"""

import json
import sys

import openai


def check(condition, message):
    """Fails the script (exit status 1, the message on stderr) unless `condition` holds."""
    if not condition:
        raise SystemExit(f"check failed: {message}")


base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

models = [m.id for m in client.models.list()]
check("sim-small" in models and "auto" in models and "mock-tools" in models, models)

# A whole answer, with the raw response to read Switchyard's header.
raw = client.chat.completions.with_raw_response.create(
    model="auto",
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    max_tokens=20,
    temperature=0.2,
)
inference_id = raw.headers.get("x-switchyard-inference-id")
check(inference_id, dict(raw.headers))
completion = raw.parse()
check(completion.choices[0].message.content, completion)
check(completion.choices[0].message.role == "assistant", completion)
check(completion.usage.completion_tokens <= 20, completion.usage)
check(completion.id == f"chatcmpl-{inference_id}", completion.id)

# Two choices.
two = client.chat.completions.create(model="sim-large", messages=[{"role": "user", "content": "hi"}], n=2)
check([c.index for c in two.choices] == [0, 1], two.choices)

# A stream with usage: the text equals the whole answer's, the usage comes last.
whole = client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "stream me"}])
stream = client.chat.completions.create(
    model="sim-small",
    messages=[{"role": "user", "content": "stream me"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
check(text and text == whole.choices[0].message.content, (text, whole.choices[0].message.content))
check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage)

# Tools pass through to the upstream, and its tool call back to the SDK, whole and streamed.
weather = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}},
    }
]
tooled = client.chat.completions.create(
    model="mock-tools", messages=[{"role": "user", "content": "weather?"}], tools=weather
)
choice = tooled.choices[0]
check(choice.finish_reason == "tool_calls", choice)
calls = choice.message.tool_calls or []
check(len(calls) == 1, choice.message)
check(calls[0].type == "function" and calls[0].function.name == "weather", calls)
check(json.loads(calls[0].function.arguments) == {"q": 1}, calls[0].function.arguments)
check(tooled.usage.prompt_tokens == 10 and tooled.usage.completion_tokens == 5, tooled.usage)

name, arguments, finish = "", "", None
for chunk in client.chat.completions.create(
    model="mock-tools", messages=[{"role": "user", "content": "weather?"}], tools=weather, stream=True
):
    if not chunk.choices:
        continue
    for call in chunk.choices[0].delta.tool_calls or []:
        check(call.index == 0, call)
        name += (call.function and call.function.name) or ""
        arguments += (call.function and call.function.arguments) or ""
    finish = chunk.choices[0].finish_reason or finish
check(name == "weather", name)
check(json.loads(arguments) == {"q": 1}, arguments)
check(finish == "tool_calls", finish)

# JSON mode answers JSON.
as_json = client.chat.completions.create(
    model="sim-small",
    messages=[{"role": "user", "content": "weather?"}],
    response_format={"type": "json_object"},
)
check("answer" in json.loads(as_json.choices[0].message.content), as_json.choices[0].message.content)

# The legacy text completion API: the same answer as the chat of one user message, whole and
# streamed, with `echo`.
chat_answer = client.chat.completions.create(
    model="sim-small", messages=[{"role": "user", "content": "complete me"}], max_tokens=16
)
legacy = client.completions.create(model="sim-small", prompt="complete me")
check(legacy.object == "text_completion" and legacy.id.startswith("cmpl-"), legacy)
check(legacy.choices[0].text == chat_answer.choices[0].message.content, (legacy, chat_answer))
check(legacy.usage.completion_tokens == chat_answer.usage.completion_tokens, legacy.usage)
echoed = client.completions.create(model="sim-small", prompt="complete me", echo=True)
check(echoed.choices[0].text == "complete me" + legacy.choices[0].text, echoed)
streamed, finish = "", None
for chunk in client.completions.create(model="sim-small", prompt="complete me", stream=True):
    if chunk.choices:
        streamed += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
check(streamed == legacy.choices[0].text and finish == legacy.choices[0].finish_reason, (streamed, finish))
try:
    client.completions.create(model="sim-small", prompt=["one", "two"])
    check(False, "two prompts were served")
except openai.BadRequestError as error:
    check("one prompt per request" in str(error), error)

# Embeddings.
embedded = client.embeddings.create(model="sim-small", input=["a", "b"])
check(len(embedded.data) == 2 and len(embedded.data[0].embedding) > 0, embedded)

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check(False, "an unknown model was served")
except openai.NotFoundError as error:
    check(error.status_code == 404, error)
try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="sy_wrong", max_retries=0).models.list()
    check(False, "a wrong key was accepted")
except openai.AuthenticationError:
    pass

print("openai SDK: all checks passed")
