"""oVirt's REST API v4, the part clients use to find a disk's logical name (SPEC §14).

Served beside the JSON API by the same engine, over the same resources
(:mod:`..resources`), in oVirt's XML, so that oVirt's own SDK (``ovirtsdk4``)
and the scripts written with it work unmodified: :mod:`.xmlin` parses request
bodies (safely), :mod:`.xmlout` writes the engine's values, :mod:`.routes`
joins them to the resources.
"""

from .routes import fault_response, is_ovirt_api, routes
from .xmlout import PREFIX

__all__ = ["PREFIX", "fault_response", "is_ovirt_api", "routes"]
