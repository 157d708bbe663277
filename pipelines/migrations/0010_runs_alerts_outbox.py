# Run-now requests and alert deliveries move onto the one outbox base (core/outbox.py).
#
# What each old column meant, and where it goes:
# - `error` (the text shown under the run / on the delivery) becomes the base's `last_error`:
#   renamed, so every row keeps its text.
# - `attempts` keeps its name and meaning (claims so far, the one in progress included).
# - `lease_until` meant two things: a live claim, and for a delivery also the retry backoff
#   ("not before"). A pending row is not claimable before it in either case, so it becomes the
#   row's `next_attempt_at` and the lease is cleared (old rows have no lease token to fence
#   with); a pending row without one is due now (at its request time). Finished rows are not
#   due: both are cleared.

import django.utils.timezone
from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Coalesce


def _to_outbox(apps, schema_editor):
    for model, created in (("RunRequest", "requested_at"), ("AlertDelivery", "created_at")):
        rows = apps.get_model("pipelines", model).objects
        rows.filter(state="pending").update(
            next_attempt_at=Coalesce(F("lease_until"), F(created)), lease_until=None
        )
        rows.exclude(state="pending").update(next_attempt_at=None, lease_until=None)


def _from_outbox(apps, schema_editor):
    for model in ("RunRequest", "AlertDelivery"):
        rows = apps.get_model("pipelines", model).objects
        # Not before `next_attempt_at`: the old code read that from `lease_until`.
        rows.filter(state="pending", next_attempt_at__gt=django.utils.timezone.now()).update(
            lease_until=F("next_attempt_at")
        )


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines", "0009_deploy_outbox"),
    ]

    operations = [
        migrations.RenameField(
            model_name="alertdelivery",
            old_name="error",
            new_name="last_error",
        ),
        migrations.AlterField(
            model_name="alertdelivery",
            name="last_error",
            field=models.TextField(
                blank=True,
                help_text="Why the last attempt did not finish (Airflow unreachable, …).",
            ),
        ),
        migrations.RenameField(
            model_name="runrequest",
            old_name="error",
            new_name="last_error",
        ),
        migrations.AlterField(
            model_name="runrequest",
            name="last_error",
            field=models.TextField(
                blank=True,
                help_text="Why submitting failed, why the run failed, or why it is not followed.",
            ),
        ),
        migrations.AddField(
            model_name="alertdelivery",
            name="lease_token",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="alertdelivery",
            name="next_attempt_at",
            field=models.DateTimeField(
                blank=True,
                default=django.utils.timezone.now,
                help_text="Not claimed before this time.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="runrequest",
            name="lease_token",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="runrequest",
            name="next_attempt_at",
            field=models.DateTimeField(
                blank=True,
                default=django.utils.timezone.now,
                help_text="Not claimed before this time.",
                null=True,
            ),
        ),
        migrations.RunPython(_to_outbox, _from_outbox, elidable=False),
    ]
