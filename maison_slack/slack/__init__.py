"""The Slack bot: Bolt listeners, live replies, sessions and the idle reaper.

It talks to sandboxes only through the Maison core, never through Daytona's API.
"""
