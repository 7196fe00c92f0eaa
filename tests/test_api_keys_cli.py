"""`arbiter keys create / list / revoke` in their own process, against a real SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import arbiter

pytestmark = [pytest.mark.sqlite]

ROOT = Path(__file__).resolve().parents[1]


def test_keys_create_prints_the_key_once_list_hides_it_and_revoke_removes_it(
    tmp_path: Path,
) -> None:
    """create prints an arb_ key (only its hash is stored), list shows name, prefix and
    scopes but never the key, revoke takes it off the list; bad scopes are refused."""
    db = tmp_path / "ledger.db"
    env = {
        **os.environ,
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    assert arbiter("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    made = arbiter(
        "keys", "create", "--name", "shop", "--scope", "events:write", "--scope", "decide",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("arb_")
    assert key.encode() not in db.read_bytes()
    listed = arbiter("keys", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "shop" in listed.stdout
    assert key.split("_")[1] in listed.stdout
    assert "decide, events:write" in listed.stdout
    assert key not in listed.stdout
    twice = arbiter("keys", "create", "--name", "shop", "--scope", "decide", env=env, cwd=tmp_path)
    assert twice.returncode == 2
    assert "revoke it first" in twice.stderr
    bad = arbiter("keys", "create", "--name", "x", "--scope", "root", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown scope(s) root" in bad.stderr
    assert arbiter("keys", "revoke", "shop", env=env, cwd=tmp_path).returncode == 0
    assert "shop" not in arbiter("keys", "list", env=env, cwd=tmp_path).stdout
    gone = arbiter("keys", "revoke", "shop", env=env, cwd=tmp_path)
    assert gone.returncode == 2
    assert "no active key called 'shop'" in gone.stderr
