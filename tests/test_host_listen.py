"""The host serves JSON-RPC to a network only with TLS that authenticates its clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from diskname.config import ConfigError
from diskname.host.service import HostConfig, check_listen

TLS = {"tls_cert": Path("host.pem"), "tls_key": Path("host.key")}
MUTUAL = {**TLS, "tls_ca": Path("ca.pem")}


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"listen_host": "127.0.0.1"}, None),
        ({"listen_host": "127.0.0.5"}, None),
        ({"listen_host": "::1"}, None),
        ({"listen_host": "localhost"}, None),
        ({"listen_host": "0.0.0.0"}, "without TLS"),
        ({"listen_host": ""}, "without TLS"),  # every interface
        ({"listen_host": "::"}, "without TLS"),
        ({"listen_host": "hv01.lab"}, "without TLS"),
        ({"listen_host": "0.0.0.0", "insecure_plaintext": True}, None),
        ({"listen_host": "0.0.0.0", **TLS}, "to any client"),
        ({"listen_host": "0.0.0.0", **TLS, "rpc_token": "t"}, None),
        ({"listen_host": "0.0.0.0", **MUTUAL}, None),
    ],
)
def test_listen_addresses(settings: dict[str, Any], refused: str | None) -> None:
    config = HostConfig(**settings)
    if refused is None:
        check_listen(config)
    else:
        with pytest.raises(ConfigError, match=refused):
            check_listen(config)
