"""`python -m maison_slack` runs the Slack bot."""

from maison_slack.slack.app import main

main()
