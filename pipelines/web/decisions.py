"""Approve or reject from a request's page: promotions and backfills answer a decision alike.

Decisions are plain form posts to the releases services. A refusal (ReleaseError) renders the
request's page again with the message (next to the comment when it is the comment's) and the
service's status: 403 for someone who may not decide, 409 for a decided or stale request, 422
for a missing or overlong comment.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from pipelines.releases import services as releases
from pipelines.releases.forms import DecisionForm

# Renders the request's page again: refused(status, error, the posted form).
Refused = Callable[[int, str, DecisionForm], HttpResponse]


def decision_answer(
    request: HttpRequest,
    action: str,
    decide: Callable[[str], object],
    *,
    done: str,
    then: str,
    refused: Refused,
) -> HttpResponse:
    """Call `decide(comment)` with the posted comment; on success say `done` and go to `then`,
    on a refusal answer `refused(status, error, form)`; a request that does not exist is a 404.

    `action` names the form ("approve", "reject", "withdraw"): its field ids and the page's
    slot for it.
    """
    form = DecisionForm(request.POST, auto_id=f"{action}_%s")
    status, error = 422, ""
    if form.is_valid():
        try:
            decide(form.cleaned_data["comment"])
        except releases.ReleaseError as exc:
            if exc.status == 404:
                raise Http404(exc.message) from None
            status = exc.status
            if exc.field == "comment":
                form.add_error("comment", exc.message)
            else:
                error = exc.message
        else:
            messages.success(request, done)
            return redirect(then)
    return refused(status, error, form)
