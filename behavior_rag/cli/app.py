"""The ``behavior-rag`` command: one module per command group, registered here. JSON on stdout
by default (``--human`` for people); errors are JSON on stderr with exit code 2. Libraries'
chatter (progress bars, warnings, log lines) reaches stderr only with ``-v``
(:mod:`behavior_rag.cli.verbosity`).

Example:
    $ behavior-rag --help
    $ python -m behavior_rag.cli --help
"""

from __future__ import annotations

import json
import sys

import click
import typer
from pydantic import ValidationError

from behavior_rag.cli.batch import batch_app
from behavior_rag.cli.classify import classify_cmd
from behavior_rag.cli.demo import demo_cmd
from behavior_rag.cli.discover import discover_cmd, profile_cmd
from behavior_rag.cli.eval import eval_cmd, score_cmd, split_cmd
from behavior_rag.cli.finetune import finetune_cmd
from behavior_rag.cli.fit import fit_cmd
from behavior_rag.cli.index import index_app, similar_cmd
from behavior_rag.cli.ingest import ingest_cmd, render_cmd, synth_cmd
from behavior_rag.cli.labels import label_cmd, labels_app
from behavior_rag.cli.live import live_cmd
from behavior_rag.cli.plugins import plugins_cmd
from behavior_rag.cli.serve import serve_cmd
from behavior_rag.cli.tune import embed_app, reembed_cmd
from behavior_rag.cli.verbosity import configure
from behavior_rag.errors import BehaviorRagError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Recognise and explain e-commerce shopper behaviour.")


@app.callback()
def _options(verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="Show library logs, progress bars and warnings "
        "(INFO; -vv: DEBUG). Give it before the command: behavior-rag -v classify ...")) -> None:
    configure(verbose)


app.command("ingest")(ingest_cmd)
app.command("render")(render_cmd)
app.command("synth")(synth_cmd)
index_app.command("reembed")(reembed_cmd)
app.add_typer(index_app, name="index")
app.add_typer(embed_app, name="embed")
app.command("similar")(similar_cmd)
app.command("fit")(fit_cmd)
app.add_typer(labels_app, name="labels")
app.command("classify")(classify_cmd)
app.command("label")(label_cmd)
app.command("eval")(eval_cmd)
app.command("split")(split_cmd)
app.command("score")(score_cmd)
app.command("discover")(discover_cmd)
app.command("profile")(profile_cmd)
app.command("finetune")(finetune_cmd)
app.command("serve")(serve_cmd)
app.command("live")(live_cmd)
app.command("demo")(demo_cmd)
app.command("plugins")(plugins_cmd)
app.add_typer(batch_app, name="batch")


def setting_error(e: ValidationError) -> ConfigError:
    """A pydantic error on a settings section as a ConfigError naming ``section.field``."""
    first = e.errors()[0]
    section = e.title.removesuffix("Settings").lower()
    field = ".".join(str(x) for x in (section, *first["loc"]) if x != "")
    return ConfigError(first["msg"].removeprefix("Value error, "), field=field,
                       value=str(first.get("input"))[:200])


def main() -> None:
    try:
        app(standalone_mode=False)
    except BehaviorRagError as e:
        sys.stderr.write(json.dumps(e.to_dict(), ensure_ascii=False, default=str) + "\n")
        sys.exit(2)
    except ValidationError as e:  # a setting given on the command line (e.g. --llm NAME)
        sys.stderr.write(json.dumps(setting_error(e).to_dict(), ensure_ascii=False,
                                    default=str) + "\n")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except click.exceptions.ClickException as e:  # usage errors carry their own exit code
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
