"""``python -m retrodistill``: the same as the ``retrodistill`` command."""

from retrodistill.cli.app import main

main()
