"""An mcp 1.x client session against a Streamable HTTP URL (run with the 1.x venv's Python).

    python tests/support/mcp_client1.py URL [KEY]

Lists every tool (following cursors), calls `<server>__add` for each server prefix it sees and
`<first server>__fail`, and prints what it got as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def main(url: str, key: str | None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with streamablehttp_client(url, headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            names, cursor = [], None
            while True:
                page = await session.list_tools(cursor=cursor)
                names.extend(t.name for t in page.tools)
                cursor = page.nextCursor
                if not cursor:
                    break
            servers = sorted({n.split("__")[0] for n in names})
            calls = {}
            for server in servers:
                result = await session.call_tool(f"{server}__add", {"a": 20, "b": 22})
                calls[server] = [result.isError, [c.text for c in result.content]]
            failed = await session.call_tool(f"{servers[0]}__fail", {})
            return {"version": init.protocolVersion, "names": sorted(names), "calls": calls,
                    "failed": failed.isError}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))))
