"""The promotion form: which version goes to which approval environment, and why.

Shared by the promote page and the API, so that both name the same field with the same
sentence. It only parses; `services.promotion_request` decides whether the request stands.
"""

from __future__ import annotations

from typing import Any

from django import forms

from pipelines.authoring.models import Pipeline, PipelineVersion
from pipelines.core.forms import StrictForm
from pipelines.deployments.models import Environment

REASON_MAX = 500


class PromotionForm(StrictForm):
    """Promote one version of `pipeline` into an environment that requires approval."""

    environment = forms.ChoiceField(
        error_messages={"required": "Choose the environment to promote to."}
    )
    version = forms.ChoiceField(error_messages={"required": "Choose the version to promote."})
    reason = forms.CharField(
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why this version should go there: the approver reads it.",
        error_messages={
            "required": "Say why this version should go there.",
            "max_length": "Keep the reason to %(limit_value)d characters or fewer "
            "(it has %(show_value)d).",
        },
    )

    def __init__(self, *args: Any, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline
        environments = Environment.objects.filter(requires_approval=True).order_by("order", "id")
        versions = pipeline.versions.order_by("-number")
        self.environments = {e.slug: e for e in environments}
        self.versions = {str(v.number): v for v in versions}
        env_field, version_field = self.fields["environment"], self.fields["version"]
        env_field.choices = [(e.slug, e.name) for e in self.environments.values()]
        env_field.error_messages["invalid_choice"] = self._environment_hint()
        version_field.choices = [(n, f"v{n}") for n in self.versions]
        version_field.error_messages["invalid_choice"] = self._version_hint()
        if self.environments:
            env_field.initial = next(iter(self.environments))
        if self.versions:
            version_field.initial = next(iter(self.versions))  # the newest

    def _environment_hint(self) -> str:
        if not self.environments:
            return "No environment requires approval: deploy directly from the pipeline's page."
        names = ", ".join(e.slug for e in self.environments.values())
        return (
            f"Choose an environment that requires approval ({names}); the others take "
            "Deploy directly."
        )

    def _version_hint(self) -> str:
        if not self.versions:
            return "This pipeline has no version yet."
        return f"Choose one of this pipeline's versions (1 to {next(iter(self.versions))})."

    def clean_environment(self) -> Environment:
        return self.environments[self.cleaned_data["environment"]]

    def clean_version(self) -> PipelineVersion:
        return self.versions[self.cleaned_data["version"]]

    def chosen(self) -> tuple[Environment | None, PipelineVersion | None]:
        """The environment and version the form shows now (posted, asked for, or the default),
        each None when it names none of the choices. No validation, no queries."""
        slug, number = self["environment"].value(), self["version"].value()
        return self.environments.get(str(slug or "")), self.versions.get(str(number or ""))


COMMENT_MAX = 500  # Promotion.decision_comment (a longer one: a field error, not a DB error)


class DecisionForm(StrictForm):
    """The comment of an approval or a rejection (the service says whether one is required)."""

    comment = forms.CharField(
        required=False,
        max_length=COMMENT_MAX,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={
            "max_length": "Keep the comment to %(limit_value)d characters or fewer "
            "(it has %(show_value)d)."
        },
    )
