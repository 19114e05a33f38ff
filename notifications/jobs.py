"""RQ jobs for notifications. They take ids and are safe to run twice."""

from __future__ import annotations

from core.queue import periodic
from notifications import services


def fan_out(notification_id: int) -> int:
    """Record who receives a notification and queue their delivery in batches."""
    return services.fan_out(notification_id)


def deliver(delivery_ids: list[int]) -> int:
    """Send one batch of deliveries over one mail connection."""
    return services.deliver(delivery_ids)


@periodic(queue="bulk", cron="0 7 * * *")
def send_daily_digests() -> int:
    """Every morning: one email per person gathering what they chose to receive daily."""
    return services.send_daily_digests()
