"""``ansible-playbook`` as a subprocess, each task's result read from Ansible's JSON callback.

The playbooks are oVirt's Ansible collection (``ovirt.ovirt``, shipped in the
``ansible`` package) run unmodified against a diskname engine: the sim cluster of
tests/ovirt_cluster.py or the libvirt lab of tests/test_libvirt_pool_vm.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ANSIBLE = Path(sys.executable).parent / "ansible-playbook"
DOCS_EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
ATTACH = DOCS_EXAMPLES / "attach-disk.yml"  # docs/automating.md embeds these
REMOVE = DOCS_EXAMPLES / "remove-disk.yml"


def play(playbook: Path, extra: dict[str, Any], tmp: Path) -> dict[str, dict[str, Any]]:
    """Run ``playbook`` with ``extra`` vars; each task's result (and its end time) by name."""
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
        "ANSIBLE_HOME": str(tmp / "home"),
        "ANSIBLE_NOCOLOR": "1",
    }
    extra = {**extra, "ansible_python_interpreter": sys.executable}
    done = subprocess.run(
        [str(ANSIBLE), "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, (done.stdout[-6000:], done.stderr[-3000:])
    report = json.loads(done.stdout)
    results = {}
    for task in report["plays"][0]["tasks"]:
        result = task["hosts"]["localhost"]
        result["ended"] = datetime.fromisoformat(task["task"]["duration"]["end"])
        results[task["task"]["name"]] = result
    return results
