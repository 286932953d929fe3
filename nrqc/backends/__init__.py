"""Back ends: how a build for a target is produced, checked, run and measured.

One module per back end, chosen by the type of the target's `BackendSpec`
(nrqc.targets.description), never by a name: `backend_for(target)` when compiling,
`backend_of_manifest(manifest)` for a written artifact.
"""
from __future__ import annotations

from nrqc.backends.bare_metal import BareMetalBackend
from nrqc.backends.base import Backend
from nrqc.backends.cross import CrossLibraryBackend
from nrqc.backends.host import HostLibraryBackend
from nrqc.manifest import target_of
from nrqc.targets import BareMetalC, CrossLibrary, HostLibrary, TargetDescription

BACKENDS: dict[type, type[Backend]] = {
    HostLibrary: HostLibraryBackend,
    CrossLibrary: CrossLibraryBackend,
    BareMetalC: BareMetalBackend,
}


def backend_for(target: TargetDescription) -> Backend:
    return BACKENDS[type(target.backend)](target)


def backend_of_manifest(manifest: dict) -> Backend:
    """The back end of a written artifact, from the target its manifest names."""
    return backend_for(target_of(manifest))


__all__ = ["Backend", "BACKENDS", "backend_for", "backend_of_manifest"]
