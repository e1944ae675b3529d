from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clawrouter.cli import main


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "clawrouter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["models"], ["route"], ["demo"], ["hash-key"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: clawrouter" in capsys.readouterr().out


def test_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["MODEL", "PROVIDER"] and "simulated/premium" in out
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in models] == ["simulated/eco", "simulated/standard", "simulated/premium"]


def test_route_explains(capsys):
    assert main(["route", "Write a haiku", "--profile", "eco", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model"] == "simulated/eco" and decision["profile"] == "eco"
    assert decision["fallbacks"] and decision["quote_usd_micro"] > 0
    assert main(["route", "Write a haiku"]) == 0
    assert capsys.readouterr().out.startswith("model:")


def test_config_errors_exit_2_with_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 'x'\n")
    result = run("models", "--config", str(path))
    assert result.returncode == 2
    assert "config key 'server.port': Expected int, got str" in result.stderr
    assert "Traceback" not in result.stderr


def test_hash_key(capsys):
    assert main(["hash-key", "sk-1"]) == 0
    assert len(capsys.readouterr().out.strip()) == 64


def test_demo_runs_end_to_end():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = [line for line in lines if line.startswith(("auto", "eco", "premium", "simulated/"))]
    assert len(table) == 6
    flaky = next(line for line in table if line.startswith("simulated/flaky"))
    assert flaky.split()[1] == "simulated/eco"  # fell back
    broken = next(line for line in table if line.startswith("simulated/broken")).split()
    assert broken[1:3] == ["failed", "(502)"] and broken[-3:] == ["0.000000", "-", "-"]  # not charged
    paid = [line.split() for line in table if "failed" not in line]
    # charged, settled in a transaction, and the router's receipt verified by the agent's client
    assert all(row[-1] == "verified" and row[-2].startswith("0x") and float(row[-3]) > 0 for row in paid)
    assert "agent spend: 5 paid calls, $" in result.stdout
    assert "ledger == chain ✓" in result.stdout
    assert "6 calls (1 failed, not charged) served by http://127.0.0.1:" in result.stdout
