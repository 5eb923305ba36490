"""``python -m behavior_rag.cli``: the same command as ``behavior-rag``."""

from behavior_rag.cli.app import main

main()
