"""Hook specifications of the ``alara`` plugin system (pluggy project name ``"alara"``).

One hook per component kind, in the register-a-class style: alara calls each hook with
the registry of that kind, and the plugin adds its classes::

    from alara.hookspecs import hookimpl

    @hookimpl
    def alara_register_reconstructor(registry):
        registry.add(MyReconstructor)

Every hook is documented in docs/plugins.md (a test checks that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # the registry imports this module; avoid a cycle at run time
    from alara.interfaces import DosePolicy, IQMetric, Prior, Reconstructor, Simulator
    from alara.registry import Registry

__all__ = ["PROJECT_NAME", "hookspec", "hookimpl"]

#: pluggy project name, also the entry-point group third-party plugins publish under.
PROJECT_NAME = "alara"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate a plugin's hook implementations with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def alara_register_prior(registry: "Registry[Prior]") -> None:
    """Register :class:`alara.interfaces.Prior` subclasses with ``registry.add(cls)``.

    A prior acquires what a dose policy may know before the scan (pre-scan, scouts, prior
    exam) and reports the dose it spent.
    """


@hookspec
def alara_register_dose_policy(registry: "Registry[DosePolicy]") -> None:
    """Register :class:`alara.interfaces.DosePolicy` subclasses with ``registry.add(cls)``.

    A dose policy maps prior information to photons per view ``n0`` [B, views].
    """


@hookspec
def alara_register_simulator(registry: "Registry[Simulator]") -> None:
    """Register :class:`alara.interfaces.Simulator` subclasses with ``registry.add(cls)``.

    A simulator turns noiseless line integrals and ``n0`` into a noisy post-log sinogram.
    """


@hookspec
def alara_register_reconstructor(registry: "Registry[Reconstructor]") -> None:
    """Register :class:`alara.interfaces.Reconstructor` subclasses with ``registry.add(cls)``.

    A reconstructor maps a post-log sinogram and its geometry to an image.
    """


@hookspec
def alara_register_iq_metric(registry: "Registry[IQMetric]") -> None:
    """Register :class:`alara.interfaces.IQMetric` subclasses with ``registry.add(cls)``.

    A metric returns one unreduced value per image and says whether higher is better.
    """
