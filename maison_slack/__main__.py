"""`python -m maison_slack` is `maison-slack`: the bot, or `python -m maison_slack doctor`."""

from maison_slack.slack.app import main

main()
