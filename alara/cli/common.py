"""Helpers shared by the commands that train and evaluate: run folders, data, environment."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

from alara.runs import environment, open_split, write_run_files

__all__ = ["environment", "open_split", "write_run_files", "add_set_argument"]


def add_set_argument(parser: Any) -> None:
    """The ``--set section.key=value`` option (repeatable)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 --set data.root=DIR "
                             "(values are TOML: numbers, true/false, \"strings\", [lists]); repeatable")


