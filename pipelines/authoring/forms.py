"""The guarded forms. PipelineForm is the single validation for the web form and the JSON API."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.validators import URLValidator
from django.urls import reverse
from django.utils import timezone

from pipelines.authoring import services
from pipelines.authoring.models import Pipeline, validate_target_table
from pipelines.authoring.spec import Column, PipelineSpec
from pipelines.catalog import selectors as catalog
from pipelines.catalog.models import SourceColumn, SourceTable
from pipelines.core import access, schedule
from pipelines.core.errors import user_error
from pipelines.core.forms import StrictForm
from pipelines.core.models import Membership, Team

User = get_user_model()

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9:_.-]{0,49}$")
MAX_TAGS = 10
BOUNDS = {
    "retries": (0, 10),
    "retry_delay_minutes": (1, 120),
    "execution_timeout_minutes": (1, 24 * 60),
    "sla_minutes": (1, 7 * 24 * 60),
}
DEFAULTS = {"retries": 3, "retry_delay_minutes": 5, "execution_timeout_minutes": 60}


class ListField(forms.CharField):
    """A list given as JSON array (API) or comma-separated text (HTML form)."""

    def to_python(self, value: Any) -> list[str]:
        if value in self.empty_values:
            return []
        if isinstance(value, list | tuple):
            if not all(isinstance(item, str) for item in value):
                raise forms.ValidationError("Give a list of names (strings).", code="invalid")
            items = value
        elif isinstance(value, str):
            items = value.split(",")
        else:
            raise forms.ValidationError("Give a list of names.", code="invalid")
        return [item.strip() for item in items if item.strip()]

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def validate(self, value: list[str]) -> None:
        if self.required and not value:
            raise forms.ValidationError(self.error_messages["required"], code="required")


def bounded_int(name: str, *, required: bool = True) -> forms.IntegerField:
    low, high = BOUNDS[name]
    return forms.IntegerField(
        required=required,
        min_value=low,
        max_value=high,
        initial=DEFAULTS.get(name),
        error_messages={
            "min_value": f"Must be between {low} and {high}.",
            "max_value": f"Must be between {low} and {high}.",
        },
    )


def source_key(table: SourceTable) -> str:
    return f"{table.database.name}.{table.qualified_name}"


def source_tables() -> list[SourceTable]:
    return list(SourceTable.objects.select_related("database").order_by("database__name", "name"))


def granted_source_tables(user: Any) -> list[SourceTable]:
    """The tables of the source databases granted to a team of `user` (what the form offers)."""
    return list(catalog.granted_tables(user=user).order_by("database__name", "name"))


def source_refusal(table: SourceTable, team: Team) -> str | None:
    """Why `team` may not read `table`, or None when its database is granted to the team."""
    if table.database.teams.filter(pk=team.pk).exists():
        return None
    return f"Source {table.database.name} is not granted to team {team.name}; ask a platform admin."


def unique_names(keys: Any) -> dict[str, str]:
    """{table name: key} for the table names that occur once among `keys` (database.table)."""
    by_name: dict[str, list[str]] = {}
    for key in keys:
        by_name.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    return {name: found[0] for name, found in by_name.items() if len(found) == 1}


ADOPT_REFUSAL = (
    "Only a platform admin may adopt an existing warehouse table: leave this off, and ask a "
    "platform admin to allow adoption for this pipeline (admin → Pipelines → Adopt allowed) "
    "before you set it."
)


class PipelineForm(StrictForm):
    """Validate a new pipeline. After is_valid(), `self.spec` is the frozen PipelineSpec."""

    name = forms.CharField(
        max_length=63,
        help_text="Lower-case letters, digits and hyphens; becomes the DAG id.",
    )
    team = forms.ChoiceField()
    owner = forms.CharField(max_length=150, help_text="Username of the person on the hook.")
    source = forms.ChoiceField(help_text="Table from the source catalog.")
    target_table = forms.CharField(max_length=63, help_text="Table in the warehouse.")
    schedule = forms.CharField(
        max_length=100, initial="0 2 * * *", help_text="Cron: minute hour day month weekday."
    )
    timezone = forms.CharField(
        max_length=64, initial="UTC", label="Time zone", help_text="IANA name, e.g. Europe/London."
    )
    primary_key = ListField(help_text="One or more source columns, comma-separated.")
    partition_column = forms.CharField(max_length=63)
    partition_grain = forms.ChoiceField(choices=[("day", "Day"), ("hour", "Hour")], initial="day")
    sla_minutes = bounded_int("sla_minutes", required=False)
    sla_minutes.label = "SLA (minutes)"
    sla_minutes.help_text = "Must have succeeded this long after the scheduled time. Empty: none."
    retries = bounded_int("retries")
    retry_delay_minutes = bounded_int("retry_delay_minutes")
    retry_delay_minutes.label = "First retry after (minutes)"
    retry_delay_minutes.help_text = "Doubles on each retry, capped."
    execution_timeout_minutes = bounded_int("execution_timeout_minutes")
    execution_timeout_minutes.label = "Timeout per task (minutes)"
    tags = ListField(required=False, help_text="Comma-separated, e.g. finance, daily-close.")
    runbook_url = forms.CharField(
        max_length=500,
        required=False,
        label="Runbook URL",
        help_text="What on-call should do when this fails (http:// or https://).",
    )
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea)
    allow_empty = forms.BooleanField(
        required=False, help_text="A partition with no rows is a success, not a failure."
    )
    shrink_guard_percent = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=100,
        initial=50,
        label="Shrink guard (%)",
        help_text="A re-run may not leave a loaded partition with fewer than this percentage of "
        "its rows (0 turns the guard off). A run can accept a smaller partition on purpose.",
        error_messages={
            "min_value": "Must be between 0 and 100.",
            "max_value": "Must be between 0 and 100.",
        },
    )
    adopt_existing_table = forms.BooleanField(
        required=False,
        label="Adopt an existing table",
        help_text="The target table already exists and was not created by the portal: take it "
        "over, and let every run replace its partitions. Without this, such a table is refused. "
        "Only a platform admin may set it, or allow it for the pipeline.",
    )

    def __init__(
        self, *args: Any, user: Any, pipeline: Pipeline | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.pipeline = pipeline
        self.spec: PipelineSpec | None = None
        if pipeline is not None:
            # Editing: the DAG id, the table and the team are the pipeline's identity; a new
            # name or table is a new pipeline. Disabled fields take these values, whatever
            # is posted.
            for name, value in (
                ("name", pipeline.slug),
                ("target_table", pipeline.target_table),
                ("team", pipeline.team.slug),
            ):
                self.fields[name].disabled = True
                self.fields[name].initial = value
            self.fields["change_note"] = forms.CharField(
                max_length=200,
                label="Change note",
                help_text="Why this change (shown in the version list and the audit log).",
            )
        # Every table is a valid choice (so a source not granted to the team is refused with
        # its reason, next to the field); the list offers only the user's teams' sources.
        self._tables = {source_key(t): t for t in source_tables()}
        granted = [source_key(t) for t in granted_source_tables(user)]
        source = self.fields["source"]
        source.choices = [("", "Choose a source table")] + [(key, key) for key in self._tables]
        source.widget.choices = [("", "Choose a source table")] + [(key, key) for key in granted]
        self._add_htmx_attrs()
        teams = Team.objects.filter(memberships__user=user).order_by("name")
        self.fields["team"].choices = [(t.slug, t.name) for t in teams]
        # An API caller may name a source by table name alone when it is unique among the
        # tables granted to its teams (or, failing that, in the whole catalog).
        self._unique_names = unique_names(self._tables) | unique_names(granted)
        if self.is_bound and hasattr(self.data, "copy"):
            raw = self.data.get(self.add_prefix("source"))
            if isinstance(raw, str) and raw in self._unique_names:
                self.data = self.data.copy()
                self.data[self.add_prefix("source")] = self._unique_names[raw]

    def _add_htmx_attrs(self) -> None:
        """Live help while typing: the schedule explained, the source's columns suggested."""
        explain = {
            "hx-get": reverse("pipelines:schedule-explain"),
            "hx-trigger": "input changed delay:250ms, change",
            "hx-include": "[name=schedule],[name=timezone],[name=partition_grain]",
            "hx-target": "#schedule-explain",
            "autocomplete": "off",
        }
        self.fields["schedule"].widget.attrs.update(explain)
        self.fields["timezone"].widget.attrs.update(explain, list="tz-names")
        self.fields["source"].widget.attrs.update(
            {
                "hx-get": reverse("pipelines:source-columns"),
                "hx-trigger": "change",
                "hx-target": "#source-columns",
            }
        )
        self.fields["primary_key"].widget.attrs.update(list="column-names", autocomplete="off")
        self.fields["partition_column"].widget.attrs.update(
            list="temporal-columns", autocomplete="off"
        )
        self.fields["description"].widget.attrs.update(rows=3)

    # --- single fields --------------------------------------------------------------------------
    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not NAME_RE.match(name):
            raise forms.ValidationError(
                "Use 3–63 lower-case letters, digits and hyphens, starting with a letter "
                "and not ending with a hyphen (it becomes the Airflow DAG id)."
            )
        if self.pipeline is None and Pipeline.objects.filter(slug=name).exists():
            raise forms.ValidationError(services.name_taken_message(name))
        return name

    def clean_target_table(self) -> str:
        table = self.cleaned_data["target_table"].strip()
        validate_target_table(table)
        others = Pipeline.objects.filter(target_table=table)
        if self.pipeline is not None:
            others = others.exclude(pk=self.pipeline.pk)
        taken_by = others.values_list("slug", flat=True)
        if taken_by:
            raise forms.ValidationError(services.table_taken_message(taken_by[0], table))
        return table

    def clean_schedule(self) -> str:
        try:
            return schedule.validate_cron(self.cleaned_data["schedule"])
        except schedule.ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_timezone(self) -> str:
        name = self.cleaned_data["timezone"].strip()
        try:
            schedule.validate_timezone(name)
        except schedule.ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def clean_tags(self) -> list[str]:
        tags = self.cleaned_data["tags"]
        if len(tags) > MAX_TAGS:
            raise forms.ValidationError(f"At most {MAX_TAGS} tags.")
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise forms.ValidationError(
                f"Tag “{bad[0]}” is not allowed: use up to 50 lower-case letters, digits and "
                ": _ . - (starting with a letter or digit)."
            )
        return list(dict.fromkeys(tags))

    def clean_shrink_guard_percent(self) -> int:
        value = self.cleaned_data["shrink_guard_percent"]
        return PipelineSpec.shrink_guard_percent if value is None else value

    def clean_runbook_url(self) -> str:
        url = self.cleaned_data["runbook_url"].strip()
        if url:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except forms.ValidationError:
                raise forms.ValidationError(
                    "The runbook must be an http:// or https:// link."
                ) from None
        return url

    # --- fields that depend on each other -------------------------------------------------------
    def clean(self) -> dict[str, Any]:
        data = super().clean()
        team = self._clean_team(data)
        if team is not None:
            self._clean_owner(data, team)
        table = self._tables.get(data.get("source", ""))
        if table is not None and team is not None:
            refusal = source_refusal(table, team)
            if refusal:
                self.add_error("source", refusal)
                table = None
        if data.get("adopt_existing_table") and not access.can_adopt_existing_table(
            self.user, self.pipeline
        ):
            self.add_error("adopt_existing_table", ADOPT_REFUSAL)
        columns = {c.name: c for c in table.columns.all()} if table else {}
        if table is not None and not columns:
            self.add_error("source", "This table has no columns in the catalog; re-introspect it.")
        if columns:
            self._clean_columns(data, columns)
        if not self.errors:
            self.spec = self._build_spec(data, team, table)
        return data

    def _clean_team(self, data: dict[str, Any]) -> Team | None:
        slug = data.get("team")
        if not slug:
            return None
        team = Team.objects.filter(slug=slug).first()
        if team is None:
            self.add_error("team", f"No team “{slug}”.")
            return None
        return team

    def _clean_owner(self, data: dict[str, Any], team: Team) -> None:
        username = (data.get("owner") or "").strip()
        if not username:
            return
        owner = User.objects.filter(username=username, is_active=True).first()
        if owner is None:
            self.add_error("owner", f"No active user “{username}”.")
        elif not Membership.objects.filter(team=team, user=owner).exists():
            self.add_error("owner", f"{username} is not a member of team {team.name}.")
        else:
            data["owner"] = owner.username

    def _clean_columns(self, data: dict[str, Any], columns: dict[str, SourceColumn]) -> None:
        known = ", ".join(columns)
        key = data.get("primary_key") or []
        missing = [c for c in key if c not in columns]
        if missing:
            self.add_error(
                "primary_key",
                f"Column “{missing[0]}” is not in the source table (columns: {known}).",
            )
        elif len(set(key)) != len(key):
            self.add_error("primary_key", "A column is listed twice.")
        partition = (data.get("partition_column") or "").strip()
        data["partition_column"] = partition
        grain = data.get("partition_grain")
        if partition and partition not in columns:
            self.add_error(
                "partition_column",
                f"Column “{partition}” is not in the source table (columns: {known}).",
            )
        elif partition and not columns[partition].is_temporal:
            self.add_error(
                "partition_column",
                f"“{partition}” is a {columns[partition].kind} column; the partition column "
                "must be a date or timestamp.",
            )
        elif partition and grain == "hour" and columns[partition].kind == "date":
            self.add_error(
                "partition_grain",
                f"“{partition}” is a date column: it cannot hold hourly partitions.",
            )
        cron = data.get("schedule")
        tz = data.get("timezone")
        if cron and tz and grain in schedule.GRAINS:
            try:
                schedule.check_grain(cron, tz, grain, now=timezone.now())
            except schedule.ScheduleError as exc:
                self.add_error("schedule", str(exc))
            except schedule.schedule_errors() as exc:  # a cron croniter parses but cannot walk
                self.add_error(
                    "schedule", f"The portal cannot work out when this runs: {user_error(exc)}."
                )

    def _build_spec(self, data: dict[str, Any], team: Team, table: SourceTable) -> PipelineSpec:
        return PipelineSpec(
            name=data["name"],
            team=team.slug,
            team_domain=team.domain,
            owner=data["owner"],
            source_database=table.database.name,
            source_dialect=table.database.dialect,
            source_conn_id=table.database.conn_id,
            source_schema=table.schema,
            source_table=table.name,
            columns=tuple(Column(c.name, c.kind) for c in table.columns.all()),
            target_table=data["target_table"],
            schedule=data["schedule"],
            timezone=data["timezone"],
            primary_key=tuple(data["primary_key"]),
            partition_column=data["partition_column"],
            partition_grain=data["partition_grain"],
            sla_minutes=data.get("sla_minutes"),
            retries=data["retries"],
            retry_delay_minutes=data["retry_delay_minutes"],
            execution_timeout_minutes=data["execution_timeout_minutes"],
            tags=tuple(data.get("tags") or ()),
            runbook_url=data.get("runbook_url", ""),
            description=data.get("description", ""),
            allow_empty=bool(data.get("allow_empty")),
            shrink_guard_percent=data["shrink_guard_percent"],
            adopt_existing_table=bool(data.get("adopt_existing_table")),
        )


def initial_from_spec(spec: PipelineSpec) -> dict[str, Any]:
    """The form's values for an existing version's spec (the edit form starts from them)."""
    table = ".".join(p for p in (spec.source_schema, spec.source_table) if p)
    values = {
        name: getattr(spec, name)
        for name in (
            "name", "team", "owner", "target_table", "schedule", "timezone", "partition_column",
            "partition_grain", "sla_minutes", "retries", "retry_delay_minutes",
            "execution_timeout_minutes", "runbook_url", "description", "allow_empty",
            "shrink_guard_percent", "adopt_existing_table",
        )
    }  # fmt: skip
    values |= {
        "source": f"{spec.source_database}.{table}",
        "primary_key": list(spec.primary_key),
        "tags": list(spec.tags),
    }
    return values
