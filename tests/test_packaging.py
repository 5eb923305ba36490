"""An installed wheel carries prompts/ and the web view's files, so it finds its templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_prompts_inside_the_package(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "behavior_rag/_prompts/taxonomies/personas.yaml" in names
    # the web view's templates and stylesheet travel inside the package too
    assert {"behavior_rag/service/ui/templates/session.html",
            "behavior_rag/service/ui/static/ui.css"} <= set(names)
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "behavior-rag = behavior_rag.cli:main" in zipfile.ZipFile(wheel).read(ep).decode()
