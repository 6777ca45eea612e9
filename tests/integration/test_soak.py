"""The soak tool keeps working: tools/soak/soak.py --smoke runs 20 s of mixed
ext_proc load with random faults (pods' /metrics failing, hostile clients,
config and manifest changes, some invalid) and must find every request
answered, no fd leak and a clean exit."""
import os
import subprocess
import sys

import envoy
from envoy import TestFailure, check

SOAK = os.path.join(envoy.ROOT, "tools", "soak", "soak.py")


def test_soak_smoke():
    # An ASan build's quarantine holds freed memory: no RSS bound there.
    slack = ["--rss-slack", "10000"] if envoy.SANITIZED else []
    p = subprocess.run([sys.executable, SOAK, "--build", envoy.BUILD_DIR, "--smoke"] + slack,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=150)
    out = p.stdout.decode()
    if p.returncode != 0:
        raise TestFailure("soak failed (%d):\n%s\n%s" % (p.returncode, out,
                                                          p.stderr.decode()[-3000:]))
    check("OK: every request answered, no leak" in out, out)
    check("| requests failed | 0" in out, out)
