"""Verb groups of the ``armor-rx`` command, one module each.

A module here defines ``register(verbs, common) -> dict[str, handler]``: it adds
its sub-parsers to ``verbs`` (with ``parents=[common]`` so ``--state-dir`` and
``--repo`` work) and returns the handlers by verb name. A handler takes the
parsed arguments and returns the exit code; it raises ``ArmorError`` for
anything the user can fix (the CLI prints it as one line).
"""
