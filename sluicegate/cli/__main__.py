"""``python -m sluicegate.cli``: the same as the ``sluicegate`` console script."""

from sluicegate.cli import main

main()
