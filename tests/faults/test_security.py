"""Nothing gets in: tokens compared in constant time, per-role Redis ACL users that hold (as
documented in the README, "Redis users per role"), `rediss://` with certificate
verification against a local TLS Redis, and no secret in logs, Redis or answers."""

from __future__ import annotations

import hmac
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.embedded import RedisServer, free_port
from healthbus.errors import BusUnavailable, EmbeddedRedisError
from healthbus.schema import Heartbeat
from healthbus.web.app import create_app
from healthbus.web.cookie import COOKIE_NAME, session_value
from healthbus.web.selection import authorized
from publishers import Publisher, publish_once
from tests.ground_truth import meta
from tests.support import wait_until, wait_until_sync
from tests.webserver import open_stream, serve

pytestmark = pytest.mark.fault

# -- constant time --------------------------------------------------------------------------


def test_tokens_and_session_cookies_are_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    config = Config(token="s3cret-token")
    now = 1_800_000_000.0
    cookie = f"{COOKIE_NAME}={session_value('s3cret-token', now)}"
    cases = [
        ({"authorization": "Bearer s3cret-token"}, True),
        ({"authorization": "Bearer s"}, False),  # a different length still goes through it
        ({"authorization": "Bearer " + "x" * 500}, False),
        ({"cookie": cookie}, True),
        ({"cookie": cookie[:-1] + "0"}, False),
    ]
    for headers, expected in cases:
        before = len(calls)
        assert authorized(config, headers, now_s=now) is expected
        assert len(calls) == before + 1, f"no constant-time comparison for {headers}"


# -- Redis ACL users per role --------------------------------------------------------------

ROLE_PASSWORDS = {"hb-publisher": "pub-pw-1", "hb-web": "web-pw-2", "hb-aggregator": "agg-pw-3"}


def acl_file(path: Path, namespace: str) -> Path:
    """The README's ACL users for namespace `namespace` (Redis >= 7.0 syntax)."""
    prefix = f"healthbus:{{{namespace}}}:"
    lines = [
        "user default on nopass ~* &* +@all",
        f"user hb-publisher on >{ROLE_PASSWORDS['hb-publisher']} resetkeys "
        f"~{prefix}heartbeats resetchannels -@all +@connection +xadd -@dangerous",
        f"user hb-web on >{ROLE_PASSWORDS['hb-web']} resetkeys %R~{prefix}* "
        f"~{prefix}commands resetchannels -@all +@connection +@read +eval +time +xadd "
        "+multi +exec +discard -@dangerous",
        f"user hb-aggregator on >{ROLE_PASSWORDS['hb-aggregator']} resetkeys ~{prefix}* "
        "resetchannels -@all +@connection +@read +@write +eval +evalsha +script|load +time "
        "+multi +exec +discard -@dangerous",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def acl_redis(tmp_path: Path, namespace: str) -> Iterator[RedisServer]:
    aclfile = acl_file(tmp_path / "users.acl", namespace)
    with RedisServer(extra_args=("--aclfile", str(aclfile))) as server:
        yield server


def role_url(server: RedisServer, role: str) -> str:
    return f"redis://{role}:{ROLE_PASSWORDS[role]}@127.0.0.1:{server.port}/0"


def refused(client: redis.Redis, *command: Any) -> bool:
    """True when the ACL refuses `command` (directly, or inside a script)."""
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as exc:
        return "can't run this command" in str(exc) or "no permissions" in str(exc)
    return False


@pytest.mark.anyio
@pytest.mark.slow
async def test_each_role_works_with_its_acl_user_and_no_more(
    acl_redis: RedisServer, namespace: str
) -> None:
    keys = Config(namespace=namespace).keys
    # The publisher: XADD to the heartbeats stream, nothing else.
    with Publisher(role_url(acl_redis, "hb-publisher"), namespace) as publisher:
        for i in range(5):
            publisher.publish(f"svc{i}", interval_s=60)
        wait_until_sync(lambda: publisher.stats.sent == 5)
        assert publisher.stats.last_error is None
    entry = publish_once(
        role_url(acl_redis, "hb-publisher"),
        namespace,
        Heartbeat(v=1, service="cron", interval_s=60, ok=True),
    )
    assert entry
    # The aggregator: everything of its namespace, through its scripts.
    agg_config = Config(redis_url=role_url(acl_redis, "hb-aggregator"), namespace=namespace)
    web_config = Config(redis_url=role_url(acl_redis, "hb-web"), namespace=namespace)
    admin = aioredis.Redis.from_url(acl_redis.url)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Aggregator(agg_config).run)
            await wait_until(lambda: _services(admin, agg_config, 6), timeout=15)
            # The web: reads, and adds silences to the commands stream.
            with serve(create_app(web_config)) as url:
                async with httpx.AsyncClient(timeout=10) as client:
                    assert (await client.get(url + "/health")).status_code == 200
                    doc = (await client.get(url + "/api/health")).json()
                    assert doc["total"] == 6, doc
                    async with open_stream(client, url) as sse:
                        first = await sse.next()
                        assert first.event == "snapshot" and len(first.json()["services"]) == 6
            tg.cancel_scope.cancel()
    finally:
        await admin.aclose()

    pub = redis.Redis.from_url(role_url(acl_redis, "hb-publisher"))
    web = redis.Redis.from_url(role_url(acl_redis, "hb-web"))
    agg = redis.Redis.from_url(role_url(acl_redis, "hb-aggregator"))
    try:
        assert refused(pub, "XRANGE", keys.heartbeats, "-", "+")
        assert refused(pub, "HSET", keys.snapshot, "x", "y")
        assert refused(pub, "XADD", keys.transitions, "*", "m", "{}")
        assert refused(pub, "XADD", keys.commands, "*", "m", "{}")
        assert refused(pub, "EVAL", "return 1", "0")
        assert refused(web, "XADD", keys.heartbeats, "*", "m", "{}")
        assert refused(web, "HSET", keys.snapshot, "x", "y")
        assert refused(web, "DEL", keys.snapshot)
        assert refused(web, "SET", keys.leader, "me")
        assert refused(web, "EVAL", f"return redis.call('DEL', '{keys.snapshot}')", "0")
        assert refused(web, "GET", "some-other-app:key")
        assert refused(agg, "GET", "some-other-app:key")
        assert refused(agg, "FLUSHALL")
        assert refused(agg, "CONFIG", "SET", "appendonly", "no")
        assert refused(agg, "KEYS", "*")
    finally:
        pub.close()
        web.close()
        agg.close()


async def _services(client: aioredis.Redis, config: Config, n: int) -> bool:
    m = await meta(client, config)
    return m is not None and m.services >= n


# -- rediss:// with certificate verification ---------------------------------------------


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for `localhost` (only), signed by it, with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test CA and server certificate")
    files = {n: directory / n for n in ("ca.key", "ca.pem", "server.key", "server.pem")}
    csr, ext = directory / "server.csr", directory / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(files["ca.key"]),
        "-out",
        str(files["ca.pem"]),
        "-days",
        "2",
        "-subj",
        "/CN=healthbus test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(files["server.key"]),
        "-out",
        str(csr),
        "-subj",
        "/CN=localhost",
    )
    run("x509", "-req", "-in", str(csr), "-CA", str(files["ca.pem"]), "-CAkey",
        str(files["ca.key"]), "-CAcreateserial", "-out", str(files["server.pem"]), "-days", "2",
        "-extfile", str(ext))  # fmt: skip
    return files


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    certs = make_certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        extra_args=(
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(certs["server.pem"]),
            "--tls-key-file", str(certs["server.key"]),
            "--tls-ca-cert-file", str(certs["ca.pem"]),
            "--tls-auth-clients", "no",
        )
    )  # fmt: skip
    try:
        server.start()
    except EmbeddedRedisError as exc:
        pytest.skip(f"{server.binary} cannot serve TLS (built without it?): {exc}")
    try:
        yield server, tls_port, certs["ca.pem"]
    finally:
        server.close()


@pytest.mark.anyio
@pytest.mark.slow
async def test_rediss_verifies_the_server_certificate(
    tls_redis: tuple[RedisServer, int, Path], namespace: str
) -> None:
    server, port, ca = tls_redis
    verified = f"rediss://localhost:{port}/0?ssl_ca_certs={ca}"
    hb = Heartbeat(v=1, service="over-tls", interval_s=60, ok=True)
    # Verified: the whole path works over TLS.
    assert publish_once(verified, namespace, hb)
    config = Config(redis_url=verified, namespace=namespace)
    plain = aioredis.Redis.from_url(server.url)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Aggregator(config).run)
            await wait_until(lambda: plain.hget(config.keys.snapshot, "over-tls"), timeout=15)
            tg.cancel_scope.cancel()
    finally:
        await plain.aclose()
    # Not verified: a server whose certificate no trusted CA signed, or that is not the
    # host it names, is refused.
    for url, why in [
        (f"rediss://localhost:{port}/0", "certificate verify failed"),
        (f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", "match|mismatch|not valid"),
    ]:
        with pytest.raises(BusUnavailable, match=why):
            publish_once(url, namespace, hb, timeout=3)


# -- no secret in logs, Redis or answers ---------------------------------------------------

REDIS_PASSWORD = "RedisPw-7f3a"
TOKEN = "Token-9c2e-secret"
SECRETS = [
    REDIS_PASSWORD,
    TOKEN,
    "WrongPw-5d1b",
    "HeaderSecret-2b8c",
    "DbPw-4e6f",
    "KeyValue-8a1d",
    "BearerTok-3c7e",
    "RunPw-6b2a",
]


@pytest.mark.anyio
@pytest.mark.slow
async def test_no_secret_in_logs_redis_or_answers(tmp_path: Path, namespace: str) -> None:
    with RedisServer(extra_args=("--requirepass", REDIS_PASSWORD)) as server:
        url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
        probes = tmp_path / "probes.toml"
        probes.write_text(
            f"""
[[probe]]
name = "bus-redis"
type = "redis"
url = "{url}"

[[probe]]
name = "wrong-redis"
type = "redis"
url = "redis://:WrongPw-5d1b@127.0.0.1:{server.port}/0"

[[probe]]
name = "api"
type = "http"
url = "http://user:HeaderSecret-2b8c@127.0.0.1:{free_port()}/health"
headers = {{Authorization = "Bearer HeaderSecret-2b8c"}}
"""
        )
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HEALTHBUS_")},
            "HEALTHBUS_REDIS_URL": url,
            "HEALTHBUS_NAMESPACE": namespace,
            "HEALTHBUS_TOKEN": TOKEN,
            "HEALTHBUS_LOG_LEVEL": "debug",
        }
        log = tmp_path / "serve.log"

        def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [sys.executable, "-m", "healthbus.cli", *args],
                env=env, capture_output=True, timeout=60, check=False,
            )  # fmt: skip

        serve_process = start(["serve", "--port", str(port), "--probes", str(probes)], env, log)
        outputs: list[bytes] = []
        try:
            published = cli(
                "publish", "--service", "job", "--interval", "60", "--fail", "--error",
                "cannot reach postgresql://app:DbPw-4e6f@db/x (password=KeyValue-8a1d); "
                "Authorization: Bearer BearerTok-3c7e",
            )  # fmt: skip
            ran = cli(
                "run", "--service", "cron", "--", sys.executable, "-c",
                "import sys; sys.stderr.write('login failed: password=RunPw-6b2a\\n'); sys.exit(3)",
            )  # fmt: skip
            # `run` copies the command's own stderr through, as it is: all but that line.
            own = b"login failed: password=RunPw-6b2a\n"
            outputs += [published.stdout, published.stderr, ran.stdout]
            outputs.append(ran.stderr.replace(own, b"", 1))
            assert published.returncode == 0, published.stderr
            assert ran.returncode == 3
            client = aioredis.Redis.from_url(url)
            try:
                config = Config(redis_url=url, namespace=namespace)
                for name in ("job", "cron", "bus-redis", "wrong-redis", "api"):
                    await wait_until(lambda n=name: client.hget(config.keys.snapshot, n), 30)  # type: ignore[misc]
                base = f"http://127.0.0.1:{port}"
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(timeout=10) as http:
                    await wait_until(lambda: _answers(http, base + "/health"), timeout=20)
                    for path in ("/api/health", "/metrics", "/api/transitions", "/health"):
                        outputs.append((await http.get(base + path, headers=auth)).content)
                    outputs.append((await http.get(base + "/api/services/wrong-redis",
                                                   headers=auth)).content)  # fmt: skip
                stored = await _everything(client, namespace)
            finally:
                await client.aclose()
        finally:
            serve_process.terminate()
            serve_process.wait(timeout=20)
        outputs.append(log.read_bytes())
    everything = b"\n".join([*outputs, stored])
    assert b"WrongPw" not in stored  # sanity: the probe's error text is in Redis, scrubbed
    leaked = [s for s in SECRETS if s.encode() in everything]
    assert leaked == [], leaked
    # Sanity: the places looked at do hold the (scrubbed) errors.
    assert b"postgresql://app:***@db" in stored and b"password=***" in stored


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "healthbus.cli", *args],
            env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip


async def _answers(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code in (200, 503)
    except httpx.HTTPError:
        return False


async def _everything(client: aioredis.Redis, namespace: str) -> bytes:
    """Every byte the namespace's keys hold."""
    out: list[bytes] = []
    async for key in client.scan_iter(match=f"healthbus:{{{namespace}}}:*"):
        kind = (await client.type(key)).decode()
        out.append(key)
        if kind == "stream":
            for _, fields in await client.xrange(key):
                out += [b for kv in fields.items() for b in kv]
        elif kind == "hash":
            out += [b for kv in (await client.hgetall(key)).items() for b in kv]
        elif kind == "string":
            out.append(await client.get(key) or b"")
        elif kind == "set":
            out += list(await client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(out)
