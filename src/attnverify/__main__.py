"""``python -m attnverify``: the same as the ``attnverify`` command."""

from attnverify.cli import main

main()
