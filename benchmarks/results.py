"""How every benchmark records its numbers: ``--json PATH`` written whole or
not at all, so a time limit that kills a script mid-write (benchmarks/
gpu_session.sh runs each part under one) leaves the previous file intact."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str | None, document: Any) -> None:
  """Writes ``document`` to ``path`` atomically (nothing when ``path`` is
  empty or None): a temporary file beside it, then ``os.replace``."""
  if not path:
    return
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(document, f, indent=2)
  os.replace(path + ".tmp", path)
