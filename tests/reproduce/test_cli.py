"""`damond reproduce` as a user runs it: JSON contract, table, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def damond(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "damond", "reproduce", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_e2e_json_and_table():
    p = damond("e2e", "--json")
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["experiment"] == "e2e" and obj["kept_hot_thp"] is True and obj["split_cold_thp_into"] == 128
    p = damond("e2e")
    assert p.returncode == 0, p.stderr
    head = p.stdout.splitlines()[1].split()
    assert head[:2] == ["case", "RFC"] and "verdict" in head and head[-1] == "why"
    assert "128 x 16 KB mTHP" in p.stdout and "match" in p.stdout
    assert p.stderr == ""                       # no progress bar without a terminal


def test_bad_arguments_get_one_line():
    p = damond("t3")
    assert p.returncode == 2 and "invalid choice: 't3'" in p.stderr
    p = damond("t1", "--machine", "m1")
    assert p.returncode == 2 and "invalid choice: 'm1'" in p.stderr


def test_plots_write_pngs(tmp_path):
    import pytest
    pytest.importorskip("matplotlib")
    from damond.reproduce import plots
    from damond.reproduce.common import Options
    from damond.reproduce import experiment
    res = [experiment("t4").run(Options(reduced=True))]
    files = plots.write(res, str(tmp_path))
    assert [f.name for f in files] == ["t4.png"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_only_on_a_terminal_after_the_delay():
    import io
    from damond.cli.reproduce import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = Progress(["t1", "t2"], stream=stream, after_s=0.0)
        bar.update(0.5)
        bar.next()
        bar.update(1.0)
        bar.close()
    assert "[#######" in tty.getvalue() and " 25% t1" in tty.getvalue() and "100% t2" in tty.getvalue()
    assert pipe.getvalue() == ""
    quiet = Tty()
    bar = Progress(["t1"], stream=quiet, after_s=60.0)         # a short run shows nothing
    bar.update(0.5)
    bar.close()
    assert quiet.getvalue() == ""


def test_plots_without_matplotlib_is_one_line(monkeypatch, capsys, tmp_path):
    import builtins
    from damond.cli import main
    real = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real(name, *a, **kw)
    import damond.log
    monkeypatch.setattr(damond.log, "configure", lambda *a, **k: None)    # keep the session's logging
    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert main(["reproduce", "e2e", "--plots", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "damond reproduce: --plots needs matplotlib: pip install 'damond[plots]'\n"
    assert list(tmp_path.iterdir()) == []               # nothing ran, nothing written
