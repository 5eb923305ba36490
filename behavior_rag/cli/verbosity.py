"""How much the command says on stderr: our own progress bars and warnings always; library
chatter (transformers' "Loading weights" / GGUF conversion bars, Hugging Face Hub bars, numpy
``RuntimeWarning``s, other libraries' log lines) only with ``-v``, routed through logging.

* default: stderr carries our JSON errors, rich progress bars and ``behavior_rag`` warnings;
* ``-v``: INFO logs of every library (ours included) and Python warnings as log lines;
* ``-vv``: DEBUG.

Example:
    $ behavior-rag -v classify ...     # shows what loads and how long it takes
"""

from __future__ import annotations

import logging
import os
import sys

# read by tqdm, huggingface_hub and transformers when they are first imported
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
             "TOKENIZERS_PARALLELISM": "false"}
FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure(verbose: int) -> None:
    """Set up logging and the libraries' own switches for ``-v`` given ``verbose`` times."""
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.ERROR
    root = logging.getLogger()
    if not any(getattr(h, "_behavior_rag", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._behavior_rag = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("behavior_rag").setLevel(min(level, logging.WARNING))
    # Python warnings (numpy's "Mean of empty slice", libraries' deprecations) become log
    # records of "py.warnings": shown with -v, silent otherwise.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    if verbose:
        return
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    _quiet_imported()


def _quiet_imported() -> None:
    """The same switches for libraries already imported (the environment is read at import)."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
