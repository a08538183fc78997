"""The Maison core: Claude Code in a Daytona sandbox. Knows nothing of Slack."""
