"""`healthbus …`: the command line, and the one place that wires every part together."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import anyio
import msgspec

from healthbus import __version__
from healthbus.config import LOCAL_REDIS_URL, Config
from healthbus.errors import ConfigError, HealthBusError
from healthbus.schema import STATUS_ORDER, json_schemas

__all__ = ["main"]

log = logging.getLogger("healthbus")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    flags = {k: v for k, v in vars(args).items() if k in Config.__struct_fields__}
    try:
        config = Config.load(file=args.config, **flags)
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
            stream=sys.stderr,
        )
        handler: Callable[[Config, argparse.Namespace], int] = args.handler
        return handler(config, args)
    except HealthBusError as exc:
        print(f"healthbus: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- verbs ------------------------------------------------------------------------------


def _serve(config: Config, args: argparse.Namespace) -> int:
    from healthbus.web.app import check_bind

    probes = _load_probes(config, args, required=False)
    with ExitStack() as stack:
        if config.redis_url is None:
            config = config.replace(redis_url=_local_or_embedded(stack))
        check_bind(config)
        print(
            f"healthbus {__version__}: dashboard on http://{_host_for_url(config.host)}:"
            f"{config.port}/ (Redis {_redact(config.redis_url)}, namespace {config.namespace})",
            file=sys.stderr,
        )
        anyio.run(_serve_all, config, args.demo, probes)
    return 0


async def _serve_all(config: Config, demo: bool, probes: Sequence[Any] = ()) -> None:
    from aggregator import Aggregator

    server = _web_server(config) if config.workers == 1 else None
    async with anyio.create_task_group() as tg:
        if server is None:
            tg.start_soon(_on_signal, tg.cancel_scope.cancel)
        tg.start_soon(Aggregator(config).run)
        if demo:
            from publishers.demo import run_demo

            assert config.redis_url
            tg.start_soon(run_demo, config.redis_url, config.namespace)
        if probes:
            from publishers.probes import serve_probes

            tg.start_soon(serve_probes, config, probes)
        if config.notify:
            from healthbus.notify.notifier import Notifier

            tg.start_soon(Notifier(config).run)
        if server is not None:
            await server.serve()
        else:
            await _run_web_workers(config)
        tg.cancel_scope.cancel()


async def _on_signal(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT end every part cleanly: leases released, goodbyes said."""
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for _ in signals:
            stop()


def _web_server(config: Config) -> Any:
    import uvicorn

    from healthbus.web.app import GRACEFUL_SHUTDOWN_S, HTTP, create_app

    uv_config = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        http=HTTP,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(uv_config)
    server.capture_signals = functools.partial(_stop_on_signal, server)  # type: ignore[method-assign]
    return server


@contextlib.contextmanager
def _stop_on_signal(server: Any) -> Iterator[None]:
    """SIGTERM/SIGINT stop uvicorn gracefully (open SSE streams are told to end), and then
    everything else in `serve`; unlike uvicorn's own handling, the signal is not raised again
    afterwards, which would kill the process before the lease is released and goodbyes said."""
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _run_web_workers(config: Config) -> None:
    """`--workers N`: a `healthbus web` child runs N uvicorn worker processes."""
    from healthbus.web.app import CONFIG_ENV

    env = {**os.environ, CONFIG_ENV: msgspec.json.encode(config).decode()}
    command = [sys.executable, "-m", "healthbus.cli", "web"]
    process = await anyio.open_process(command, env=env, stdout=None, stderr=None)
    try:
        await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(30):  # past uvicorn's own grace: not answering
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def _aggregator(config: Config, args: argparse.Namespace) -> int:
    from aggregator import Aggregator

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_on_signal, tg.cancel_scope.cancel)
            await Aggregator(_with_url(config), name=args.name).run()

    anyio.run(run)
    return 0


def _web(config: Config, args: argparse.Namespace) -> int:
    from healthbus.web.app import CONFIG_ENV, run_web

    inherited = os.environ.get(CONFIG_ENV)  # `serve --workers N` hands its whole config down
    run_web(msgspec.json.decode(inherited, type=Config) if inherited else _with_url(config))
    return 0


def _probe(config: Config, args: argparse.Namespace) -> int:
    from publishers.probes import check_all, serve_probes

    probes = _load_probes(config, args, required=True)
    if args.once:
        results = anyio.run(check_all, probes)
        rows = []
        for probe, found in zip(probes, results, strict=True):
            rows.append((probe.name, probe.type, found))
            # a probe's parts (a docket's tasks) are services of their own
            rows += [(f"{probe.name}.{part}", probe.type, r) for part, r in found.parts.items()]
        width = max(30, *(len(name) for name, _, _ in rows))
        print(f"{'PROBE':{width}} {'TYPE':8} {'STATUS':9} {'MS':>9}  ERROR / HINT")
        for name, kind, r in rows:
            ms = "-" if r.duration_ms is None else f"{r.duration_ms:.1f}"
            note = r.error or r.hint or ""
            print(f"{name:{width}} {kind:8} {r.status:9} {ms:>9}  {note}")
        return 0 if all(r.status == "healthy" for _, _, r in rows) else 1
    config = _with_url(config)
    print(
        f"healthbus: {len(probes)} probe(s) publishing to Redis {_redact(config.redis_url)}, "
        f"namespace {config.namespace}",
        file=sys.stderr,
    )

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_on_signal, tg.cancel_scope.cancel)
            await serve_probes(config, probes)

    anyio.run(run)
    return 0


def _load_probes(config: Config, args: argparse.Namespace, *, required: bool) -> list[Any]:
    """The probes of `--probes`, else the `[[probe]]` tables of the config file itself; all
    validated before anything starts."""
    from healthbus.config import ENV_PREFIX
    from publishers.probes import load_probes

    path = config.probes or args.config or os.environ.get(ENV_PREFIX + "CONFIG")
    if path is None:
        if required:
            raise ConfigError("no probes file: pass --probes probes.toml (or HEALTHBUS_PROBES)")
        return []
    return load_probes(path, allow_empty=not (required or config.probes))


def _publish(config: Config, args: argparse.Namespace) -> int:
    from healthbus.schema import Heartbeat, encode
    from publishers import publish_once

    config = _with_url(config)
    details: dict[str, Any] = {}
    for item in args.detail or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--detail {item!r}: use KEY=VALUE")
        details[key] = _detail_value(value)
    fields: dict[str, Any] = {
        "v": 1,
        "service": args.service,
        "interval_s": args.interval,
        "ok": not args.fail,
        "kind": args.kind,
        "instance": args.instance,
        "status": args.status,
        "duration_ms": args.duration_ms,
        "error": args.error,
        "details": details or None,
        "hint": args.hint,
        "depends_on": args.depends_on,
        "goodbye": args.goodbye,
    }
    try:
        hb = msgspec.json.decode(
            encode({k: v for k, v in fields.items() if v is not None}), type=Heartbeat
        )
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid heartbeat: {exc}") from None
    assert config.redis_url
    entry_id = publish_once(config.redis_url, config.namespace, hb)
    print(entry_id)
    return 0


def _detail_value(text: str) -> float | int | str | bool | None:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    return value if isinstance(value, float | int | bool | None) else text


def _status(config: Config, args: argparse.Namespace) -> int:
    from healthbus.client import HealthBus

    async def fetch() -> Any:
        async with HealthBus.from_config(_with_url(config)) as bus:
            return await bus.snapshot()

    snap = anyio.run(fetch)
    if args.json:
        sys.stdout.write(
            msgspec.json.encode(
                {"meta": snap.meta, "services": sorted(snap.services.values(), key=_order)}
            ).decode()
            + "\n"
        )
        return 0
    if snap.meta is None:
        print("no data yet: is an aggregator running for this namespace?")
        return 3
    meta = snap.meta
    print(f"overall {meta.status}  services {meta.services}  seq {meta.seq}  as of {meta.as_of}")
    print(f"{'SERVICE':40} {'KIND':10} {'STATUS':9} {'LAST HEARTBEAT':25} REASON")
    for view in sorted(snap.services.values(), key=_order):
        print(
            f"{view.name[:40]:40} {view.kind[:10]:10} {view.status:9} "
            f"{(view.last_heartbeat or '-'):25} {view.reason}"
        )
    return 0 if meta.status in ("healthy", "unknown") else 1


def _silence(config: Config, args: argparse.Namespace) -> int:
    from healthbus.operator import silence

    return anyio.run(
        functools.partial(
            silence,
            _with_url(config),
            args.action,
            args.target,
            duration=args.duration,
            until=args.until,
            starts=args.starts,
            comment=args.comment,
            silence_id=args.id,
            as_json=args.json,
        )
    )


def _order(view: Any) -> tuple[int, str]:
    return (-STATUS_ORDER[view.status], view.name)


def _tail(config: Config, args: argparse.Namespace) -> int:
    from healthbus.client import HealthBus
    from healthbus.connection import Backoff
    from healthbus.errors import BusUnavailable

    cursor = "0" if args.all else "$"

    async def follow(bus: HealthBus) -> None:
        nonlocal cursor
        if args.group:
            async for t in bus.transitions(group=args.group, start=cursor):
                _print_transition(t, args.json)
        else:
            async for entry_id, update in bus.updates(cursor):
                for t in update.transitions:
                    _print_transition(t, args.json)
                cursor = entry_id

    async def follow_through_outages() -> None:
        """A follower outlives Redis outages: it reconnects with backoff where it left off."""
        backoff = Backoff()
        while True:
            try:
                async with HealthBus.from_config(_with_url(config)) as bus:
                    await follow(bus)
            except BusUnavailable as exc:
                log.warning("%s; retrying", exc)
                await anyio.sleep(backoff.next_delay())

    anyio.run(follow_through_outages)
    return 0


def _print_transition(t: Any, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(t).decode(), flush=True)
    else:
        print(f"{t.at}  {t.service}  {t.from_} -> {t.to}  {t.reason}", flush=True)


def _run(config: Config, args: argparse.Namespace) -> int:
    from publishers.run import run_job

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_job(
        config, command, service=args.service, interval_s=args.interval, timeout_s=args.timeout
    )


def _bench(config: Config, args: argparse.Namespace) -> int:
    from healthbus.bench import run_bench

    return run_bench(
        args.scenario or (),
        quick=args.quick,
        as_json=args.json,
        postgres_url=args.postgres_url,
        scale=args.scale,
    )


def _schema(config: Config, args: argparse.Namespace) -> int:
    print(msgspec.json.format(msgspec.json.encode(json_schemas()), indent=2).decode())
    return 0


def _notify(config: Config, args: argparse.Namespace) -> int:
    from healthbus.config import NotifyRoute
    from healthbus.notify.notifier import Notifier

    config = _with_url(config)
    if args.url:
        filters = {"services": args.service, "statuses": args.status, "kinds": args.kind}
        filters["events"] = args.event
        given = {k: v for k, v in filters.items() if v}
        routes = tuple(NotifyRoute(url=url, **given) for url in dict.fromkeys(args.url))
        config = config.replace(notify=routes)
    elif args.service or args.status or args.kind or args.event:
        raise ConfigError("--service, --status, --kind and --event filter --url destinations")
    notifier = Notifier(config, name=args.name)
    for runner in notifier.runners:
        print(f"healthbus: notifying {runner.sender.destination}", file=sys.stderr)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_on_signal, tg.cancel_scope.cancel)
            await notifier.run()

    anyio.run(run)
    return 0


# -- helpers ----------------------------------------------------------------------------


def _with_url(config: Config) -> Config:
    return config if config.redis_url else config.replace(redis_url=LOCAL_REDIS_URL)


def _local_or_embedded(stack: ExitStack, local: tuple[str, int] = ("127.0.0.1", 6379)) -> str:
    """No URL configured: the local Redis if one answers, else a private embedded server."""
    from healthbus.embedded import RedisServer, port_answers

    if port_answers(*local):
        return f"redis://{local[0]}:{local[1]}/0"
    server = stack.enter_context(RedisServer())
    print(
        f"healthbus: started an embedded Redis ({server.binary}) on {server.url}", file=sys.stderr
    )
    return server.url


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _redact(url: str | None) -> str:
    from healthbus.connection import redact_url

    return redact_url(url) if url else "-"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healthbus", description="Service health over a capped Redis stream."
    )
    parser.add_argument("--version", action="version", version=f"healthbus {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML file with a [healthbus] table")
    common.add_argument("--redis-url", dest="redis_url", help="default: $HEALTHBUS_REDIS_URL")
    common.add_argument("--namespace", help="default: $HEALTHBUS_NAMESPACE or 'default'")
    common.add_argument(
        "--log-level", dest="log_level", choices=["debug", "info", "warning", "error"]
    )
    web = argparse.ArgumentParser(add_help=False)
    web.add_argument("--host", help="default 127.0.0.1 (others need a token)")
    web.add_argument("--port", type=int, help="default 8080")
    web.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    web.add_argument("--token", help="prefer $HEALTHBUS_TOKEN: flags show in `ps`")
    verbs = parser.add_subparsers(title="commands", metavar="COMMAND")

    def verb(name: str, handler: Callable[..., int], help: str, *parents: Any) -> Any:
        sub = verbs.add_parser(name, help=help, description=help, parents=[common, *parents])
        sub.set_defaults(handler=handler)
        return sub

    serve = verb("serve", _serve, "aggregator + web (+ demo services) in one process", web)
    serve.add_argument("--demo", action="store_true", help="add simulated services")
    serve.add_argument("--probes", help="TOML file of [[probe]] tables to run as well")
    probe = verb("probe", _probe, "check infrastructure (HTTP, TCP, Redis, PostgreSQL, custom)")
    probe.add_argument("--probes", help="TOML file of [[probe]] tables (default: --config)")
    probe.add_argument("--once", action="store_true", help="check each once, print, exit")
    agg = verb("aggregator", _aggregator, "fold heartbeats (one leads, others stand by)")
    agg.add_argument("--name", help="this aggregator's name (default host:pid)")
    verb("web", _web, "the dashboard, /api/health and the SSE feed", web)
    pub = verb("publish", _publish, "publish one heartbeat (prints its stream id)")
    pub.add_argument("--service", required=True)
    pub.add_argument("--interval", type=float, required=True, help="seconds until the next one")
    pub.add_argument("--fail", action="store_true", help="ok: false")
    pub.add_argument("--error", help="why it failed")
    pub.add_argument("--kind", default="perpetual", choices=["perpetual", "consumer", "probe"])
    pub.add_argument("--instance")
    pub.add_argument("--status", choices=["healthy", "degraded", "error"])
    pub.add_argument("--duration-ms", dest="duration_ms", type=float)
    pub.add_argument("--detail", action="append", metavar="KEY=VALUE")
    pub.add_argument("--hint")
    pub.add_argument("--depends-on", dest="depends_on", action="append", metavar="SERVICE")
    pub.add_argument("--goodbye", action="store_true", help="this instance stops (planned)")
    status = verb("status", _status, "the snapshot as a table (exit 1 when not healthy)")
    status.add_argument("--json", action="store_true")
    silence = verb("silence", _silence, "list, add or remove silences (marks, never hides)")
    silence.add_argument("action", nargs="?", default="list", choices=["list", "add", "remove"])
    silence.add_argument("target", nargs="?", help="add: a service or fnmatch pattern; remove: id")
    silence.add_argument("--for", dest="duration", help="how long: 90s, 30m, 2h, 1d")
    silence.add_argument("--until", help="or until this ISO time (with a zone)")
    silence.add_argument("--starts", help="a maintenance window that starts later (ISO time)")
    silence.add_argument("--comment", help="why, for the others")
    silence.add_argument("--id", help="an id of your own (reusing one replaces that silence)")
    silence.add_argument("--json", action="store_true")
    tail = verb("tail", _tail, "follow transitions as they happen")
    tail.add_argument("--group", help="read through this consumer group (acked, resumable)")
    tail.add_argument("--all", action="store_true", help="start from the retained history")
    tail.add_argument("--json", action="store_true")
    verb("schema", _schema, "print the JSON Schema of every message")
    from healthbus.bench import DEFAULT_POSTGRES_URL, SCENARIOS  # names only; runs import more

    bench = verb("bench", _bench, "measure throughput, latency and memory (BENCHMARKS.md)")
    bench.add_argument("--quick", action="store_true", help="small sizes: under two minutes")
    bench.add_argument("--json", action="store_true", help="figures with targets as JSON")
    bench.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this one (repeatable; default: all)",
    )
    bench.add_argument(
        "--postgres-url",
        dest="postgres_url",
        default=os.environ.get("HEALTHBUS_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="for the alternatives (default: $HEALTHBUS_BENCH_POSTGRES_URL or the local test db)",
    )
    bench.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size and duration (smoke tests)"
    )
    notify = verb("notify", _notify, "send notifications of transitions (Apprise URLs)")
    notify.add_argument("--url", action="append", help="an Apprise URL (repeatable)")
    notify.add_argument("--service", action="append", metavar="PATTERN", help="fnmatch pattern")
    notify.add_argument("--status", action="append", choices=["degraded", "error"])
    notify.add_argument("--kind", action="append", choices=["perpetual", "consumer", "probe"])
    notify.add_argument("--event", action="append", help="default: all but appeared")
    notify.add_argument("--group", dest="notify_group", help="consumer group prefix (notify)")
    notify.add_argument("--group-wait", dest="notify_group_wait_s", type=float, metavar="S")
    notify.add_argument("--repeat", dest="notify_repeat_s", type=float, metavar="S")
    notify.add_argument("--dashboard-url", dest="dashboard_url", help="linked from messages")
    notify.add_argument("--name", help="this notifier's consumer name (default host:pid)")
    run = verb("run", _run, "run a cron job or script; report its start and finish (-- CMD …)")
    run.add_argument("--service", help="default: the command's name")
    run.add_argument("--interval", type=float, help="how often it runs, seconds (86400)")
    run.add_argument("--timeout", type=float, help="seconds the run may take (default: interval)")
    run.add_argument("--instance", help="default: $HEALTHBUS_INSTANCE, else this host's name")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
