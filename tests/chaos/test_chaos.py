"""The short chaos run inside `make test` (the full one is `make chaos`): under load, matching and
the Celery worker SIGKILLed, the broker and PostgreSQL away 5 s each, SMTP refusing 10 s; services
unready while a dependency is gone and ready again without a restart; then not one offer event,
match or mail lost or doubled."""

from tests.chaos.harness import ChaosRun


def test_nothing_lost_nothing_doubled_under_kills_and_outages() -> None:
    chaos = ChaosRun(rate=5.0, short=True)
    try:
        chaos.start()
        report = chaos.run()
    finally:
        chaos.stop()
    print(report.render())
    assert report.counts["offer events applied by matching"] > 0
    assert report.counts["mails in the SMTP sink"] > 0
    assert report.problems == []
