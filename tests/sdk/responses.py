"""The official `openai` Python SDK's Responses API against a running switchyard, whole and
streamed, with instructions, input items, function tools and structured output.

python3 tests/sdk/responses.py BASE_URL API_KEY   (exits non-zero on the first failed check)

The server serves the simulated `sim-small` and `mock-tools` (the mock upstream, which answers a
request offering tools with a call of the first one, arguments {"q": 1}).
"""

import json
import sys

import openai
import pydantic


def check(condition, message):
    """Fails the script (exit status 1, the message on stderr) unless `condition` holds."""
    if not condition:
        raise SystemExit(f"check failed: {message}")


base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

# Whole: the same answer as the chat request it is served as.
chat = client.chat.completions.create(
    model="sim-small",
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
)
raw = client.responses.with_raw_response.create(model="sim-small", instructions="be brief", input="hello there")
inference_id = raw.headers.get("x-switchyard-inference-id")
response = raw.parse()
check(response.id == f"resp_{inference_id}", (response.id, inference_id))
check(response.object == "response" and response.status == "completed", response)
check(response.output_text == chat.choices[0].message.content, (response.output_text, chat))
check(response.usage.output_tokens == chat.usage.completion_tokens, response.usage)
check(response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens, response.usage)

# Input items: a conversation with an earlier assistant turn.
items = client.responses.create(
    model="sim-small",
    input=[
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and again"},
    ],
    max_output_tokens=8,
)
check(items.output_text and items.usage.output_tokens <= 8, items)

# Streamed with the SDK's stream helper: the deltas add up to the final response's text, the
# events come in order and end with response.completed.
kinds, deltas = [], ""
with client.responses.stream(model="sim-small", instructions="be brief", input="hello there") as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas += event.delta
    final = stream.get_final_response()
check(kinds[:2] == ["response.created", "response.in_progress"], kinds)
check(kinds[-1] == "response.completed", kinds)
check(deltas == final.output_text == response.output_text, (deltas, final.output_text))
check(final.usage is not None and final.usage.output_tokens == response.usage.output_tokens, final.usage)

# The raw stream (stream=True) carries numbered events.
numbers = [event.sequence_number for event in client.responses.create(model="sim-small", input="count", stream=True)]
check(numbers == list(range(len(numbers))) and len(numbers) >= 6, numbers)

# Function tools, whole and streamed, and the tool's output sent back as an input item.
tools = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}]
called = client.responses.create(model="mock-tools", input="weather?", tools=tools)
calls = [item for item in called.output if item.type == "function_call"]
check(len(calls) == 1 and calls[0].name == "weather" and json.loads(calls[0].arguments) == {"q": 1}, called.output)
with client.responses.stream(model="mock-tools", input="weather?", tools=tools) as stream:
    streamed = stream.get_final_response()
streamed_calls = [item for item in streamed.output if item.type == "function_call"]
check(len(streamed_calls) == 1 and json.loads(streamed_calls[0].arguments) == {"q": 1}, streamed.output)
answered = client.responses.create(
    model="sim-small",
    input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ],
    tools=tools,
)
check(answered.output_text, answered.output)


# Structured output through the SDK's parse helper.
class Weather(pydantic.BaseModel):
    city: str
    degrees: int


parsed = client.responses.parse(model="sim-small", input="weather in Paris?", text_format=Weather)
check(isinstance(parsed.output_parsed, Weather), parsed.output_text)

# What cannot be served is refused with the reason.
try:
    client.responses.create(model="sim-small", input="x", previous_response_id="resp_123")
    check(False, "previous_response_id was accepted")
except openai.BadRequestError as error:
    check("not stored" in str(error), error)

print("responses: all checks passed")
