"""The portal's forms' base, and the API token form.

StrictForm: a posted field the form does not know is refused. A misspelled or unsupported
field would otherwise be dropped and its default used, so a typo would silently change what is
deployed. Pages and the API (whose schemas forbid extra fields too) share the forms, so both
refuse it with the same sentence.

TokenForm: shared by the tokens page and POST /api/v1/tokens: the same fields, the same
sentences. It parses; core.tokens.token_issue decides (and says) what a token may be.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings

from pipelines.core import tokens
from pipelines.core.models import ApiToken

# Sent with every page form, never a field of one: Django's CSRF token.
IGNORED_FIELDS = frozenset({"csrfmiddlewaretoken"})


def unknown_fields_message(names: list[str]) -> str:
    quoted = ", ".join(f"“{name}”" for name in names)
    if len(names) == 1:
        return f"Unknown field {quoted}: this form does not take it (check the spelling)."
    return f"Unknown fields {quoted}: this form does not take them (check the spelling)."


def unknown_fields(data: Any, known: Iterable[str]) -> list[str]:
    """The keys of posted `data` that are none of `known` (nor the CSRF token), sorted."""
    allowed = set(known) | IGNORED_FIELDS
    return sorted(str(key)[:100] for key in data if key not in allowed)


def unknown_fields_error(data: Any, known: Iterable[str]) -> str | None:
    """For a view that reads a few posted keys without a form: the sentence refusing the
    others, or None."""
    unknown = unknown_fields(data, known)
    return unknown_fields_message(unknown[:10]) if unknown else None


class StrictForm(forms.Form):
    """A form whose `clean` refuses posted keys that are none of its fields' names."""

    def known_names(self) -> set[str]:
        names = set(IGNORED_FIELDS)
        for bound in self:
            widget = bound.field.widget
            names.add(bound.html_name)
            if isinstance(widget, forms.MultiWidget):
                names.update(f"{bound.html_name}{suffix}" for suffix in widget.widgets_names)
        return names

    def unknown_fields(self) -> list[str]:
        if not self.is_bound or not hasattr(self.data, "keys"):
            return []
        return unknown_fields(self.data, self.known_names())

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        unknown = self.unknown_fields()
        if unknown:
            self.add_error(None, unknown_fields_message(unknown[:10]))
        return data


# --- API tokens ---------------------------------------------------------------------------

NAME_MAX = ApiToken._meta.get_field("name").max_length


class TokenForm(StrictForm):
    name = forms.CharField(
        max_length=NAME_MAX,
        help_text="What or who uses it, e.g. “ci-deploys”.",
        error_messages={
            "required": "Name the token (what or who uses it).",
            "max_length": "Keep the name to %(limit_value)d characters or fewer "
            "(it has %(show_value)d).",
        },
    )
    expires_in_days = forms.IntegerField(
        error_messages={"invalid": "Give a whole number of days."},
    )
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=["read"],
        help_text="Read: GET. Write: any change. Approve: approve or reject requests (needs write "
        "too).",
        error_messages={
            "required": "Choose at least one scope.",
            "invalid_choice": "Unknown scope %(value)s: choose from "
            + ", ".join(tokens.SCOPES)
            + ".",
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        days = self.fields["expires_in_days"]
        days.initial = settings.API_TOKEN_DEFAULT_DAYS
        days.help_text = f"1 to {settings.API_TOKEN_MAX_DAYS} days."
        days.widget.attrs.update({"min": 1, "max": settings.API_TOKEN_MAX_DAYS})

    def clean_expires_in_days(self) -> int:
        days = self.cleaned_data["expires_in_days"]
        try:
            tokens.check_days(days)
        except tokens.TokenError as exc:
            raise forms.ValidationError(exc.message) from None
        return days
