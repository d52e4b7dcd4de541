"""RFC 9728 discovery as the official Python SDK (`mcp`, PyPI) does it before its OAuth flow.

    python discover.py MCP_URL

Sends an `initialize` without a credential, reads the 401's `WWW-Authenticate` with the SDK's
`extract_resource_metadata_from_www_auth`, tries the SDK's ordered discovery URLs and validates
the first document with the SDK's `handle_protected_resource_response`. Prints one JSON line:
{"status", "www_authenticate", "resource_metadata", "tried", "metadata"} ("metadata": null when
no URL gave a document the SDK accepts).
"""

from __future__ import annotations

import json
import sys

import anyio
import httpx2
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    handle_protected_resource_response,
)

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "discover", "version": "1"},
    },
}


async def discover(url: str) -> dict:
    async with httpx2.AsyncClient(timeout=10) as http:
        headers = {"accept": "application/json, text/event-stream"}
        refused = await http.post(url, json=INITIALIZE, headers=headers)
        metadata_url = extract_resource_metadata_from_www_auth(refused)
        tried = []
        metadata = None
        for candidate in build_protected_resource_metadata_discovery_urls(metadata_url, url):
            tried.append(candidate)
            found = await handle_protected_resource_response(await http.get(candidate))
            if found is not None:
                metadata = found.model_dump(mode="json", exclude_none=True)
                break
        return {
            "status": refused.status_code,
            "www_authenticate": refused.headers.get("www-authenticate"),
            "resource_metadata": metadata_url,
            "tried": tried,
            "metadata": metadata,
        }


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 1
    print(json.dumps(anyio.run(discover, sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
