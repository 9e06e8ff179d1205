"""``python -m tri24es.machines [PATH]``: rewrite docs/machines.md from the tables."""

from __future__ import annotations

import sys
from pathlib import Path

from tri24es.machines.base import render_doc

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "machines.md"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DOC_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_doc(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
