"""The command-line tail every benchmark shares: its parser (with ``--json PATH``) and its report."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict, Optional


def parser(doc: Optional[str]) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of the script's docstring, with ``--json PATH``."""
    made = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    made.add_argument("--json", metavar="PATH", help="write the result here, as JSON")
    return made


def report(
    result: Dict[str, Any], print_table: Callable[[Dict[str, Any]], None], path: Optional[str]
) -> Dict[str, Any]:
    """Print ``result``'s table, write it to ``path`` (``--json``) when given, and return it."""
    print_table(result)
    if path:
        with open(path, "w") as handle:
            json.dump(result, handle, indent=1)
    return result
