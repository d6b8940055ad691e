"""``python -m attnverify``: the same as the ``attnverify`` command."""

from attnverify.theory.cli import main

main()
