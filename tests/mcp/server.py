"""A real MCP server for clawgate's tests, built with the official Python SDK (`mcp`, PyPI).

    python server.py --port P [--name NAME] [--stateless] [--json] [--extras] [--no-prompts] [--host H]

Streamable HTTP transport at `/mcp`. `--json` answers POSTs with JSON instead of an SSE stream
(the SDK's `json_response`); `--stateless` runs without protocol sessions (`stateless_http`).
`--port 0` lets the OS choose. Once the socket is bound the server prints one line to stdout,
`ready <port>`, and then serves.

Tools: search_web(query), list_repos(owner), create_issue(repo, title), delete_repo(repo); each
answers a short text naming the server. `--extras` adds what the federation tests read (the
plain tools above stay as they are):

- tool whoami(): the request headers the server received that show who is calling and how
  (JSON: x-agent-id, x-request-id, traceparent, x-forwarded-for, authorization, x-api-key,
  cookie, x-route-tag; null for each one absent);
- tool count_slowly(n, pause): reports progress n times, `pause` seconds apart, then answers;
- resources NAME://readme and memo://shared (the same URI on every server), the template
  NAME://issues/{number}, and the prompt summarize(topic); each answer names the server.

`--no-prompts` takes the prompt methods away (the server then offers no `prompts` capability
and answers their methods -32601), for a federation whose servers offer different things.

`GET /counts` answers JSON with how many times each
tool really ran on this server (a call the gateway refuses must leave its count unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

TOOLS = ("search_web", "list_repos", "create_issue", "delete_repo")


SEEN_HEADERS = (
    "x-agent-id",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "authorization",
    "x-api-key",
    "cookie",
    "x-route-tag",
)


def add_extras(server: MCPServer, name: str) -> None:
    @server.tool()
    def whoami(ctx: Context) -> str:
        """The identity and trace headers this request came with."""
        headers = ctx.headers or {}
        return json.dumps({h: headers.get(h) for h in SEEN_HEADERS})

    @server.tool()
    async def count_slowly(n: int, pause: float, ctx: Context) -> str:
        """Counts to n, reporting progress at each step."""
        for i in range(n):
            await ctx.report_progress(i + 1, n, f"step {i + 1}")
            await asyncio.sleep(pause)
        return f"{name}: counted to {n}"

    @server.resource(f"{name}://readme", name="readme", mime_type="text/plain")
    def readme() -> str:
        return f"{name}: the readme"

    @server.resource("memo://shared", name="memo", mime_type="text/plain")
    def memo() -> str:
        return f"{name}: the shared memo"

    @server.resource(f"{name}://issues/{{number}}", name="issue", mime_type="text/plain")
    def issue(number: str) -> str:
        return f"{name}: issue {number}"

    @server.prompt()
    def summarize(topic: str) -> str:
        """Asks for a summary."""
        return f"{name}: summarize {topic}"


def build(name: str, extras: bool = False) -> MCPServer:
    server: MCPServer = MCPServer(name, log_level="WARNING")
    counts = {tool: 0 for tool in TOOLS}

    @server.tool()
    def search_web(query: str) -> str:
        """Searches the web."""
        counts["search_web"] += 1
        return f"{name}: results for {query}"

    @server.tool()
    def list_repos(owner: str) -> str:
        """Lists an owner's repositories."""
        counts["list_repos"] += 1
        return f"{name}: repos of {owner}: alpha, beta"

    @server.tool()
    def create_issue(repo: str, title: str) -> str:
        """Opens an issue."""
        counts["create_issue"] += 1
        return f"{name}: created issue '{title}' in {repo}"

    @server.tool()
    def delete_repo(repo: str) -> str:
        """Deletes a repository."""
        counts["delete_repo"] += 1
        return f"{name}: deleted {repo}"

    if extras:
        add_extras(server, name)

    @server.custom_route("/counts", methods=["GET"])
    async def get_counts(_request: Request) -> Response:
        return JSONResponse(counts)

    return server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="mcp-test")
    parser.add_argument("--stateless", action="store_true", help="stateless_http (no sessions)")
    parser.add_argument("--json", action="store_true", help="JSON answers instead of SSE")
    parser.add_argument("--extras", action="store_true", help="whoami, count_slowly, resources, prompts")
    parser.add_argument("--no-prompts", action="store_true", help="no prompt methods, no prompts capability")
    args = parser.parse_args()

    server = build(args.name, args.extras)
    if args.no_prompts:
        # The SDK registers every method and derives its capabilities from what is registered.
        for method in ("prompts/list", "prompts/get"):
            server._lowlevel_server._request_handlers.pop(method, None)  # noqa: SLF001
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.json,
        stateless_http=args.stateless,
        # Requests arrive through the gateway with whatever Host it sends; no DNS-rebinding check.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=args.host,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    # The socket is bound and listening: connections made from now on wait in its backlog.
    print(f"ready {sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
