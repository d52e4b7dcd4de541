"""A real MCP server for clawgate's tests, built with the official Python SDK (`mcp`, PyPI).

    python server.py --port P [--name NAME] [--stateless] [--json] [--host H]

Streamable HTTP transport at `/mcp`. `--json` answers POSTs with JSON instead of an SSE stream
(the SDK's `json_response`); `--stateless` runs without protocol sessions (`stateless_http`).
`--port 0` lets the OS choose. Once the socket is bound the server prints one line to stdout,
`ready <port>`, and then serves.

Tools: search_web(query), list_repos(owner), create_issue(repo, title), delete_repo(repo); each
answers a short text naming the server. `GET /counts` answers JSON with how many times each
tool really ran on this server (a call the gateway refuses must leave its count unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

TOOLS = ("search_web", "list_repos", "create_issue", "delete_repo")


def build(name: str) -> MCPServer:
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
    args = parser.parse_args()

    app = build(args.name).streamable_http_app(
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
