"""``python -m marketlake``: the same CLI as the ``marketlake`` command."""

from marketlake.cli.main import main

main()
