"""Ctrl-C or SIGTERM while the command line is still loading: one line, exit 130, no traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.05, 0.2])
def test_an_interrupt_while_loading_ends_quietly(tmp_path, sig, delay) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sae_report", "analyze", str(tmp_path / "nothing")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    if proc.returncode == 130:  # caught while loading
        assert err == "Error: interrupted while sae-report was starting; nothing was done\n"
    else:  # loading was already done: the command ran to its own one-line answer
        assert proc.returncode in (2, -sig) and err.count("\n") <= 1, (proc.returncode, err)
