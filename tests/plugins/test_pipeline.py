"""Every prior with every policy, the simulator and the reconstructors on every geometry kind
(parallel, flat and curved fan; non-square grid): shapes, positivity, budgets."""

from __future__ import annotations

import pytest
import torch

from functools import lru_cache

from alara import ops
from alara.config import load_components, tomllib
from alara.interfaces import relative_dose

CONFIG = """
[prior]
name = "{prior}"

[dose_policy]
name = "{policy}"
params = {{ budget = 0.4 {extra} }}

[simulator]
name = "poisson"

[reconstructor]
name = "fbp"

[iq_metric]
name = "ssim"
"""


@lru_cache(maxsize=None)
def components(prior: str, policy: str, extra: str) -> dict:
    """Built once per combination (ResNet-18 takes a while to initialise)."""
    return load_components(tomllib.loads(CONFIG.format(prior=prior, policy=policy, extra=extra)))


@pytest.mark.parametrize("policy, extra", [("fixed", ""), ("tcm", ""),
                                           ("resnet18", ', mode = "angular", input_size = 32')])
@pytest.mark.parametrize("prior", ["prescan", "scouts", "prior_exam"])
def test_every_prior_and_policy_on_every_geometry(geometry, prior, policy, extra):
    comps = components(prior, policy, extra)
    x = torch.rand(2, 1, *geometry.grid.shape, dtype=torch.float64) * 0.3
    info = comps["prior"](x, geometry)
    comps["dose_policy"].eval()
    n0 = comps["dose_policy"](info, geometry)
    assert n0.shape == (2, geometry.n_views) and bool((n0 > 0).all())
    assert torch.allclose(relative_dose(n0, info.dose).double(), torch.full((2,), 0.4, dtype=torch.float64), rtol=1e-5)
    y = comps["simulator"].eval()(ops.project(x, geometry), n0.detach().double())
    x_hat = comps["reconstructor"](y, geometry)
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()
    q = comps["iq_metric"](x_hat, x)
    assert q.shape == (2,) and torch.isfinite(q).all()
