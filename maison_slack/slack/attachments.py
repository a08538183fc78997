"""Files attached to a message, copied from Slack into the thread's sandbox."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from yarl import URL

from maison_slack.core.sandbox import MaisonSandbox

MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
TOO_BIG_ATTACHMENT = f"it is over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB limit for attachments"

#: Slack's own domains (and their subdomains, files.slack.com among them): commercial and GovSlack.
SLACK_DOMAINS = ("slack.com", "slack-gov.com")


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.host or "").lower(), url.port  # yarl fills in the scheme's default port


class Attachments:
    """Downloads attachments with one shared HTTP session (with timeouts) and writes them into
    `uploads/` in the sandbox."""

    def __init__(self, bot_token: str, slack_api_url: str) -> None:
        self._bot_token = bot_token
        self._api_origin = _origin(URL(slack_api_url))
        self._http: aiohttp.ClientSession | None = None

    def is_slack(self, url: URL) -> bool:
        """Whether `url` is Slack's to receive the bot token: https on a Slack domain, or the
        origin the bot's Web API calls go to (`SLACK_API_URL`, a Slack double in tests).

        A file's link can name any host: an external file's `url_private` is its remote URL
        (../shared/reference/slack.md §17), and the token must never go there. Redirects are
        safe: aiohttp drops `Authorization` when one leaves the origin.
        """
        scheme, host, _ = origin = _origin(url)
        on_slack = scheme == "https" and any(host == d or host.endswith("." + d) for d in SLACK_DOMAINS)
        return on_slack or origin == self._api_origin

    async def copy(self, file: dict[str, Any], sandbox: MaisonSandbox, *, taken: list[str]) -> str:
        """Copy one attachment, keeping its name (any script) and never overwriting another file
        of the same prompt with the same name. Raises ValueError with a reason people can read."""
        link = file.get("url_private_download") or file.get("url_private")
        if not link:
            raise ValueError("Slack gave no download link for it")
        try:
            url = URL(link)
        except ValueError:
            raise ValueError("its download link is not a valid URL") from None
        if file.get("is_external") or not self.is_slack(url):
            raise ValueError(f"it is not stored on Slack (its link points to {url.host or 'nowhere'}), and the bot "
                             "sends its Slack token only to Slack")
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
