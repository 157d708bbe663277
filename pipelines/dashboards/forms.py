"""One filter form per list page, shared by the page and the API.

Each form validates every query-string filter of its list and turns into the selector's
arguments. A page shows a bad value's error next to its filter and lists as if the value were
not given (links people paste keep working); the API answers 422 with the same messages.
No form runs a query: an unknown team or owner simply matches no rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError

from pipelines.alerts.models import Alert
from pipelines.backfills.selectors import BACKFILL_STATES
from pipelines.core.models import AuditEvent
from pipelines.dashboards.selectors import ALERT_STATES, HEALTH_SORTS, HealthFilters
from pipelines.monitoring.models import Verdict
from pipelines.releases.models import Promotion
from pipelines.releases.selectors import QUEUE_STATES

# A keyset token is opaque; a longer one is not one of ours (keyset_page ignores forged ones).
TOKEN_MAX = 1000


def _choice(values: list[str], *, empty: bool) -> forms.ChoiceField:
    """A choice of `values` (or nothing, if `empty`) whose error lists what is allowed."""
    return forms.ChoiceField(
        required=False,
        choices=[*([("", "")] if empty else []), *((v, v) for v in values)],
        error_messages={"invalid_choice": f"Use one of: {', '.join(values)}."},
    )


def _slug() -> forms.SlugField:
    return forms.SlugField(required=False, max_length=50)


class ListFilterForm(forms.Form):
    """The pager's fields, which every list has: a page number (or "last") and keyset tokens."""

    page = forms.CharField(required=False, max_length=20)
    after = forms.CharField(required=False, max_length=TOKEN_MAX, strip=False)
    before = forms.CharField(required=False, max_length=TOKEN_MAX, strip=False)

    # What a missing or bad value means; the order is the selector's keyword order.
    defaults: ClassVar[dict[str, Any]] = {"page": 1, "after": "", "before": ""}

    def clean_page(self) -> int | str:
        value = self.cleaned_data["page"]
        if not value:
            return 1
        if value == "last":
            return value
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise ValidationError("Give a page number from 1 on, or last.", code="invalid")
        return int(value)

    @property
    def values(self) -> dict[str, Any]:
        """Every filter, a missing or bad one at its default: the selector's keyword arguments."""
        self.is_valid()
        return {
            name: self.cleaned_data.get(name) or default for name, default in self.defaults.items()
        }


class HealthFilterForm(ListFilterForm):
    """Filters of /health/ and GET /api/v1/health."""

    team = _slug()
    environment = _slug()
    owner = forms.CharField(required=False, max_length=150, validators=[UnicodeUsernameValidator()])
    verdict = _choice(list(Verdict.values), empty=True)
    sort = _choice(list(HEALTH_SORTS), empty=True)

    defaults: ClassVar[dict[str, Any]] = {
        "team": "",
        "environment": "",
        "owner": "",
        "verdict": "",
        "sort": "worst",
        **ListFilterForm.defaults,
    }

    def filters(self) -> HealthFilters:
        """The selector's filters."""
        values = self.values
        page = values.pop("page")
        return HealthFilters(
            **values, page=page if isinstance(page, int) else 1, last=page == "last"
        )


class SlaFilterForm(ListFilterForm):
    """Filters of /health/sla/ (no API list yet)."""

    team = _slug()
    environment = _slug()

    defaults: ClassVar[dict[str, Any]] = {
        "team": "",
        "environment": "",
        **ListFilterForm.defaults,
    }


class AlertFilterForm(ListFilterForm):
    """Filters of /alerts/ and GET /api/v1/alerts."""

    state = _choice(list(ALERT_STATES), empty=True)
    team = _slug()
    environment = _slug()
    kind = _choice(list(Alert.Kind.values), empty=True)

    defaults: ClassVar[dict[str, Any]] = {
        "state": "recent",
        "team": "",
        "environment": "",
        "kind": "",
        **ListFilterForm.defaults,
    }


class AuditFilterForm(ListFilterForm):
    """Filters of /audit/ and GET /api/v1/audit."""

    pipeline = _slug()
    actor = forms.CharField(required=False, max_length=150, validators=[UnicodeUsernameValidator()])
    action = _choice(list(AuditEvent.Action.values), empty=True)
    environment = _slug()

    defaults: ClassVar[dict[str, Any]] = {
        "pipeline": "",
        "actor": "",
        "action": "",
        "environment": "",
        **ListFilterForm.defaults,
    }


class PromotionFilterForm(ListFilterForm):
    """Filters of the approvals queue and GET /api/v1/promotions."""

    state = _choice(list(QUEUE_STATES), empty=True)
    environment = _slug()
    pipeline = _slug()

    defaults: ClassVar[dict[str, Any]] = {
        "state": Promotion.State.PENDING,
        "environment": "",
        "pipeline": "",
        **ListFilterForm.defaults,
    }


class BackfillFilterForm(ListFilterForm):
    """Filters of GET /api/v1/backfills (and a backfills list page): a state or "active"."""

    state = _choice(list(BACKFILL_STATES), empty=True)
    pipeline = _slug()
    environment = _slug()
    team = _slug()

    defaults: ClassVar[dict[str, Any]] = {
        "pipeline": "",
        "environment": "",
        "state": "",
        "team": "",
        **ListFilterForm.defaults,
    }
