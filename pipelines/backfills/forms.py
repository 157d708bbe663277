"""The backfill form, shared by the page (live preview and submit) and the API: the same fields,
the same messages. It parses; backfills.services decides (guardrails, preview, submit)."""

from __future__ import annotations

from typing import Any

from django import forms

from pipelines.authoring.models import Pipeline
from pipelines.backfills.models import Backfill
from pipelines.core import schedule
from pipelines.core.forms import StrictForm
from pipelines.deployments.models import Deployment, Environment

MAX_ACTIVE_RUNS = 16
REASON_MAX = 500


class BackfillForm(StrictForm):
    """A partition range of a deployed pipeline in one environment, and how to reprocess it."""

    environment = forms.ChoiceField(error_messages={"required": "Choose an environment."})
    start = forms.CharField(
        max_length=20, error_messages={"required": "Enter the first partition."}
    )
    end = forms.CharField(max_length=20, error_messages={"required": "Enter the last partition."})
    reprocess = forms.ChoiceField(
        choices=Backfill.Reprocess.choices,
        initial=Backfill.Reprocess.MISSING,
        help_text="Missing only: partitions Airflow has no run for. Missing and failed: also "
        "re-run failed ones. Everything: re-run all of them (loads replace partitions: nothing "
        "is counted twice).",
    )
    max_active_runs = forms.IntegerField(
        min_value=1,
        max_value=MAX_ACTIVE_RUNS,
        initial=1,
        help_text="Runs at once. 1 keeps the load on the warehouse and the order of partitions.",
        error_messages={
            "min_value": "At least 1 run at a time.",
            "max_value": f"At most {MAX_ACTIVE_RUNS} runs at a time.",
        },
    )
    reason = forms.CharField(
        max_length=REASON_MAX,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why (required to submit): shown with the backfill and in the audit log.",
    )
    allow_over_cap = forms.BooleanField(
        required=False,
        label="Allow more partitions than the environment's cap (platform admins)",
    )
    fingerprint = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline
        self.environments = {e.slug: e for e in Environment.objects.order_by("order")}
        self.fields["environment"].choices = [(s, e.name) for s, e in self.environments.items()]
        latest = pipeline.versions.order_by("-number").first()
        self.grain = latest.spec.partition_grain if latest else "day"
        example = "YYYY-MM-DDTHH:00" if self.grain == "hour" else "YYYY-MM-DD"
        self.fields["start"].help_text = f"First partition, {example}."
        self.fields["end"].help_text = f"Last partition (included), {example}."

    def _grain_for(self, environment: Environment | None) -> str:
        """The grain of the version deployed there (what Airflow runs), else the newest's."""
        if environment is not None:
            deployed = Deployment.objects.running(self.pipeline, environment)
            if deployed is not None:
                return deployed.version.spec.partition_grain
        return self.grain

    def clean_environment(self) -> Environment:
        return self.environments[self.cleaned_data["environment"]]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        grain = self._grain_for(data.get("environment"))
        for name in ("start", "end"):
            raw = data.get(name)
            if raw is None:
                continue
            try:
                data[name] = schedule.parse_partition(raw, grain)
            except schedule.ScheduleError as exc:
                self.add_error(name, str(exc))
        return data

    def asked(self) -> dict[str, Any]:
        """The valid form as the services' keywords: backfill_preview takes them all, and
        backfill_request these with the reason and the fingerprint."""
        data = self.cleaned_data
        return {
            "pipeline": self.pipeline,
            "environment": data["environment"],
            "first": data["start"],
            "last": data["end"],
            "reprocess": data["reprocess"],
            "max_active_runs": data["max_active_runs"],
            "allow_over_cap": data["allow_over_cap"],
        }
