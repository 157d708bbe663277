"""The API tokens page: create one (its secret is shown once), list, revoke.

Everyone sees their own tokens; a platform admin sees every user's and may revoke any. The page
and POST /api/v1/tokens share TokenForm and core.tokens, so both say the same.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from pipelines.core import access, tokens
from pipelines.core.forms import TokenForm


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    rows = [(t, t.state_at(now)) for t in tokens.token_list(viewer=request.user)]
    return {
        "rows": rows,
        "form": TokenForm(),
        "show_owner": access.is_platform_admin(request.user),
    } | extra


def _answer(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    template = "pipelines/_tokens.html" if request.htmx else "pipelines/tokens.html"
    return render(request, template, context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def token_page(request: HttpRequest) -> HttpResponse:
    return _answer(request, _context(request))


@require_POST
@login_required
def token_create(request: HttpRequest) -> HttpResponse:
    """Create a token; the answer shows its secret this once (never a redirect: the secret
    would be lost)."""
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            issued = tokens.token_issue(user=request.user, **form.cleaned_data)
        except tokens.TokenError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            return _answer(request, _context(request, issued=issued))
    return _answer(request, _context(request, form=form))


@require_POST
@login_required
def token_revoke(request: HttpRequest, public_id: str) -> HttpResponse:
    try:
        token = tokens.token_revoke(public_id=public_id, by=request.user)
    except tokens.TokenError as exc:
        if exc.status == 404:
            raise Http404(exc.message) from None
        return _answer(request, _context(request, error=exc.message))
    if not request.htmx:
        return redirect("pipelines:tokens")
    return _answer(request, _context(request, revoked=token))
