"""The LoDoPaB preset against the pipeline that made LoDoPaB (ODL + ASTRA)."""

import math

import numpy as np
import pytest
import torch

from alara import ops
from alara.geometry import lodopab

pytestmark = pytest.mark.peers


def _image(n, seed=0):
    return np.random.default_rng(seed).random((n, n)).astype(np.float32)


@pytest.mark.parametrize("n, views, bins", [(64, 50, 92), (362, 1000, 513)])
def test_lodopab_preset_matches_odl(n, views, bins):
    odl = pytest.importorskip("odl", reason="odl not installed (pip install -e .[test])")
    pytest.importorskip("astra", reason="astra-toolbox not installed: ODL's backend")
    from odl.applications import tomo

    space = odl.uniform_discr([-0.13, -0.13], [0.13, 0.13], (n, n), dtype="float32")
    ray_trafo = tomo.RayTransform(space, tomo.parallel_beam_geometry(space, views, bins))
    x = _image(n)
    reference = np.asarray(ray_trafo(x).data)
    ours = ops.project(torch.from_numpy(x)[None, None], lodopab(views, bins, n),
                       backend="torch")[0, 0].numpy()
    rel = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    # measured 3.5e-6 (64 px) and 5.2e-5 (362 px): float32 rounding in ASTRA
    assert rel < 2e-4


def test_lodopab_preset_matches_astra_linear_shifted():
    astra = pytest.importorskip("astra", reason="astra-toolbox not installed")
    n, views, bins = 96, 60, 137
    g = lodopab(views, bins, n)
    vol = astra.create_vol_geom(n, n, -0.13, 0.13, -0.13, 0.13)
    x = _image(n, 1)
    results = {}
    for shift in (-math.pi / 2, 0.0):
        proj = astra.create_proj_geom("parallel", g.bin_spacing, bins,
                                      g.angles.numpy() + shift)
        pid = astra.create_projector("linear", proj, vol)
        sid, sino = astra.create_sino(x, pid)
        astra.data2d.delete(sid)
        astra.projector.delete(pid)
        results[shift] = sino
    ours = ops.project(torch.from_numpy(x)[None, None], g, backend="torch")[0, 0].numpy()

    def rel(ref):
        return np.linalg.norm(ours - ref) / np.linalg.norm(ref)

    assert rel(results[-math.pi / 2]) < 2e-4
    assert rel(results[0.0]) > 0.05  # the unshifted convention is a different transform


def test_lodopab_observations_reconstruct_upright():
    """A LoDoPaB-like pipeline: ODL projects an asymmetric image, alara's FBP restores it."""
    odl = pytest.importorskip("odl", reason="odl not installed")
    pytest.importorskip("astra", reason="astra-toolbox not installed")
    from odl.applications import tomo

    n, views, bins = 64, 120, 92
    x = np.zeros((n, n), np.float32)
    x[10:20, 30:50] = 1.0  # an off-centre bar: any flip or transposition moves it
    space = odl.uniform_discr([-0.13, -0.13], [0.13, 0.13], (n, n), dtype="float32")
    sino = np.asarray(tomo.RayTransform(space, tomo.parallel_beam_geometry(space, views, bins))(x).data)
    rec = ops.fbp(torch.from_numpy(sino)[None, None], lodopab(views, bins, n), "hann",
                  backend="torch")[0, 0]
    assert rec[10:20, 30:50].mean() > 0.8
    assert rec[44:54, 30:50].abs().mean() < 0.1  # not flipped vertically
    assert rec[30:50, 10:20].abs().mean() < 0.1  # not transposed
