"""What a batch publishes, and in which order: decisions on ``decisions.<type>`` (and on
every topic a ``publish`` action names), rejects on ``dlq.<type>`` with the original bytes.

A batch owes the decisions topic every decision of its events that is not out yet: new
ones, ones a racing consumer stored first (it may die before it publishes them) and ones
a crashed consumer stored but never published. They go out in the order their events came
in, so a customer's decisions keep their order on the topic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from app.core.stages import Rejected, Valid, dead_letter_headers
from app.values import OutMessage
from schemas import Decision

TopicFor = Callable[[str, str], str]  # (kind, event type) -> topic name


def decision_messages(decision: Decision, topic_for: TopicFor) -> list[OutMessage]:
    """The decision on ``decisions.<type>`` and on every topic a ``publish`` action names,
    keyed by the partition key."""
    topics = [topic_for("decisions", decision.event_type)]
    for action in decision.actions:
        if action.get("type") == "publish" and action.get("topic") not in topics:
            topics.append(str(action["topic"]))
    value = decision.model_dump_json().encode()
    key = decision.partition_key.encode()
    headers = (("arbiter.event_type", decision.event_type.encode()),)
    return [OutMessage(topic, key, value, headers) for topic in topics]


def dead_letter_message(rejected: Rejected, topic_for: TopicFor) -> OutMessage:
    """The original bytes and key on ``dlq.<type>``, with why and from where as headers."""
    return OutMessage(
        topic=topic_for("dlq", rejected.record.event_type),
        key=rejected.record.key,
        value=rejected.record.value,
        headers=dead_letter_headers(rejected),
    )


def in_record_order(first: Sequence[Valid], owed: Mapping[str, Decision]) -> list[str]:
    """The event ids of ``owed`` in the order their events came in (``first``: the batch's
    first copy of each event)."""
    return [v.event.event_id for v in first if v.event.event_id in owed]


def owed_messages(
    first: Sequence[Valid], owed: Mapping[str, Decision], topic_for: TopicFor
) -> tuple[list[OutMessage], list[str]]:
    """Every message the owed decisions publish, in record order, and the event ids they
    mark published."""
    order = in_record_order(first, owed)
    return [m for event_id in order for m in decision_messages(owed[event_id], topic_for)], order
