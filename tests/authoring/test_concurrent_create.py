"""Two identical creates at once (PostgreSQL, real transactions): one is created, the other
gets the form's field error, never a 500."""

from __future__ import annotations

import json
import threading

import pytest
from django.test import Client
from django.urls import reverse

from pipelines.authoring.forms import PipelineForm
from pipelines.core.tokens import token_create
from pipelines.deployments import services as deploy
from pipelines.models import Deployment, Pipeline, PipelineVersion
from tests.conftest import form_data, pipeline_payload
from tests.threads import at_once


def both_validate_first(monkeypatch) -> None:
    """Hold each request after its form passed (the name was free) until the other's passed
    too: then both insert, the race the form's check alone cannot stop."""
    barrier = threading.Barrier(2, timeout=10)
    real = PipelineForm.clean

    def clean(self):
        data = real(self)
        barrier.wait()
        return data

    monkeypatch.setattr(PipelineForm, "clean", clean)


@pytest.mark.django_db(transaction=True)
def test_two_identical_api_creates_make_one_pipeline_and_one_422(
    alice, orders, environments, monkeypatch, tasks_unsent
):
    both_validate_first(monkeypatch)
    key = token_create(user=alice)

    def send():
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        body = json.dumps(pipeline_payload())
        return client.post("/api/v1/pipelines", body, content_type="application/json")

    answers, errors = at_once(send, send)
    assert errors == []
    assert sorted(a.status_code for a in answers) == [201, 422]
    refused = next(a for a in answers if a.status_code == 422)
    assert refused.json() == {
        "errors": {"name": ["A pipeline named “orders-daily” already exists."]}
    }
    assert Pipeline.objects.count() == 1
    assert PipelineVersion.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_identical_page_creates_make_one_pipeline_and_one_field_error(
    alice, orders, environments, monkeypatch, tasks_unsent
):
    both_validate_first(monkeypatch)

    def send():
        client = Client()
        client.force_login(alice)
        return client.post(reverse("pipelines:create"), form_data())

    answers, errors = at_once(send, send)
    assert errors == []
    assert sorted(a.status_code for a in answers) == [200, 302]
    shown = next(a for a in answers if a.status_code == 200)
    assert shown.context["form"].errors == {
        "name": ["A pipeline named “orders-daily” already exists."]
    }
    assert Pipeline.objects.count() == 1
    assert Deployment.objects.count() == 1  # the winner's dev deployment, nothing of the loser's


@pytest.mark.django_db(transaction=True)
def test_two_deploy_requests_at_once_make_one_deployment(
    alice, orders, environments, monkeypatch, tasks_unsent
):
    form = PipelineForm(form_data(), user=alice)
    assert form.is_valid()
    from pipelines.authoring import services

    version = services.pipeline_create(spec=form.spec, by=alice).versions.get()
    barrier = threading.Barrier(2, timeout=10)
    real = deploy.template_problem

    def held(v):  # both past the checks before either looks for the row
        barrier.wait()
        return real(v)

    monkeypatch.setattr(deploy, "template_problem", held)

    def ask():
        return deploy.deployment_request(version=version, environment=environments["dev"], by=alice)

    answers, errors = at_once(ask, ask)
    assert errors == []
    assert len(answers) == 2
    assert answers[0].id == answers[1].id
    assert Deployment.objects.count() == 1
