"""The API token form, shared by the tokens page and POST /api/v1/tokens: the same fields, the
same sentences. It parses; core.tokens.token_issue decides (and says) what a token may be."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from pipelines.core import tokens
from pipelines.core.models import ApiToken

NAME_MAX = ApiToken._meta.get_field("name").max_length


class TokenForm(forms.Form):
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
