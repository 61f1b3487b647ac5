"""Operator commands of the event machinery (run where a service runs, with its BR_ settings):

  python -m runtime outbox-stuck --service catalog            rows the relay could not send
  python -m runtime outbox-skip  --service catalog --id 42 --reason "…"   step over one for good
  python -m runtime outbox-resend --service catalog --since-seconds 600   after the broker lost data
  python -m runtime outbox-restored --service catalog     once after restoring its database to an earlier time
  python -m runtime dlq-replay   --topic catalog.offers.v1 [--consumer matching]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

import asyncpg

from runtime.inbox import ReplayIncomplete, replay_dead_letters
from runtime.outbox import raise_epoch, resend_since, skip_row, stuck_rows
from runtime.settings import ServiceSettings


async def _with_database(service: str, work):
    settings = ServiceSettings(service=service)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    stuck = commands.add_parser("outbox-stuck", help="list pending outbox rows that failed")
    stuck.add_argument("--service", required=True)
    skip = commands.add_parser("outbox-skip", help="skip one pending outbox row, recording why")
    skip.add_argument("--service", required=True)
    skip.add_argument("--id", type=int, required=True)
    skip.add_argument("--reason", required=True)
    skip.add_argument("--operator", default=getpass.getuser())
    resend = commands.add_parser("outbox-resend", help="publish again what was sent lately")
    resend.add_argument("--service", required=True)
    resend.add_argument("--since-seconds", type=float, required=True)
    restored = commands.add_parser("outbox-restored", help="after a restore: number new events above all before")
    restored.add_argument("--service", required=True)
    replay = commands.add_parser("dlq-replay", help="publish a dead-letter topic back into its source")
    replay.add_argument("--topic", required=True, help="the source topic, e.g. catalog.offers.v1")
    replay.add_argument("--consumer", help="only what this consumer group dead-lettered")
    args = parser.parse_args(argv)

    if args.command == "outbox-stuck":
        rows = asyncio.run(_with_database(args.service, stuck_rows))
        for r in rows:
            print(f"{r['id']}\t{r['topic']}\t{r['aggregate_key']}\t{r['event_type']}\tseq {r['sequence']}\t"
                  f"attempts {r['attempts']}\tsince {r['created_at']:%Y-%m-%d %H:%M:%S}\t{r['last_error']}")
        print(f"{len(rows)} stuck row(s)", file=sys.stderr)
    elif args.command == "outbox-skip":
        try:
            row = asyncio.run(_with_database(
                args.service, lambda conn: skip_row(conn, args.id, args.reason, args.operator)))
        except (LookupError, ValueError) as exc:
            print(f"not skipped: {exc}", file=sys.stderr)
            return 1
        print(f"skipped outbox row {row['id']} ({row['event_type']} of {row['aggregate_key']}, "
              f"sequence {row['sequence']}): {args.reason}")
    elif args.command == "outbox-resend":
        count = asyncio.run(_with_database(args.service, lambda conn: resend_since(conn, args.since_seconds)))
        print(f"{count} outbox row(s) of {args.service} will be published again")
    elif args.command == "outbox-restored":
        epoch = asyncio.run(_with_database(args.service, raise_epoch))
        print(f"events of {args.service} are numbered from {epoch + 1} on: consumers apply them, not skip them")
    elif args.command == "dlq-replay":
        try:  # with the brokers' address and credentials of BR_KAFKA_* (deploy/README.md: the dlq-replay user)
            count = replay_dead_letters(ServiceSettings(), args.topic, consumer=args.consumer)
        except ReplayIncomplete as exc:
            print(f"replay incomplete: {exc}", file=sys.stderr)
            return 1
        print(f"replayed {count} event(s) from {args.topic}.dlq into {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
