"""The caller's API tokens: create (the secret is answered once), list, revoke.

The same TokenForm as the tokens page checks the payload, so both give the same sentences. A
list never holds a secret; another user's token is 404, as one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema, Status

from pipelines.api.releases import DetailOut
from pipelines.api.v1 import ErrorsOut, InputSchema, form_errors
from pipelines.core import tokens
from pipelines.core.forms import TokenForm
from pipelines.core.models import ApiToken

router = Router(tags=["tokens"])


class TokenIn(InputSchema):
    name: str = Field(description="What or who uses the token, e.g. ci-deploys.")
    expires_in_days: int = Field(
        default_factory=lambda: settings.API_TOKEN_DEFAULT_DAYS,
        description="Days until it stops working: 1 to API_TOKEN_MAX_DAYS (365 unless set); "
        "API_TOKEN_DEFAULT_DAYS (90) when left out.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["read"],
        description="Any of read (GET), write (any change), approve (approve or reject "
        "promotions, backfills and run requests; with write). Read only when left out.",
    )


class TokenOut(Schema):
    id: str = Field(description="The token's public id (tok_…): not part of the secret.")
    name: str
    owner: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = Field(description="Written at most once a minute.")
    revoked_at: datetime | None
    state: str = Field(description="active, expired or revoked.")


class TokenCreatedOut(Schema):
    id: str
    name: str
    token: str = Field(description="The secret: shown this once, never again.")
    expires_at: datetime
    scopes: list[str]


def token_out(token: ApiToken) -> dict[str, Any]:
    return {
        **tokens.token_describe(token),
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
        "state": token.state_at(timezone.now()),
    }


@router.post("/tokens", response={201: TokenCreatedOut, 422: ErrorsOut})
def token_create(request: HttpRequest, payload: TokenIn) -> Any:
    form = TokenForm(payload.dict())
    if not form.is_valid():
        return Status(422, {"errors": form_errors(form)})
    try:
        issued = tokens.token_issue(user=request.user, **form.cleaned_data)
    except tokens.TokenError as exc:
        return Status(422, {"errors": {exc.field: [exc.message]}})
    token = issued.token
    return Status(
        201,
        {
            "id": token.public_id,
            "name": token.name,
            "token": issued.key,
            "expires_at": token.expires_at,
            "scopes": token.scopes,
        },
    )


@router.get("/tokens", response=list[TokenOut])
def token_list(request: HttpRequest) -> Any:
    """The caller's own tokens, newest first (revoked and expired ones too); no secrets."""
    return [token_out(t) for t in tokens.token_list(viewer=request.user).filter(user=request.user)]


@router.delete("/tokens/{token_id}", response={204: None, 404: DetailOut, 409: DetailOut})
def token_revoke(request: HttpRequest, token_id: str) -> Any:
    """Revoke one of your tokens: from now on it answers 401."""
    try:
        tokens.token_revoke(public_id=token_id, by=request.user)
    except tokens.TokenError as exc:
        return Status(exc.status, {"detail": exc.message})
    return Status(204, None)
