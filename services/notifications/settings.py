"""Settings of the notifications service (environment prefix ``BR_``), shared by its HTTP process
and its Celery workers."""

from __future__ import annotations

from email.utils import parseaddr

from pydantic import SecretStr

from runtime.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service: str = "notifications"
    http_port: int = 8003

    # Outgoing mail.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_timeout_seconds: float = 20.0
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    mail_from: str = "Bildungsraum <noreply@bildungsraum.example>"
    message_id_domain: str = "bildungsraum.example"
    public_base_url: str = "http://127.0.0.1:8003"  # where recipients reach /v1/unsubscribe
    # The web portal: mails link to a provider's matched demand at {portal}/anbieter/bedarfe/{id}
    # and fall back to the portal's imprint and privacy pages of the network without its own.
    portal_base_url: str = "http://127.0.0.1:8000"
    # Signs unsubscribe links (HMAC). Never in the repository: `make up` and the tests make one;
    # a production deployment sets it from a Secret. Without it the service refuses to start.
    unsubscribe_secret: SecretStr | None = None
    # An SMTP connection unused this long is checked with NOOP before the next mail.
    smtp_idle_check_seconds: float = 10.0

    # Celery on Redis (the broker is ``redis_url``).
    celery_queue: str = "notifications"
    # A task not acknowledged within this many seconds goes to another worker: longer than a task can
    # run (SMTP timeout x the commands of one mail), so a slow send is not run twice at once (the
    # copy would wait on the row lock and find it sent, but ties up a worker). A whole worker killed
    # meanwhile: its task comes back after this, or sooner by the dispatcher's sweep.
    celery_visibility_timeout: int = 120
    celery_restore_interval: int = 5  # how often a worker looks for such tasks

    # Retries of temporary failures: base * 2^(attempt-1), capped; then the delivery fails.
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 1800.0
    max_attempts: int = 12

    # The dispatcher in the service process: it enqueues due deliveries when woken by NOTIFY
    # and every ``sweep_interval_seconds``; a delivery enqueued but not done for
    # ``sweep_grace_seconds`` is enqueued again (the task is idempotent).
    sweep_interval_seconds: float = 1.0
    sweep_grace_seconds: float = 60.0
    sweep_batch_size: int = 200
    # Deliveries per Celery task: one task per mail cost the worker more than the mail's own work.
    # A task of 10 runs 10 sends back to back, so it stays well inside the visibility timeout even
    # when the server is slow (its timeout x 10 x a few commands is still unusual: then a copy of the
    # task waits on each row lock and finds the mail sent).
    task_batch_size: int = 10

    # Celery beat looks for due digests this often.
    digest_check_seconds: float = 60.0

    def signing_secret(self) -> str:
        if self.unsubscribe_secret is None or len(self.unsubscribe_secret.get_secret_value()) < 32:
            raise RuntimeError("BR_UNSUBSCRIBE_SECRET (at least 32 characters) must be set to sign unsubscribe links")
        return self.unsubscribe_secret.get_secret_value()

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.mail_from)[1]
