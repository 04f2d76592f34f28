"""The official `openai` Python SDK, unchanged, against a running switchyard.

python3 tests/sdk/openai_sdk.py BASE_URL API_KEY   (exits non-zero on the first failed check)
"""

import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

models = [m.id for m in client.models.list()]
assert "sim-small" in models and "auto" in models, models

# A whole answer, with the raw response to read Switchyard's header.
raw = client.chat.completions.with_raw_response.create(
    model="auto",
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    max_tokens=20,
    temperature=0.2,
)
inference_id = raw.headers.get("x-switchyard-inference-id")
assert inference_id, dict(raw.headers)
completion = raw.parse()
assert completion.choices[0].message.content, completion
assert completion.choices[0].message.role == "assistant"
assert completion.usage.completion_tokens <= 20, completion.usage
assert completion.id == f"chatcmpl-{inference_id}", completion.id

# Two choices.
two = client.chat.completions.create(model="sim-large", messages=[{"role": "user", "content": "hi"}], n=2)
assert [c.index for c in two.choices] == [0, 1], two.choices

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
assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

# Tools pass through; JSON mode answers JSON.
tooled = client.chat.completions.create(
    model="sim-small",
    messages=[{"role": "user", "content": "weather?"}],
    tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}],
    response_format={"type": "json_object"},
)
import json

assert "answer" in json.loads(tooled.choices[0].message.content)

# Embeddings.
embedded = client.embeddings.create(model="sim-small", input=["a", "b"])
assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 0

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as error:
    assert error.status_code == 404
try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="sy_wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass

print("openai SDK: all checks passed")
