"""How a forked actor takes its arguments and its environment (floodwatch/runtime/entry.py, zygote.py):
the supervisor's own form without argparse, anything else through it; the environment the supervisor
asked for, in Python and for the programs the actor runs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from floodwatch.runtime.entry import config_arg
from tests.helpers import PYTHON, REPO


def test_the_supervisors_form_and_every_other_spelling_give_the_same_config() -> None:
    assert config_arg("detector", ["--config", "/etc/floodwatch/floodwatch.toml"]) == "/etc/floodwatch/floodwatch.toml"
    assert config_arg("detector", ["--config=/etc/fw.toml"]) == "/etc/fw.toml"  # argparse's spelling
    assert config_arg("detector", ["--conf", "/etc/fw.toml"]) == "/etc/fw.toml"  # argparse's abbreviation


@pytest.mark.parametrize("argv", [[], ["--config"], ["--config", "a.toml", "--extra"], ["--config", "--help"]])
def test_anything_else_gets_argparse_and_its_usage_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config_arg("detector", argv)
    captured = capsys.readouterr()
    assert "python -m actors.detector" in captured.err + captured.out


def test_the_actors_environment_is_the_one_asked_for_also_for_its_programs() -> None:
    """Only what differs is changed (clearing it all copied pages of the shared image), and the result is
    exactly the environment asked for, in os.environ and for a program the actor runs."""
    code = """
import json, os, subprocess, sys
from floodwatch.runtime.supervisor.zygote import _set_environ
wanted = {"PATH": os.environ["PATH"], "KEEP": "same", "CHANGED": "new", "ADDED": "1"}
_set_environ(wanted)
seen = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout.splitlines()
print(json.dumps({"os": dict(os.environ), "program": dict(line.split("=", 1) for line in seen)}))
"""
    env = {"PATH": os.environ["PATH"], "KEEP": "same", "CHANGED": "old", "GONE": "x"}
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    wanted = {"PATH": os.environ["PATH"], "KEEP": "same", "CHANGED": "new", "ADDED": "1"}
    assert got["os"] == wanted
    assert got["program"] == wanted
