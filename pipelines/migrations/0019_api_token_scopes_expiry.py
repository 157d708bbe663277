# API tokens get a public id (not part of the secret), scopes, an expiry and a revocation.
# Tokens made before keep working: scopes read + write (not approve), expiring 90 days from now.

import secrets
from datetime import timedelta

from django.db import migrations, models
from django.utils import timezone

EXISTING_SCOPES = ["read", "write"]
EXISTING_DAYS = 90


def fill_existing(apps, schema_editor):
    ApiToken = apps.get_model("pipelines", "ApiToken")
    expires = timezone.now() + timedelta(days=EXISTING_DAYS)
    for token in ApiToken.objects.all():
        token.public_id = "tok_" + secrets.token_hex(6)
        token.scopes = EXISTING_SCOPES
        token.expires_at = expires
        token.save(update_fields=["public_id", "scopes", "expires_at"])


class Migration(migrations.Migration):

    dependencies = [
        ("pipelines", "0018_run_four_eyes"),
    ]

    operations = [
        migrations.RemoveField(model_name="apitoken", name="prefix"),
        migrations.AddField(
            model_name="apitoken",
            name="public_id",
            field=models.CharField(max_length=24, null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="scopes",
            field=models.JSONField(default=list, help_text="A list of read, write, approve."),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="revoked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="revoked_reason",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.RunPython(fill_existing, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apitoken",
            name="public_id",
            field=models.CharField(max_length=24, unique=True),
        ),
        migrations.AlterField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('pipeline_created', 'Pipeline created'), ('pipeline_edited', 'Pipeline edited'), ('deployment_requested', 'Deployment requested'), ('run_requested', 'Run requested'), ('run_approved', 'Run approved'), ('run_rejected', 'Run rejected'), ('run_withdrawn', 'Run withdrawn'), ('api_token_created', 'API token created'), ('api_token_revoked', 'API token revoked'), ('environment_changed', 'Environment changed'), ('pipeline_upgraded', 'Pipeline upgraded to the current template'), ('promotion_requested', 'Promotion requested'), ('promotion_approved', 'Promotion approved'), ('promotion_rejected', 'Promotion rejected'), ('promotion_withdrawn', 'Promotion withdrawn'), ('rollback', 'Rollback'), ('backfill_requested', 'Backfill requested'), ('backfill_approved', 'Backfill approved'), ('backfill_rejected', 'Backfill rejected'), ('backfill_paused', 'Backfill paused'), ('backfill_resumed', 'Backfill resumed'), ('backfill_cancelled', 'Backfill cancelled')], max_length=40),
        ),
    ]
