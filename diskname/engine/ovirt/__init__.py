"""oVirt's REST API v4, the part clients use to find a disk's logical name (SPEC §14).

Served beside the JSON API by the same engine, over the same resources
(:class:`..actions.Actions`), in oVirt's XML, so that oVirt's own SDK (``ovirtsdk4``)
and the scripts written with it work unmodified: :mod:`.xmlin` parses request
bodies (safely), :mod:`.xmlout` writes the engine's values, :mod:`.routes`
joins them to the actions, :mod:`.faults` answers the engine's errors, and
:mod:`.sso` serves oVirt's sign-in.

May import: :mod:`..actions`, :mod:`..core`, :mod:`..http` (auth, parsing, inputs) and the
engine's top-level modules. Runs no SQL itself.
"""

from .faults import FAULTS, fault_response, is_ovirt_api
from .routes import routes
from .xmlout import PREFIX

__all__ = ["FAULTS", "PREFIX", "fault_response", "is_ovirt_api", "routes"]
