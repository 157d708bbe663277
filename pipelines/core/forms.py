"""The base of the portal's forms: a posted field the form does not know is refused.

A misspelled or unsupported field would otherwise be dropped and its default used, so a typo
would silently change what is deployed. Pages and the API (whose schemas forbid extra fields
too) share the forms, so both refuse it with the same sentence.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms

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
