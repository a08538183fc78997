"""Files attached to a message, copied from Slack into the thread's sandbox."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from maison_slack.core.sandbox import MaisonSandbox

MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
TOO_BIG_ATTACHMENT = f"it is over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB limit for attachments"


class Attachments:
    """Downloads attachments with one shared HTTP session (with timeouts) and writes them into
    `uploads/` in the sandbox."""

    def __init__(self, bot_token: str) -> None:
        self._bot_token = bot_token
        self._http: aiohttp.ClientSession | None = None

    async def copy(self, file: dict[str, Any], sandbox: MaisonSandbox, *, taken: list[str]) -> str:
        """Copy one attachment, keeping its name (any script) and never overwriting another file
        of the same prompt with the same name. Raises ValueError with a reason people can read."""
        url = file.get("url_private_download") or file.get("url_private")
        if not url:
            raise ValueError("Slack gave no download link for it")
        if (file.get("size") or 0) > MAX_ATTACHMENT_BYTES:
            raise ValueError(TOO_BIG_ATTACHMENT)
        name = re.sub(r"[^\w.() +-]+", "_", file.get("name") or "").strip("._ ")[:120] or file.get("id") or "file"
        path = f"uploads/{name}"
        if path in taken:
            stem, dot, suffix = name.rpartition(".")
            path = f"uploads/{stem}-{file.get('id')}.{suffix}" if dot and stem else f"uploads/{name}-{file.get('id')}"
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300, sock_connect=10, sock_read=60))
        data = bytearray()
        async with self._http.get(url, headers={"Authorization": f"Bearer {self._bot_token}"}) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(1 << 16):  # capped: never more than the limit
                data += chunk
                if len(data) > MAX_ATTACHMENT_BYTES:
                    raise ValueError(TOO_BIG_ATTACHMENT)
        await sandbox.write_file(path, bytes(data))
        return path

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
