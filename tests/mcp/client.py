"""A real MCP client for clawgate's tests: the official Python SDK's (`mcp`, PyPI) Streamable HTTP
transport and `ClientSession`.

    python client.py URL [-H name:value]... [--modern] [--timeout S] STEP...

Opens one session (legacy `initialize` handshake, which gives an `Mcp-Session-Id` when the server
keeps sessions; `--modern`: the 2026-07-28 `server/discover` instead), runs the steps in order in
that session and prints one JSON line per step:

    list                   {"tools": [names...]}
    call NAME JSON_ARGS    {"is_error": bool, "text": "...", "error": null | {"code", "message", "data"}}
                           (a JSON-RPC error answer sets "error" and "is_error": true)
    stream NAME JSON_ARGS  as call, with a progress callback: also "progress": [{"progress",
                           "message", "at"}...] and "took", seconds since the call was sent
    resources              {"resources": [{"name", "uri"}...], "templates": [{"name", "uri_template"}...]}
    read URI               {"text": "...", "error": null | {...}} (the text contents, joined)
    prompts                {"prompts": [names...]}
    prompt NAME JSON_ARGS  {"text": "...", "error": null | {...}} (the messages' text, joined)
    info                   {"session_id": ..., "protocol_version": ..., "server": ...,
                            "capabilities": {...} (what initialize or discover offered),
                            "responses": [{"method", "status", "content_type", "session_id"}...]}
                           (every HTTP answer so far: shows SSE vs JSON and the session header)

Exit status 2 with one line on stderr when the server cannot be reached or the session fails
(naming the HTTP answers so far, e.g. `HTTP answers: POST 401`); 1 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Awaitable, Callable

import anyio
import httpx2
from mcp import MCPError
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


def parse_steps(words: list[str]) -> list[tuple[str, ...]]:
    steps: list[tuple[str, ...]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("list", "info", "resources", "prompts"):
            steps.append((word,))
            i += 1
        elif word == "read":
            if i + 1 >= len(words):
                raise ValueError("read needs URI")
            steps.append(("read", words[i + 1]))
            i += 2
        elif word in ("call", "stream", "prompt"):
            if i + 2 >= len(words):
                raise ValueError(f"{word} needs NAME and JSON_ARGS")
            json.loads(words[i + 2])  # refuse bad JSON before connecting
            steps.append((word, words[i + 1], words[i + 2]))
            i += 3
        else:
            raise ValueError(
                f"unknown step {word!r} (list, call|stream|prompt NAME JSON_ARGS, resources, read URI, prompts, info)"
            )
    return steps


def text_of(content: list[Any]) -> str:
    return "\n".join(getattr(c, "text", "") for c in content if getattr(c, "type", "") == "text")


async def answered(ask: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """The step's output, or its JSON-RPC error."""
    try:
        return {**(await ask()), "error": None}
    except MCPError as e:
        return {"is_error": True, "text": "", "error": {"code": e.code, "message": e.message, "data": e.data}}


async def step_out(session: ClientSession, step: tuple[str, ...]) -> dict[str, Any] | None:
    """The steps beyond list, call and info (None: not one of them)."""
    if step[0] == "stream":
        sent = time.monotonic()
        progress: list[dict[str, Any]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": done, "message": message, "at": time.monotonic() - sent})

        async def call() -> dict[str, Any]:
            result = await session.call_tool(step[1], json.loads(step[2]), progress_callback=on_progress)
            return {"is_error": bool(result.is_error), "text": text_of(result.content)}

        out = await answered(call)
        return {**out, "progress": progress, "took": time.monotonic() - sent}
    if step[0] == "resources":
        listed = await session.list_resources()
        templates = await session.list_resource_templates()
        return {
            "resources": [{"name": r.name, "uri": str(r.uri)} for r in listed.resources],
            "templates": [{"name": t.name, "uri_template": t.uri_template} for t in templates.resource_templates],
        }
    if step[0] == "read":

        async def read() -> dict[str, Any]:
            result = await session.read_resource(step[1])
            return {"text": "\n".join(getattr(c, "text", "") for c in result.contents)}

        return await answered(read)
    if step[0] == "prompts":
        listed = await session.list_prompts()
        return {"prompts": [p.name for p in listed.prompts]}
    if step[0] == "prompt":

        async def get() -> dict[str, Any]:
            result = await session.get_prompt(step[1], json.loads(step[2]))
            return {"text": "\n".join(text_of([m.content]) for m in result.messages)}

        return await answered(get)
    return None


async def run(args: argparse.Namespace, steps: list[tuple[str, ...]], responses: list[dict[str, Any]]) -> None:
    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            raise ValueError(f"header {h!r} is not name:value")
        headers[name.strip()] = value.strip()

    async def on_response(response: httpx2.Response) -> None:
        responses.append(
            {
                "method": response.request.method,
                "status": response.status_code,
                "content_type": response.headers.get("content-type", ""),
                "session_id": response.headers.get("mcp-session-id"),
            }
        )

    timeout = httpx2.Timeout(args.timeout)
    async with httpx2.AsyncClient(
        headers=headers, timeout=timeout, event_hooks={"response": [on_response]}
    ) as http:
        async with streamable_http_client(args.url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=args.timeout) as session:
                if args.modern:
                    await session.discover()
                else:
                    await session.initialize()
                version = session.protocol_version
                server = session.server_info.name if session.server_info else None
                for step in steps:
                    out: dict[str, Any] | None = await step_out(session, step)
                    if out is not None:
                        pass
                    elif step[0] == "list":
                        listed = await session.list_tools()
                        out = {"tools": [t.name for t in listed.tools]}
                    elif step[0] == "call":
                        try:
                            result = await session.call_tool(step[1], json.loads(step[2]))
                            out = {"is_error": bool(result.is_error), "text": text_of(result.content), "error": None}
                        except MCPError as e:
                            out = {
                                "is_error": True,
                                "text": "",
                                "error": {"code": e.code, "message": e.message, "data": e.data},
                            }
                    else:
                        sids = [r["session_id"] for r in responses if r["session_id"]]
                        offered = session.initialize_result or session.discover_result
                        caps = offered.capabilities.model_dump(by_alias=True, exclude_none=True) if offered else None
                        out = {
                            "session_id": sids[-1] if sids else None,
                            "protocol_version": version,
                            "server": server,
                            "capabilities": caps,
                            "responses": list(responses),
                        }
                    print(json.dumps(out), flush=True)


def leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("-H", "--header", action="append", default=[], help="name:value")
    parser.add_argument("--modern", action="store_true", help="server/discover instead of initialize")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("steps", nargs="*")
    args = parser.parse_intermixed_args()
    try:
        steps = parse_steps(args.steps)
    except ValueError as e:
        print(f"client: {e}", file=sys.stderr)
        return 1
    responses: list[dict[str, Any]] = []
    try:
        anyio.run(run, args, steps, responses)
    except BaseException as e:  # noqa: BLE001 (report, never a traceback)
        if isinstance(e, KeyboardInterrupt):
            raise
        why = "; ".join(
            f"{type(x).__name__}: {x}" + (f" (code {x.code})" if isinstance(x, MCPError) else "") for x in leaves(e)
        )
        http = ", ".join(f"{r['method']} {r['status']}" for r in responses)
        print(f"client: session with {args.url} failed: {why}; HTTP answers: {http or 'none'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
