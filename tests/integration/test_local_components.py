"""`make up` uses the PostgreSQL and Redis it finds; where none listens, it starts its own."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import asyncpg
import redis

from deploy.local.stack import ROOT, Stack, StackConfig, port_open, postgres_data_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_project_local_postgres_and_redis_start_where_none_listens() -> None:
    # under the repository's var/, as `make up` does: the postgres user must reach the data folder
    var_dir = ROOT / "var" / "test-local-components"
    shutil.rmtree(var_dir, ignore_errors=True)
    shutil.rmtree(postgres_data_dir(var_dir), ignore_errors=True)
    config = StackConfig.for_tests(var_dir)
    config.ports["postgres"], config.ports["redis"] = _free_port(), _free_port()
    stack = Stack(config)
    try:
        stack.ensure_postgres()
        stack.ensure_redis()
        assert set(stack.processes) == {"postgres", "redis"}
        conn = await asyncpg.connect(config.postgres_admin_url)
        try:  # the extensions the catalog needs are there
            await conn.execute("CREATE EXTENSION cube; CREATE EXTENSION earthdistance")
            assert await conn.fetchval("SELECT earth_distance(ll_to_earth(53.25, 10.41), ll_to_earth(51.51, 7.47))") > 0
        finally:
            await conn.close()
        assert redis.Redis.from_url(config.redis_url).ping()
    finally:
        stack.stop_all()
        shutil.rmtree(postgres_data_dir(var_dir), ignore_errors=True)
    assert not port_open(config.host, config.ports["postgres"]) and not port_open(config.host, config.ports["redis"])


def test_running_postgres_and_redis_are_used_not_duplicated(tmp_path: Path) -> None:
    stack = Stack(StackConfig.for_tests(tmp_path))  # 127.0.0.1:5432 and :6379 run on these machines
    stack.ensure_postgres()
    stack.ensure_redis()
    assert stack.processes == {}


async def test_project_local_postgres_starts_from_a_checkout_others_cannot_enter(tmp_path: Path) -> None:
    # A clone in /root or in `mktemp -d`: only its owner may enter. As root the server runs as
    # `postgres`, which must still reach its data folder.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    var_dir = private / "bildungsraum" / "var"
    config = StackConfig.for_tests(var_dir)
    config.ports["postgres"] = _free_port()
    data = postgres_data_dir(var_dir)
    shutil.rmtree(data, ignore_errors=True)
    stack = Stack(config)
    try:
        for _ in range(2):  # a fresh cluster, then the same one again after a restart
            stack.ensure_postgres()
            conn = await asyncpg.connect(config.postgres_admin_url)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS kept (n int); INSERT INTO kept VALUES (1)")
                rows = await conn.fetchval("SELECT count(*) FROM kept")
            finally:
                await conn.close()
            stack.stop("postgres")
        assert rows == 2
        assert (data / "PG_VERSION").exists()
    finally:
        stack.stop_all()
        shutil.rmtree(data, ignore_errors=True)
