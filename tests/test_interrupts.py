"""A script of scripts/ stopped by Ctrl-C or SIGTERM ends as a pdnn command does: with one line,
not a traceback."""
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pdnn

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SOURCE = str(Path(pdnn.__file__).resolve().parents[1])

# (script, its arguments, a function it calls first, from where it is read; the signal, the status and
# the line's word): a script of its own and one through the hardware study's command line
STOPPED_IN = [("adaptive_draws.py", ["study", "--out", "draws"], "pdnn.io", "read_json",
               signal.SIGINT, 130, "interrupted"),
              ("hw_toggles.py", ["hardware"], "pdnn.hw.fixed", "load", signal.SIGTERM, 143, "stopped by SIGTERM")]


@pytest.mark.parametrize("script, arguments, module, function, signum, status, said", STOPPED_IN)
def test_a_stopped_script_says_so_in_one_line(script, arguments, module, function, signum, status, said, tmp_path):
    """The signal comes while the script works: its first call sends it and waits for it."""
    stop = textwrap.dedent(f"""
        import importlib, os, runpy, sys, time
        def stopped(*args, **kwargs):
            os.kill(os.getpid(), {int(signum)})
            time.sleep(60)
        setattr(importlib.import_module({module!r}), {function!r}, stopped)
        sys.argv = [{str(SCRIPTS / script)!r}, *{arguments!r}]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", stop], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == status, done.stderr
    assert done.stderr == f"{script}: {said}; no file was left half-written\n"


def test_every_script_ends_through_run_script():
    """Four scripts whose command line was written inline still ended Ctrl-C with a traceback, and
    SIGTERM with no word (R225): each script's entry is ``run_script`` (or the hardware study's
    command line, which ends through it)."""
    for script in sorted(SCRIPTS.glob("*.py")):
        entry = script.read_text().split('if __name__ == "__main__":', 1)[-1]
        assert re.fullmatch(r"\n    (hs\.)?run_script\([^\n]*\)\n", entry), script.name
