"""Each tool as data: its name, description, JSON schemas and the coroutine to call.

A framework that takes tools as (name, description, schema, function) — the
OpenAI Agents SDK's ``FunctionTool``, LangChain's ``StructuredTool``, a
hand-written agent loop — wraps a :class:`ToolSpec` in a line. The schemas are
derived from the coroutine's signature the way the MCP SDK derives them
(a pydantic model of the parameters), so the MCP server, built from the same
coroutines, lists the same schemas (tests/mcp checks they agree).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, create_model


@dataclass(frozen=True)
class ToolSpec:
    """One tool: call it as ``await spec.fn(**arguments)``."""

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    fn: Callable[..., Awaitable[Any]]

    async def __call__(self, **arguments: Any) -> Any:
        return await self.fn(**arguments)


def input_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema of ``fn``'s keyword arguments (as the MCP SDK derives it: one pydantic model)."""
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn, eval_str=True).parameters.values():
        annotation = param.annotation if param.annotation is not inspect.Parameter.empty else Any
        fields[param.name] = (annotation, param.default) if param.default is not inspect.Parameter.empty else annotation
    model = create_model(f"{fn.__name__}Arguments", **fields)
    schema: dict[str, Any] = model.model_json_schema(by_alias=True)
    return schema


def output_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema of what ``fn`` returns (its ``TypedDict``)."""
    return TypeAdapter(inspect.signature(fn, eval_str=True).return_annotation).json_schema()


def spec_of(fn: Callable[..., Awaitable[Any]]) -> ToolSpec:
    return ToolSpec(
        name=fn.__name__,
        description=inspect.cleandoc(fn.__doc__ or ""),
        input_schema=input_schema(fn),
        output_schema=output_schema(fn),
        fn=fn,
    )
