"""The ``infosam`` command line: one module per command, each with ``main(argv) -> exit status``.

Nothing in the library imports from here; ``scripts/*.py`` are thin wrappers around these mains.
"""
