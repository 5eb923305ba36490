"""The ``behavior-rag`` command line: :mod:`behavior_rag.cli.app` registers one module per
command group (ingest, index, classify, discover, eval, finetune, serve, demo).

Example:
    $ behavior-rag --help
"""

from behavior_rag.cli.app import app, main

__all__ = ["app", "main"]
