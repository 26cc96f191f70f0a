"""The agent on a Windows guest (SPEC §20): disks from WMI/CIM, the port, the service.

Owns everything Windows-specific of the agent, in layers so that all but the
thinnest run (and are tested) on Linux:

- :mod:`.wmi`: the pure parser, WMI/CIM answers in, the agent's device
  records out (the same records, hence the same mapping, as on Linux);
- :mod:`.query`: the source: one PowerShell script that asks CIM and prints
  JSON, one that prints a line per device arrival or removal; asyncio
  subprocesses, nothing Windows-only in Python;
- :mod:`.port`: the virtio-serial port ``\\\\.\\Global\\ovirt-guest-agent.0``,
  overlapped I/O through ctypes, driven by threads;
- :mod:`.winservice`: running under the service control manager (ctypes).

Imports only the standard library and ``diskname.agent``/``protocol``; never
pyudev, fcntl or termios. Python 3.9+ (the ``.pyz``).
"""
