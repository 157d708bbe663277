"""The run-now form: one partition of a deployed pipeline, shared by the page and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.utils import timezone

from pipelines.authoring.models import Pipeline
from pipelines.core import schedule
from pipelines.core.forms import StrictForm
from pipelines.deployments.models import Environment
from pipelines.runs import services as runs


class RunNowForm(StrictForm):
    """Run a deployed pipeline for one partition now."""

    environment = forms.ChoiceField()
    partition = forms.CharField(max_length=20)
    accept_smaller = forms.BooleanField(
        required=False,
        label="Accept a smaller partition",
        help_text="Turn the shrink guard off for this run: the source really has fewer rows now.",
    )

    def __init__(self, *args: Any, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline
        self.grain = pipeline.versions.first().spec.partition_grain
        self.fields["environment"].choices = [
            (e.slug, e.name) for e in Environment.objects.order_by("order")
        ]
        self.fields["partition"].help_text = (
            "YYYY-MM-DDTHH:00" if self.grain == "hour" else "YYYY-MM-DD"
        )

    def asked(self) -> dict[str, Any]:
        """The valid form as the services' keywords (releases.runs.run_case and run_now)."""
        data = self.cleaned_data
        return {
            "pipeline": self.pipeline,
            "environment": data["environment"],
            "partition": data["partition"],
            "accept_smaller": data["accept_smaller"],
        }

    def clean_partition(self) -> datetime:
        try:
            start = schedule.parse_partition(self.cleaned_data["partition"], self.grain)
        except schedule.ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from None
        return start

    def clean_environment(self) -> Environment:
        return Environment.objects.get(slug=self.cleaned_data["environment"])

    def clean(self) -> dict[str, Any]:
        """Refuse partitions before the start date or not complete yet in the pipeline's zone.

        Judged by the version deployed to the chosen environment (its zone and grain), else by
        the newest version; runs.run_request checks again with the deployed one.
        """

        data = super().clean()
        partition, environment = data.get("partition"), data.get("environment")
        if partition is None or environment is None:
            return data
        deployment = runs.deployment_for(pipeline=self.pipeline, environment=environment)
        version = deployment.version if deployment else self.pipeline.versions.first()
        try:
            runs.partition_check(spec=version.spec, partition=partition, now=timezone.now())
        except runs.RunError as exc:
            self.add_error(exc.field, exc.message)
        return data
