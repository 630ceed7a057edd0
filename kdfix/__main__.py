"""``python -m kdfix``: the same as the ``kdfix`` command."""

from kdfix.cli import main

main()
