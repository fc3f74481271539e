"""notification groups, silences, PagerDuty routing keys

- ``deliveries`` becomes one notification carrying a group of events: ``uid`` (the
  ``webhook-id``), ``group_key`` and ``sealed_at``; which events it carries moves to
  ``delivery_events``. Each existing delivery keeps its event as its only member and its event
  id as its ``uid``, so a receiver deduplicating on ``webhook-id`` sees nothing new;
- ``silences``: matchers with a start and an end; ``alert_events.silence_id`` marks the events
  a silence kept from being delivered;
- ``webhooks.routing_key``: PagerDuty's integration key.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("run_glob", sa.String(length=256), nullable=True),
        sa.Column("rule", sa.String(length=128), nullable=True),
        sa.Column("indicator", sa.String(length=64), nullable=True),
        sa.Column("probe_glob", sa.String(length=256), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_silences_project_id", "silences", ["project_id"])
    with op.batch_alter_table("alert_events") as batch:
        batch.add_column(sa.Column("silence_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_alert_events_silence_id", "silences", ["silence_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("routing_key", sa.String(length=64), nullable=True))

    op.create_table(
        "delivery_events",
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["event_id"], ["alert_events.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id", "event_id"),
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_delivery_events_webhook_event"),
    )
    op.create_index("ix_delivery_events_event", "delivery_events", ["event_id"])
    op.execute(
        "INSERT INTO delivery_events (delivery_id, event_id, webhook_id) "
        "SELECT id, event_id, webhook_id FROM deliveries"
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("group_key", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE deliveries SET uid = event_id, group_key = 'event', sealed_at = created_at")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_webhook_event", type_="unique")
        batch.drop_column("event_id")
        batch.alter_column("uid", existing_type=sa.String(length=36), nullable=False)
        batch.alter_column("group_key", existing_type=sa.String(length=512), nullable=False)
        batch.create_unique_constraint("uq_deliveries_uid", ["uid"])
    op.create_index("ix_deliveries_webhook_group", "deliveries", ["webhook_id", "group_key"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_webhook_group", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("event_id", sa.String(length=36), nullable=True))
    # a grouped delivery goes back as the delivery of its first event; the others are dropped
    op.execute(
        "UPDATE deliveries SET event_id = (SELECT MIN(e.event_id) FROM delivery_events e "
        "WHERE e.delivery_id = deliveries.id)"
    )
    op.execute("DELETE FROM deliveries WHERE event_id IS NULL")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_uid", type_="unique")
        batch.drop_column("uid")
        batch.drop_column("group_key")
        batch.drop_column("sealed_at")
        batch.alter_column("event_id", existing_type=sa.String(length=36), nullable=False)
        batch.create_foreign_key(
            "fk_deliveries_event_id", "alert_events", ["event_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_unique_constraint("uq_deliveries_webhook_event", ["webhook_id", "event_id"])
    op.drop_index("ix_delivery_events_event", table_name="delivery_events")
    op.drop_table("delivery_events")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("routing_key")
    with op.batch_alter_table("alert_events") as batch:
        batch.drop_constraint("fk_alert_events_silence_id", type_="foreignkey")
        batch.drop_column("silence_id")
    op.drop_index("ix_silences_project_id", table_name="silences")
    op.drop_table("silences")
