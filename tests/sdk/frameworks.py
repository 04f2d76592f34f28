"""Agent frameworks against the simulated models (issue 19, item 6): the openai SDK's `parse`
helpers (structured output from a Pydantic model, strict function tools) and LangChain's
`ChatOpenAI` (`with_structured_output` by JSON Schema and by function calling, `bind_tools` with
a whole agent loop, streamed tool calls, async batches).

python3 tests/sdk/frameworks.py BASE_URL API_KEY   (exits non-zero on the first failed check)

Every check raises through `check`, never a bare `assert`, which `python -O` strips.
"""

import asyncio
import sys
from typing import Literal, Optional

import openai
from langchain_core.messages import HumanMessage
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field


def check(condition, message):
    """Fails the script (exit status 1, the message on stderr) unless `condition` holds."""
    if not condition:
        raise SystemExit(f"check failed: {message}")


base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


class Step(BaseModel):
    explanation: str
    output: str


class MathReasoning(BaseModel):
    steps: list[Step]
    final_answer: str
    mood: Literal["calm", "busy"]
    note: Optional[str]
    confidence: float = Field(ge=0, le=1)


class GetWeather(BaseModel):
    """Current weather for a city."""

    city: str
    days: int = Field(ge=1, le=14)


question = [{"role": "user", "content": "Solve 8x + 7 = -23 step by step."}]

# The SDK's parse helper: the answer validates against the Pydantic model.
completion = client.chat.completions.parse(model="sim-small", messages=question, response_format=MathReasoning)
parsed = completion.choices[0].message.parsed
check(isinstance(parsed, MathReasoning), completion)
check(0 <= parsed.confidence <= 1, parsed)
again = client.chat.completions.parse(model="sim-small", messages=question, response_format=MathReasoning)
check(again.choices[0].message.parsed == parsed, "the same request gets the same value")

# The same, streamed: the pieces make the same value.
with client.chat.completions.stream(model="sim-small", messages=question, response_format=MathReasoning) as stream:
    for _ in stream:
        pass
    final = stream.get_final_completion()
check(final.choices[0].message.parsed == parsed, final)

# Strict function tools: the arguments parse into the tool's model.
completion = client.chat.completions.parse(
    model="sim-large",
    messages=[{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}],
    tools=[openai.pydantic_function_tool(GetWeather)],
)
message = completion.choices[0].message
check(completion.choices[0].finish_reason == "tool_calls", completion)
check(message.tool_calls and message.tool_calls[0].function.name == "GetWeather", message)
arguments = message.tool_calls[0].function.parsed_arguments
check(isinstance(arguments, GetWeather) and arguments.days == 3, arguments)

# LangChain: structured output by JSON Schema (its default) and by function calling.
llm = ChatOpenAI(model="sim-small", base_url=f"{base}/v1", api_key=key, max_retries=0)
for method in ["json_schema", "function_calling"]:
    result = llm.with_structured_output(MathReasoning, method=method).invoke("Solve 8x + 7 = -23.")
    check(isinstance(result, MathReasoning), (method, result))


def product(a: int, b: int) -> int:
    return a * b


# The description is given, not read from a docstring: PYTHONOPTIMIZE=2 strips docstrings.
multiply = StructuredTool.from_function(func=product, name="multiply", description="Multiply two integers.")


# An agent loop: the model calls the tool with the prompt's numbers, gets its result and
# answers from it.
agent = llm.bind_tools([multiply])
ask = HumanMessage("What is 6 multiplied by 7? Use the multiply tool.")
first = agent.invoke([ask])
check(first.tool_calls and first.tool_calls[0]["name"] == "multiply", first)
check(first.tool_calls[0]["args"] == {"a": 6, "b": 7}, first.tool_calls)
result = multiply.invoke(first.tool_calls[0])
answer = agent.invoke([ask, first, result])
check(not answer.tool_calls and "42" in answer.content, answer)

# The same call, streamed: the chunks add up to the same tool call.
chunks = list(agent.stream([ask]))
merged = chunks[0]
for chunk in chunks[1:]:
    merged = merged + chunk
check(merged.tool_calls == first.tool_calls, (merged.tool_calls, first.tool_calls))

# Async batches of structured output.
structured = llm.with_structured_output(MathReasoning)
batch = asyncio.run(structured.abatch([f"Solve {n}x = {n * 3}." for n in range(1, 5)]))
check(len(batch) == 4 and all(isinstance(b, MathReasoning) for b in batch), batch)

print("all checks passed")
