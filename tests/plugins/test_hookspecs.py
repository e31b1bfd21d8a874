"""Every hook is typed, documented in its spec and in docs/plugins.md (as datasette does)."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

from alara import hookspecs
from alara.interfaces import KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("alara_"))


def test_one_register_hook_per_kind():
    assert HOOKS == sorted(f"alara_register_{kind}" for kind in KINDS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed_and_documented(name):
    fn = getattr(hookspecs, name)
    assert hasattr(fn, "alara_spec"), f"{name} is not marked with @hookspec"
    sig = inspect.signature(fn)
    assert list(sig.parameters) == ["registry"]
    assert sig.parameters["registry"].annotation != inspect.Parameter.empty
    assert sig.return_annotation in (None, "None")
    assert fn.__doc__ and "registry.add" in fn.__doc__
    kind = name.removeprefix("alara_register_")
    hints = typing.get_type_hints(fn, localns={**vars(__import__("alara.registry", fromlist=["x"])),
                                               **vars(__import__("alara.interfaces", fromlist=["x"]))})
    assert typing.get_args(hints["registry"]) == (KINDS[kind],)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_in_the_docs(name):
    headings = re.findall(r"^### (\w+)\(", DOC.read_text(), flags=re.M)
    assert name in headings, f"docs/plugins.md has no '### {name}(registry)' section"


def test_the_docs_example_runs():
    """The component and hook in docs/plugins.md work as written."""
    import torch

    from alara.geometry import ImageGrid, ParallelBeam, uniform_angles
    from alara.interfaces import Reconstructor
    from alara.registry import Registry

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict = {}
    exec(blocks[0] + blocks[1], namespace)
    reg = Registry("reconstructor", Reconstructor)
    namespace["alara_register_reconstructor"](reg)
    rec = reg.create("backprojection", {"scale": 2.0})
    g = ParallelBeam(ImageGrid.square(8, 0.1), uniform_angles(4), 12, 0.012)
    assert rec(torch.ones(1, 1, 4, 12), g).shape == (1, 1, 8, 8)
